//! A deadline for tests that can loop: the test's body runs on a thread of
//! its own, and the test fails when the body has not returned in time,
//! naming what the body said it was waiting for ([`waiting_for`]), instead
//! of hanging (or spinning with a growing stack) until someone kills it.
//!
//! The deadline is a guard against hangs, not a timing: it is generous
//! (see [`DEADLINE`]), and nothing is asserted about how long a step took.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

/// How long a test's body may run, unless `REDERIVE_TEST_DEADLINE` (in
/// seconds) says otherwise: far above what any of these tests takes on a
/// loaded machine, so that only a loop reaches it.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// What each body thread last said it was waiting for.
static WAITING: Mutex<Option<HashMap<ThreadId, String>>> = Mutex::new(None);

/// Records what the calling thread waits for next (an operation and its
/// arguments), for the message of a missed deadline.
pub fn waiting_for(what: impl Into<String>) {
    let id = std::thread::current().id();
    WAITING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(id, what.into());
}

/// Runs `body` on a thread of its own, named after the calling test, and
/// returns what it returns (a panic of the body is the test's panic). When
/// it has not returned within [`DEADLINE`] times `scale`, the test fails
/// with what the body was waiting for; the body's thread is left behind
/// (a thread cannot be stopped), and ends with the test process.
#[track_caller]
pub fn within_deadline<T: Send + 'static>(
    scale: u32,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let deadline = std::env::var("REDERIVE_TEST_DEADLINE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEADLINE, Duration::from_secs)
        * scale;
    let (send, done) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("{test} (body)"))
        .spawn(move || {
            let out = body();
            let _ = send.send(out);
        })
        .expect("spawn the test's body");
    let id = thread.thread().id();
    match done.recv_timeout(deadline) {
        Ok(out) => {
            let _ = thread.join();
            forget(id);
            out
        }
        // The body panicked: its panic is the test's.
        Err(RecvTimeoutError::Disconnected) => {
            forget(id);
            match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the body returned without sending its result"),
            }
        }
        Err(RecvTimeoutError::Timeout) => {
            let what = WAITING
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|w| w.get(&id).cloned())
                .unwrap_or_else(|| "(none named)".to_owned());
            panic!(
                "{test}: not done after {deadline:?}, in its step `{what}` or after it \
                 (a loop? REDERIVE_TEST_DEADLINE=SECONDS gives it longer)"
            )
        }
    }
}

fn forget(id: ThreadId) {
    if let Some(w) = WAITING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        w.remove(&id);
    }
}
