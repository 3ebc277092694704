//! Crash-safe storage of the configuration for `vrouterd --state-dir`: every accepted change
//! is appended to a write-ahead journal and fsynced before the API answers; now and then the
//! whole configuration is written as a snapshot and the journal restarted. At start-up the
//! directory is read and verified completely ([`Loaded::open`]) before the controller replays
//! anything, so a damaged file is reported (file and byte offset) and nothing of it applied.
//!
//! Layout and checksums: [`frame`]; what a record holds: [`record`]; the files, their
//! generations and the write order that makes a crash at any point safe: [`store`].

pub mod frame;
pub mod record;
pub mod store;

pub use record::{NatRecord, Record, RoutingRecord, VifRecord};
pub use store::{Journal, Loaded, Located, COMPACT_MIN_RECORDS, JOURNAL, SNAPSHOT};
