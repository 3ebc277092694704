//! The change stream (`GET /events`): every change the controller accepted, in order, each
//! with a revision, so a control-plane process (a BGP speaker, an agent) follows vifs, routes,
//! VRFs, nexthops, labels, VNIs, policies and NAT without re-reading the whole state.
//!
//! A change is the record the journal keeps for it (the same JSON, `op` first; a vif add
//! without the directories vrouterd created). The last [`RETAINED`] are kept in memory. A
//! reader asks for what came after the revision it has seen, in this process's `epoch`; when
//! that is gone (too old, another epoch: vrouterd restarted) the answer says `reset`, and the
//! reader re-reads the state with the GETs and goes on from the answer's revision (changes
//! after it may repeat what the reads showed; every change is idempotent to apply).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Changes kept for readers that fall behind.
pub const RETAINED: usize = 10_000;
/// Most changes in one answer.
pub const PAGE_MAX: usize = 1_000;

/// One accepted change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    /// The change, as the journal records it: an object whose `op` says what it is.
    pub change: serde_json::Value,
}

/// `GET /events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// Names this run of vrouterd: revisions of another epoch mean nothing here.
    pub epoch: String,
    /// The revision to ask from next: the last change in `events`, or the latest when none.
    pub revision: u64,
    /// The changes asked for are gone (or never were): re-read the state, then go on from
    /// `revision`.
    pub reset: bool,
    pub events: Vec<Event>,
}

struct Log {
    revision: u64,
    retained: VecDeque<Event>,
}

/// The stream's state, fed by the controller under its change lock (so in commit order).
pub struct Events {
    epoch: String,
    log: Mutex<Log>,
    latest: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Events {
        // Unique per run: the process and the time it started.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Events {
            epoch: format!("{:x}-{:x}", std::process::id(), nanos),
            log: Mutex::new(Log {
                revision: 0,
                retained: VecDeque::with_capacity(RETAINED),
            }),
            latest: watch::channel(0).0,
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // Only pushes and pops under it: a panic cannot leave it half-changed.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Appends an accepted change and wakes the readers waiting.
    pub fn publish(&self, change: serde_json::Value) {
        self.publish_all(vec![change]);
    }

    /// Appends accepted changes, each its own revision, and wakes the readers waiting once
    /// (a route batch's thousands: one lock and one wake-up, not one each).
    pub fn publish_all(&self, changes: Vec<serde_json::Value>) {
        let revision = {
            let mut log = self.log();
            for change in changes {
                log.revision += 1;
                let revision = log.revision;
                if log.retained.len() == RETAINED {
                    log.retained.pop_front();
                }
                log.retained.push_back(Event { revision, change });
            }
            log.revision
        };
        self.latest.send_replace(revision);
    }

    /// The changes after `since` (at most `limit`, up to [`PAGE_MAX`]) for a reader of
    /// `epoch` (any epoch when `None`).
    pub fn since(&self, epoch: Option<&str>, since: u64, limit: usize) -> EventPage {
        let log = self.log();
        let oldest = log.revision + 1 - log.retained.len() as u64;
        let gone =
            epoch.is_some_and(|e| e != self.epoch) || since > log.revision || since + 1 < oldest;
        let page = |revision, reset, events| EventPage {
            epoch: self.epoch.clone(),
            revision,
            reset,
            events,
        };
        if gone {
            return page(log.revision, true, Vec::new());
        }
        let skip = (since + 1 - oldest) as usize;
        let events: Vec<Event> = log
            .retained
            .iter()
            .skip(skip)
            .take(limit.clamp(1, PAGE_MAX))
            .cloned()
            .collect();
        let revision = events.last().map_or(log.revision, |e| e.revision);
        page(revision, false, events)
    }

    /// Fires when a change is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readers_get_what_came_after_their_revision_in_order() {
        let ev = Events::new();
        let p = ev.since(None, 0, 100);
        assert_eq!((p.revision, p.reset, p.events.len()), (0, false, 0));
        for i in 0..5 {
            ev.publish(json!({"op": "vrf-add", "vrf": i}));
        }
        let p = ev.since(Some(ev.epoch()), 0, 100);
        assert!(!p.reset);
        assert_eq!(
            p.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(p.events[2].change["vrf"], 2);
        let p = ev.since(None, 3, 1);
        assert_eq!((p.revision, p.events.len()), (4, 1), "a page of one");
        let p = ev.since(None, 5, 100);
        assert_eq!((p.revision, p.reset, p.events.len()), (5, false, 0));
    }

    #[test]
    fn a_reader_too_far_behind_or_of_another_run_is_told_to_reset() {
        let ev = Events::new();
        for i in 0..(RETAINED as u64 + 10) {
            ev.publish(json!({"op": "vrf-add", "vrf": i}));
        }
        let latest = RETAINED as u64 + 10;
        let p = ev.since(None, 5, 100);
        assert!(p.reset && p.events.is_empty());
        assert_eq!(p.revision, latest);
        // The oldest kept is latest - RETAINED + 1: asking from just before it still works.
        let p = ev.since(None, 10, 2);
        assert!(!p.reset);
        assert_eq!(p.events[0].revision, 11);
        assert!(ev.since(None, 9, 2).reset);
        assert!(ev.since(Some("another-run"), latest, 10).reset);
        assert!(ev.since(None, latest + 1, 10).reset, "from the future");
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_change() {
        let ev = std::sync::Arc::new(Events::new());
        let mut rx = ev.subscribe();
        let publisher = std::sync::Arc::clone(&ev);
        std::thread::spawn(move || publisher.publish(json!({"op": "vrf-del", "vrf": 1})));
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .expect("woken")
            .expect("sender alive");
        assert_eq!(*rx.borrow(), 1);
    }
}
