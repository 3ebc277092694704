//! VRFs: `GET /vrfs`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrfInfo {
    pub vrf: u32,
    pub vifs: u32,
    pub routes: u32,
    pub bridge_entries: u32,
}
