//! Waiting on a condition, never on the clock: a test observes what it waits for (a counter
//! through the control API, a socket on disk, a line a process printed) until it holds, and
//! fails naming what it waited for and what it saw last when it does not hold by a deadline.
//!
//! The deadline only bounds a failing test: a passing one goes on the moment its condition
//! holds. So it can be generous, as it must be on the small, shared machines tests run on.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The deadline for conditions that should hold within moments: long enough for a loaded
/// 2-core machine, short enough that a condition that never holds fails well before nextest
/// gives up on the test.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The longest pause between two observations: quick to see a condition that holds, without
/// spinning on one that takes seconds.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Observes with `observe` until `done` holds for what it saw, and returns that observation;
/// after `deadline`, returns the last observation as the error.
pub fn poll<T>(
    deadline: Duration,
    mut observe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> Result<T, T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(1);
    loop {
        let seen = observe();
        if done(&seen) {
            return Ok(seen);
        }
        if Instant::now() >= end {
            return Err(seen);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// [`poll`], failing the test when `deadline` passes: the message names `what` was awaited and
/// the last observation.
#[track_caller]
pub fn until<T: Debug>(
    what: &str,
    deadline: Duration,
    observe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    match poll(deadline, observe, done) {
        Ok(seen) => seen,
        Err(seen) => panic!("{what}: not within {deadline:?}; last seen: {seen:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_observation_that_holds() {
        let mut n = 0;
        let seen = until(
            "the counter reaches 5",
            DEADLINE,
            || {
                n += 1;
                n
            },
            |&n| n >= 5,
        );
        assert_eq!(seen, 5);
    }

    #[test]
    fn hands_back_the_last_observation_when_the_deadline_passes() {
        let mut n = 0;
        let seen = poll(
            Duration::ZERO,
            || {
                n += 1;
                n
            },
            |_| false,
        );
        assert_eq!(seen, Err(1), "observed once, then out of time");
    }

    #[test]
    #[should_panic(expected = "the flag rises: not within 0ns; last seen: false")]
    fn fails_naming_what_was_awaited_and_what_was_seen() {
        until("the flag rises", Duration::ZERO, || false, |&up| up);
    }
}
