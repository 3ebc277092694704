//! What one burst remembers between its packets, so that the common case (a burst of packets
//! to one place) looks its nexthop up and builds its rewrite once.

use super::encap;
use crate::tables::Nexthop;
use crate::wire::ethernet;

/// What one burst remembers between its packets. Valid for one burst only: the next burst may
/// see a newer version of the tables, so it starts from `BurstMemo::default()`.
#[derive(Default)]
pub(super) struct BurstMemo {
    /// The last nexthop read in this burst: packets of a burst mostly share nexthops, and a
    /// burst may see one consistent version of a nexthop.
    pub(super) nh: Option<(u32, Nexthop)>,
    /// The outer-header template of the last tunnel used in this burst.
    pub(super) tpl: Option<(u16, encap::Outer, encap::Template)>,
    /// The last route target that led straight (not through ECMP) to a local vif, with
    /// everything its rewrite needs: the common case of a burst to one pod costs one compare.
    pub(super) encap: Option<EncapMemo>,
    /// The same for the last route target that led straight to a tunnel.
    pub(super) tunnel: Option<TunnelMemo>,
}

/// See `BurstMemo::encap`.
#[derive(Clone, Copy)]
pub(super) struct EncapMemo {
    pub(super) nexthop: u32,
    pub(super) vif: u16,
    pub(super) mtu: u16,
    /// Destination then source MAC, as they go on the wire.
    pub(super) macs: [u8; ethernet::field::ADDRESSES.end],
}

/// See `BurstMemo::tunnel`.
pub(super) struct TunnelMemo {
    pub(super) nexthop: u32,
    /// The fabric vif and its MTU.
    pub(super) vif: u16,
    pub(super) mtu: u16,
    pub(super) tpl: encap::Template,
}
