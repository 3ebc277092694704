//! Many routes of one VRF set and removed in one request: `PATCH /vrfs/{vrf}/routes`.

use serde::{Deserialize, Serialize};

use super::{IpPrefix, Route};

/// Most routes to set, and most prefixes to delete, one `PATCH /vrfs/{vrf}/routes` takes.
pub const ROUTE_BATCH_MAX: usize = 4096;

/// `PATCH /vrfs/{vrf}/routes`: routes to set (create or replace) and prefixes to remove, all
/// applied or none. A prefix appears at most once in the whole batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBatch {
    #[serde(default)]
    pub set: Vec<Route>,
    #[serde(default)]
    pub delete: Vec<IpPrefix>,
}

impl RouteBatch {
    pub fn len(&self) -> usize {
        self.set.len() + self.delete.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer to a [`RouteBatch`]: how many routes were created, replaced and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBatchResult {
    pub created: u32,
    pub replaced: u32,
    pub deleted: u32,
}
