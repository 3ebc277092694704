//! Setup credits: entries a setter-up reserves against the table's capacity ahead of its setups.

use super::FlowTable;
use crate::sync::Ordering;

/// Entries a forwarding core reserves against the table's capacity at a time: one shared
/// counter update per this many setups, not one per setup.
pub(super) const CREDIT_CHUNK: usize = 64;

/// Tables smaller than this are reserved from exactly as needed (a few stranded chunks would
/// be a noticeable share of them).
pub(super) const CHUNKED_FROM: usize = 64 * 1024;

/// Entries reserved against a table's capacity and not used yet, owned by one setter-up (a
/// forwarding core's [`super::FlowStage`]), so that most setups leave the table's shared
/// counter alone. What a credit holds counts as taken until [`FlowTable::release`] gives it
/// back: at most `CREDIT_CHUNK` entries per core.
#[derive(Debug, Default)]
pub struct SetupCredit {
    pub(super) entries: usize,
    chunked: bool,
}

impl SetupCredit {
    /// A credit that reserves `CREDIT_CHUNK` entries at a time (in tables of
    /// `CHUNKED_FROM` entries or more). Give it back with [`FlowTable::release`].
    pub fn chunked() -> SetupCredit {
        SetupCredit {
            entries: 0,
            chunked: true,
        }
    }

    /// Entries it holds.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

impl FlowTable {
    /// Entries in use (a flow and its reverse are two) or held in setup credits: one load,
    /// at most `CREDIT_CHUNK` per core above [`FlowStats::active`] (which reads the whole
    /// table, and can be one off while an entry moves to its other bucket).
    #[inline]
    pub fn reserved_entries(&self) -> usize {
        self.tally.reserved.load(Ordering::Relaxed)
    }

    /// Take `need` entries from `credit`, refilling it from the table's capacity if short.
    /// False if the table cannot spare them.
    pub(super) fn reserve(&self, credit: &mut SetupCredit, need: usize) -> bool {
        if credit.entries < need {
            let short = need - credit.entries;
            // Top up to a whole chunk, so a credit never holds more than `CREDIT_CHUNK`
            // (including what a failed insert hands back).
            let chunk = if credit.chunked && self.capacity >= CHUNKED_FROM {
                (CREDIT_CHUNK - credit.entries.min(CREDIT_CHUNK)).max(short)
            } else {
                short
            };
            let take = |r: usize| {
                if r + chunk <= self.capacity {
                    Some(chunk)
                } else {
                    (r + short <= self.capacity).then_some(short)
                }
            };
            match self
                .tally
                .reserved
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                    take(r).map(|n| r + n)
                }) {
                Ok(before) => credit.entries += take(before).unwrap_or(0),
                Err(_) => return false,
            }
        }
        credit.entries -= need;
        true
    }

    /// Give back what `credit` holds (a setter-up going away).
    pub fn release(&self, credit: &mut SetupCredit) {
        self.tally
            .reserved
            .fetch_sub(credit.entries, Ordering::Relaxed);
        credit.entries = 0;
    }
}
