//! Stop signals shared by the background tasks, and the one loop they run.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves once `rx` holds `true` (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// When a periodic task runs its first round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FirstRound {
    /// At once, when spawned.
    Now,
    /// One period after spawning (the caller did the first round itself, or
    /// a restart loop must not turn into a burst of work).
    AfterOnePeriod,
}

/// Runs `round` every `every` until `stop` turns true. A round that overruns
/// its period delays the next one instead of bunching them up, and a stop
/// during a round waits for the round to finish (rounds are short, and one
/// cut in half could leave half-written state).
pub(crate) fn spawn_periodic<F, Fut>(
    every: Duration,
    first: FirstRound,
    mut stop: watch::Receiver<bool>,
    mut round: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let start = match first {
            FirstRound::Now => tokio::time::Instant::now(),
            FirstRound::AfterOnePeriod => tokio::time::Instant::now() + every,
        };
        let mut tick = tokio::time::interval_at(start, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => round().await,
                _ = stopped(&mut stop) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rounds_run_each_period_and_stop_when_told() {
        let (tx, rx) = watch::channel(false);
        let count = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&count);
        let task = spawn_periodic(
            Duration::from_secs(1),
            FirstRound::AfterOnePeriod,
            rx,
            move || {
                let c = Arc::clone(&c);
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            },
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "no round before one period"
        );
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(count.load(Ordering::SeqCst), 3);
        tx.send_replace(true);
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(count.load(Ordering::SeqCst), 3, "no round after the stop");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_may_run_at_once() {
        let (_tx, rx) = watch::channel(false);
        let count = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&count);
        spawn_periodic(Duration::from_secs(60), FirstRound::Now, rx, move || {
            let c = Arc::clone(&c);
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
