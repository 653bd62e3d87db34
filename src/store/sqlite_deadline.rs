//! A statement deadline for SQLite, which has none of its own: `busy_timeout`
//! bounds how long a statement waits for a lock, not how long it computes.
//! PostgreSQL gets `statement_timeout`; this gives SQLite the same bound, and
//! an interrupted statement fails with `SQLITE_INTERRUPT`, which
//! [`super::classify`] treats like PostgreSQL's 57014 (query canceled).
//!
//! Why an auto-extension: the pool speaks sqlx's Any driver, whose
//! connections do not hand out the SQLite handle, so no hook can be set from
//! `after_connect`, and a timer calling `sqlite3_interrupt` would need the
//! handle too. SQLite itself calls each registered auto-extension with the
//! handle of every connection it opens. The extension gives that connection
//! one small state and three callbacks over it, all run by SQLite on the
//! connection's own thread:
//!
//! - a trace callback notes when each statement starts running (and, at its
//!   end, that it stopped: a trigger's inner statements keep the start of
//!   the statement that fired them);
//! - a progress handler, called every [`PROGRESS_STEPS`] virtual machine
//!   steps, stops the statement once it has run past the deadline;
//! - the SQL function `huntaze_statement_timeout(ms)` sets the deadline
//!   (`after_connect` calls it; 0 turns it off), and without an argument
//!   answers it, or NULL on a connection never configured — `before_acquire`
//!   uses that to discard a connection whose set-up failed.
//!
//! The state is owned by the function's registration: SQLite frees it when
//! the connection closes, after the last callback. A connection that never
//! calls the function (any other SQLite use in the process) has no deadline.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Instant;

use libsqlite3_sys as ffi;

/// The SQL function that sets and reads a connection's deadline.
pub(super) const FUNCTION: &str = "huntaze_statement_timeout";
const FUNCTION_C: &CStr = c"huntaze_statement_timeout";

/// Virtual machine steps between two deadline checks: frequent enough to
/// stop within a millisecond or so, rare enough to cost nothing measurable.
const PROGRESS_STEPS: c_int = 1_000;

/// "Not configured": the function was never called on this connection.
const UNSET: u64 = u64::MAX;

/// Registers the extension for every SQLite connection opened from now on in
/// this process. Idempotent.
pub(super) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: `on_open` has exactly the signature SQLite calls
        // auto-extensions with, and it is a plain function that lives as
        // long as the process.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(on_open)) };
        if rc != ffi::SQLITE_OK {
            tracing::error!(
                code = rc,
                "SQLite statement deadline unavailable: registering the extension failed"
            );
        }
    });
}

/// One connection's deadline and the statement it is timing.
struct Deadline {
    /// Milliseconds; 0 = no deadline; [`UNSET`] = never configured.
    timeout_ms: AtomicU64,
    /// Start of the running statement, in ms since [`epoch`].
    started_ms: AtomicU64,
    /// The running top-level statement (null between statements).
    running: AtomicPtr<c_void>,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

unsafe extern "C" fn on_open(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let state = Box::into_raw(Box::new(Deadline {
        timeout_ms: AtomicU64::new(UNSET),
        started_ms: AtomicU64::new(0),
        running: AtomicPtr::new(std::ptr::null_mut()),
    }))
    .cast::<c_void>();
    // SAFETY: `db` is the connection SQLite is opening. The registration
    // takes ownership of `state`: SQLite calls `drop_state` exactly once,
    // when the connection closes or, on failure, before returning.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            FUNCTION_C.as_ptr(),
            -1,
            ffi::SQLITE_UTF8,
            state,
            Some(timeout_function),
            None,
            None,
            Some(drop_state),
        )
    };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: `state` stays valid until the connection closes (above), and
    // SQLite calls neither callback after that.
    unsafe {
        ffi::sqlite3_progress_handler(db, PROGRESS_STEPS, Some(on_progress), state);
        ffi::sqlite3_trace_v2(
            db,
            (ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_PROFILE) as c_uint,
            Some(on_trace),
            state,
        );
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn drop_state(state: *mut c_void) {
    // SAFETY: `state` came from `Box::into_raw` in `on_open`, and SQLite
    // calls this destructor once.
    drop(unsafe { Box::from_raw(state.cast::<Deadline>()) });
}

/// `huntaze_statement_timeout(ms)` sets the deadline and answers it;
/// `huntaze_statement_timeout()` answers it (NULL when never set).
unsafe extern "C" fn timeout_function(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes the function's context and `argc` valid values;
    // the user data is the connection's `Deadline` (see `on_open`).
    unsafe {
        let state = &*ffi::sqlite3_user_data(ctx).cast::<Deadline>();
        if argc >= 1 {
            let ms = ffi::sqlite3_value_int64(*argv).max(0) as u64;
            state.timeout_ms.store(ms, Ordering::Relaxed);
        }
        match state.timeout_ms.load(Ordering::Relaxed) {
            UNSET => ffi::sqlite3_result_null(ctx),
            ms => ffi::sqlite3_result_int64(ctx, ms as i64),
        }
    }
}

unsafe extern "C" fn on_trace(
    event: c_uint,
    state: *mut c_void,
    stmt: *mut c_void,
    sql: *mut c_void,
) -> c_int {
    // SAFETY: `state` is the connection's `Deadline` (see `on_open`).
    let state = unsafe { &*state.cast::<Deadline>() };
    if event == ffi::SQLITE_TRACE_STMT as c_uint {
        // A trigger's inner statements report the statement that fired
        // them, which is already running, with "-- TRIGGER name" as their
        // text: its start stands. Checking both keeps a missed end of run
        // from carrying an old start into the statement's next run.
        // SAFETY: for this event SQLite passes a NUL-terminated text.
        let trigger = !sql.is_null()
            && unsafe { CStr::from_ptr(sql.cast::<c_char>()) }
                .to_bytes()
                .starts_with(b"--");
        if !(trigger && state.running.load(Ordering::Relaxed) == stmt) {
            state.started_ms.store(now_ms(), Ordering::Relaxed);
            state.running.store(stmt, Ordering::Relaxed);
        }
    } else if event == ffi::SQLITE_TRACE_PROFILE as c_uint {
        // Sent when a run ends (done, error, reset or finalize).
        let _ = state.running.compare_exchange(
            stmt,
            std::ptr::null_mut(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    0
}

/// Non-zero stops the running statement with `SQLITE_INTERRUPT`.
unsafe extern "C" fn on_progress(state: *mut c_void) -> c_int {
    // SAFETY: `state` is the connection's `Deadline` (see `on_open`).
    let state = unsafe { &*state.cast::<Deadline>() };
    let timeout = state.timeout_ms.load(Ordering::Relaxed);
    if timeout == 0 || timeout == UNSET || state.running.load(Ordering::Relaxed).is_null() {
        return 0;
    }
    let started = state.started_ms.load(Ordering::Relaxed);
    c_int::from(now_ms().saturating_sub(started) > timeout)
}
