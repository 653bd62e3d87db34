//! [`CircuitBreaker`] per external dependency.
//!
//! Closed → Open when, over a sliding window of the last `window` calls (and
//! at least `min_calls`), the failure rate or the slow-call rate reaches its
//! threshold. Open → Half-open after `open_for`; half-open lets
//! `half_open_calls` trial calls through: all succeed → Closed, any fails →
//! Open again. State and the count of transitions into each state are
//! readable for health and metrics (each breaker counts its own, so two
//! servers in one process never mix their figures).
//!
//! Small and our own: the crates for this are young or quiet, and we need the
//! state to be observable.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::HalfOpen,
        CircuitState::Open,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    /// Position in [`ALL`](Self::ALL).
    fn index(self) -> usize {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }

    /// 0 closed, 1 half-open, 2 open (the metric's value).
    pub fn as_gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CircuitConfig {
    pub window: usize,
    pub min_calls: usize,
    /// Percent of failed calls in the window that opens the circuit.
    pub failure_rate: u8,
    /// A call slower than this counts as slow.
    pub slow_call: Duration,
    /// Percent of slow calls in the window that opens the circuit.
    pub slow_rate: u8,
    pub open_for: Duration,
    pub half_open_calls: usize,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            window: 20,
            min_calls: 5,
            failure_rate: 50,
            slow_call: Duration::from_secs(3),
            slow_rate: 80,
            open_for: Duration::from_secs(30),
            half_open_calls: 3,
        }
    }
}

/// The call was not made: the circuit is open.
#[derive(Debug, thiserror::Error)]
#[error("circuit {name} is open")]
pub(crate) struct CircuitOpen {
    pub name: &'static str,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: usize, succeeded: usize },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// (failed, slow) of the latest calls, oldest first.
    window: VecDeque<(bool, bool)>,
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    name: &'static str,
    config: CircuitConfig,
    inner: Mutex<Inner>,
    /// Transitions into each state, in [`CircuitState::ALL`] order.
    transitions: [AtomicU64; 3],
}

/// Permission to make one call; report its outcome with
/// [`CircuitBreaker::record`].
#[derive(Debug)]
pub(crate) struct Permit {
    started: Instant,
}

impl CircuitBreaker {
    pub(crate) fn new(name: &'static str, config: CircuitConfig) -> Self {
        Self {
            name,
            config,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                window: VecDeque::with_capacity(config.window),
            }),
            transitions: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the
        // breaker's state is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state(&self) -> CircuitState {
        let mut inner = self.lock();
        self.advance(&mut inner);
        match inner.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    fn advance(&self, inner: &mut Inner) {
        if let Phase::Open { until } = inner.phase
            && Instant::now() >= until
        {
            self.transition(
                inner,
                Phase::HalfOpen {
                    admitted: 0,
                    succeeded: 0,
                },
            );
        }
    }

    fn transition(&self, inner: &mut Inner, to: Phase) {
        let state = match to {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        };
        tracing::warn!(
            circuit = self.name,
            state = state.as_str(),
            "circuit breaker state changed"
        );
        self.transitions[state.index()].fetch_add(1, Ordering::Relaxed);
        if matches!(to, Phase::Closed) {
            inner.window.clear();
        }
        inner.phase = to;
    }

    /// How many times the circuit went into each state since start.
    pub(crate) fn transitions(&self) -> [(CircuitState, u64); 3] {
        // Observing may itself move Open → HalfOpen: count it first.
        self.state();
        CircuitState::ALL.map(|s| (s, self.transitions[s.index()].load(Ordering::Relaxed)))
    }

    /// Asks to make a call.
    pub(crate) fn acquire(&self) -> Result<Permit, CircuitOpen> {
        let mut inner = self.lock();
        self.advance(&mut inner);
        match &mut inner.phase {
            Phase::Closed => Ok(Permit {
                started: Instant::now(),
            }),
            Phase::Open { .. } => Err(CircuitOpen { name: self.name }),
            Phase::HalfOpen { admitted, .. } => {
                if *admitted < self.config.half_open_calls {
                    *admitted += 1;
                    Ok(Permit {
                        started: Instant::now(),
                    })
                } else {
                    Err(CircuitOpen { name: self.name })
                }
            }
        }
    }

    /// Reports the outcome of a call made under `permit`.
    pub(crate) fn record(&self, permit: Permit, failed: bool) {
        let slow = permit.started.elapsed() >= self.config.slow_call;
        let mut inner = self.lock();
        match &mut inner.phase {
            Phase::Closed => {
                if inner.window.len() == self.config.window {
                    inner.window.pop_front();
                }
                inner.window.push_back((failed, slow));
                let n = inner.window.len();
                if n >= self.config.min_calls.max(1) {
                    let failures = inner.window.iter().filter(|(f, _)| *f).count();
                    let slows = inner.window.iter().filter(|(_, s)| *s).count();
                    if failures * 100 >= n * self.config.failure_rate as usize
                        || slows * 100 >= n * self.config.slow_rate as usize
                    {
                        let until = Instant::now() + self.config.open_for;
                        self.transition(&mut inner, Phase::Open { until });
                    }
                }
            }
            Phase::HalfOpen { succeeded, .. } => {
                if failed || slow {
                    let until = Instant::now() + self.config.open_for;
                    self.transition(&mut inner, Phase::Open { until });
                } else {
                    *succeeded += 1;
                    if *succeeded >= self.config.half_open_calls {
                        self.transition(&mut inner, Phase::Closed);
                    }
                }
            }
            // A call admitted before the circuit opened: its outcome no
            // longer matters.
            Phase::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            CircuitConfig {
                window: 10,
                min_calls: 4,
                failure_rate: 50,
                slow_call: Duration::from_secs(60),
                slow_rate: 100,
                open_for: Duration::from_millis(open_for_ms),
                half_open_calls: 2,
            },
        )
    }

    fn call(b: &CircuitBreaker, failed: bool) -> bool {
        match b.acquire() {
            Ok(p) => {
                b.record(p, failed);
                true
            }
            Err(_) => false,
        }
    }

    #[test]
    fn stays_closed_below_the_minimum_number_of_calls() {
        let b = breaker(1000);
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(b.state(), CircuitState::Closed);
        call(&b, true);
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!call(&b, false), "an open circuit refuses calls");
    }

    #[test]
    fn opens_at_the_failure_rate_over_the_window() {
        let b = breaker(1000);
        for f in [false, false, false, true, false, true, false] {
            call(&b, f);
        }
        assert_eq!(b.state(), CircuitState::Closed, "2 of 7 failed");
        call(&b, true);
        call(&b, true);
        assert_eq!(b.state(), CircuitState::Closed, "4 of 9 failed: under 50%");
        call(&b, true);
        assert_eq!(b.state(), CircuitState::Open, "5 of 10 failed");
    }

    #[test]
    fn half_open_closes_after_successful_trials_and_reopens_on_a_failure() {
        let b = breaker(20);
        for _ in 0..4 {
            call(&b, true);
        }
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(call(&b, false));
        assert!(call(&b, false));
        assert_eq!(b.state(), CircuitState::Closed);

        for _ in 0..4 {
            call(&b, true);
        }
        std::thread::sleep(Duration::from_millis(30));
        assert!(call(&b, true));
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn every_transition_is_counted_by_the_state_entered() {
        let b = breaker(20);
        let count =
            |b: &CircuitBreaker, s| b.transitions().iter().find(|(x, _)| *x == s).unwrap().1;
        assert_eq!(count(&b, CircuitState::Open), 0);
        for _ in 0..4 {
            call(&b, true);
        }
        assert_eq!(count(&b, CircuitState::Open), 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(count(&b, CircuitState::HalfOpen), 1);
        call(&b, false);
        call(&b, false);
        assert_eq!(count(&b, CircuitState::Closed), 1);
        assert_eq!(count(&b, CircuitState::Open), 1);
    }

    #[test]
    fn half_open_admits_only_the_trial_calls() {
        let b = breaker(10);
        for _ in 0..4 {
            call(&b, true);
        }
        std::thread::sleep(Duration::from_millis(20));
        let p1 = b.acquire().unwrap();
        let _p2 = b.acquire().unwrap();
        assert!(b.acquire().is_err());
        b.record(p1, false);
    }

    #[test]
    fn slow_calls_open_the_circuit_too() {
        let b = CircuitBreaker::new(
            "slow",
            CircuitConfig {
                window: 4,
                min_calls: 2,
                failure_rate: 100,
                slow_call: Duration::ZERO,
                slow_rate: 50,
                open_for: Duration::from_secs(1),
                half_open_calls: 1,
            },
        );
        call(&b, false);
        call(&b, false);
        assert_eq!(b.state(), CircuitState::Open);
    }
}
