//! Random operation sequences against the model: whatever is accepted, the configuration never
//! refers to something that does not exist, and the user index matches a recomputation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proptest::prelude::*;

use super::route::check_label;
use super::*;
use crate::api::{MplsTarget, TunnelEncap, VifRequest, VifType};
use crate::dataplane::VifKind;

#[derive(Debug, Clone)]
enum Op {
    VrfAdd(u32),
    VrfDel(u32),
    VifAdd(u8, u32),
    VifDel(u8),
    NhEncap(u32, u8),
    NhTunnel(u32, u8, u8, bool),
    NhEcmp(u32, Vec<u32>),
    NhDiscard(u32),
    NhDel(u32),
    RouteSet(u32, u8, u32, Option<u32>),
    RouteDel(u32, u8),
    BridgeSet(u32, u8, u32, Option<u32>),
    BridgeDel(u32, u8),
    MplsSet(u32, u32),
    MplsVrfSet(u32, u32),
    MplsDel(u32),
    VxlanSet(u32, u32),
    VxlanDel(u32),
}

fn op() -> impl Strategy<Value = Op> {
    let vrf = 0u32..3;
    let nh = 1u32..6;
    let label = prop_oneof![Just(None), Just(Some(100u32)), Just(Some(5_000_000u32))];
    prop_oneof![
        vrf.clone().prop_map(Op::VrfAdd),
        vrf.clone().prop_map(Op::VrfDel),
        (0u8..4, vrf.clone()).prop_map(|(v, r)| Op::VifAdd(v, r)),
        (0u8..4).prop_map(Op::VifDel),
        (nh.clone(), 0u8..4).prop_map(|(n, v)| Op::NhEncap(n, v)),
        (nh.clone(), 0u8..4, 0u8..3, any::<bool>())
            .prop_map(|(n, v, e, ipv6)| Op::NhTunnel(n, v, e, ipv6)),
        (nh.clone(), proptest::collection::vec(1u32..6, 0..4)).prop_map(|(n, m)| Op::NhEcmp(n, m)),
        nh.clone().prop_map(Op::NhDiscard),
        nh.clone().prop_map(Op::NhDel),
        (vrf.clone(), 0u8..3, nh.clone(), label.clone())
            .prop_map(|(r, p, n, l)| Op::RouteSet(r, p, n, l)),
        (vrf.clone(), 0u8..3).prop_map(|(r, p)| Op::RouteDel(r, p)),
        (vrf.clone(), 0u8..3, nh.clone(), label).prop_map(|(r, m, n, l)| Op::BridgeSet(r, m, n, l)),
        (vrf.clone(), 0u8..3).prop_map(|(r, m)| Op::BridgeDel(r, m)),
        (16u32..19, nh.clone()).prop_map(|(l, n)| Op::MplsSet(l, n)),
        (16u32..19, vrf.clone()).prop_map(|(l, r)| Op::MplsVrfSet(l, r)),
        (16u32..19).prop_map(Op::MplsDel),
        (1u32..3, vrf.clone()).prop_map(|(v, r)| Op::VxlanSet(v, r)),
        (1u32..3).prop_map(Op::VxlanDel),
    ]
}

fn prefix(i: u8) -> IpPrefix {
    ["198.18.0.0/15", "198.18.1.0/24", "2001:db8::/32"][usize::from(i % 3)]
        .parse()
        .unwrap()
}

fn mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, i + 1])
}

/// Apply one op the way the controller does (dataplane always accepting).
fn apply(m: &mut Model, op: Op) {
    match op {
        Op::VrfAdd(v) => {
            if m.check_vrf_add(v).unwrap() {
                m.commit_vrf_add(v)
            }
        }
        Op::VrfDel(v) => {
            if m.check_vrf_del(v).is_ok() {
                m.commit_vrf_del(v)
            }
        }
        Op::VifAdd(i, vrf) => {
            let mut req = VifRequest::new(&format!("v{i}"), VifType::Tap, vrf, mac(i));
            req.iface = Some(format!("tap{i}"));
            if let Ok(config) = m.check_vif_add(&req) {
                let index = m.free_vif_index();
                let kind = VifKind::Tap {
                    iface: format!("tap{i}"),
                };
                m.commit_vif_add(VifEntry {
                    spec: config.spec(index, kind),
                    config,
                    created_dirs: vec![],
                    policy: None,
                    pins: Default::default(),
                });
            }
        }
        Op::VifDel(i) => {
            let name = format!("v{i}");
            if m.check_vif_del(&name).is_ok() {
                m.commit_vif_del(&name);
            }
        }
        Op::NhEncap(id, v) => set_nh(
            m,
            id,
            Nexthop::Encap {
                vif: format!("v{v}"),
                dmac: mac(9),
            },
        ),
        Op::NhTunnel(id, v, e, ipv6) => {
            let encap = [
                TunnelEncap::Vxlan,
                TunnelEncap::Mplsoudp,
                TunnelEncap::Mplsogre,
            ][usize::from(e)];
            let (sip, dip): (IpAddr, IpAddr) = if ipv6 {
                (
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::2".parse().unwrap(),
                )
            } else {
                ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
            };
            set_nh(
                m,
                id,
                Nexthop::Tunnel {
                    encap,
                    vif: format!("v{v}"),
                    sip,
                    dip,
                    dmac: Some(mac(9)),
                    label: None,
                },
            )
        }
        Op::NhEcmp(id, members) => set_nh(m, id, Nexthop::Ecmp { members }),
        Op::NhDiscard(id) => set_nh(m, id, Nexthop::Discard),
        Op::NhDel(id) => {
            if m.check_nexthop_del(id).is_ok() {
                m.commit_nexthop_del(id)
            }
        }
        Op::RouteSet(vrf, p, nexthop, label) => {
            let r = Route {
                prefix: prefix(p),
                nexthop,
                label,
            };
            if m.check_route_set(vrf, &r).is_ok() {
                m.commit_route_set(vrf, r)
            }
        }
        Op::RouteDel(vrf, p) => {
            if m.check_route_del(vrf, &prefix(p)).is_ok() {
                m.commit_route_del(vrf, &prefix(p))
            }
        }
        Op::BridgeSet(vrf, i, nexthop, label) => {
            let e = BridgeEntry {
                mac: mac(i),
                nexthop,
                label,
            };
            if m.check_bridge_set(vrf, &e).is_ok() {
                m.commit_bridge_set(vrf, e)
            }
        }
        Op::BridgeDel(vrf, i) => {
            if m.check_bridge_del(vrf, mac(i)).is_ok() {
                m.commit_bridge_del(vrf, mac(i))
            }
        }
        Op::MplsSet(l, n) => {
            if m.check_mpls_set(l, MplsTarget::Nexthop(n)).is_ok() {
                m.commit_mpls_set(l, MplsTarget::Nexthop(n))
            }
        }
        Op::MplsVrfSet(l, r) => {
            if m.check_mpls_set(l, MplsTarget::Vrf(r)).is_ok() {
                m.commit_mpls_set(l, MplsTarget::Vrf(r))
            }
        }
        Op::MplsDel(l) => {
            if m.check_mpls_del(l).is_ok() {
                m.commit_mpls_del(l)
            }
        }
        Op::VxlanSet(v, r) => {
            if m.check_vxlan_set(v, r).is_ok() {
                m.commit_vxlan_set(v, r)
            }
        }
        Op::VxlanDel(v) => {
            if m.check_vxlan_del(v).is_ok() {
                m.commit_vxlan_del(v)
            }
        }
    }
}

fn set_nh(m: &mut Model, id: u32, nh: Nexthop) {
    if m.check_nexthop_set(id, &nh).is_ok() {
        m.commit_nexthop_set(id, nh)
    }
}

fn check_invariants(m: &Model) -> Result<(), String> {
    let lookup = |id: u32| m.nexthops.get(&id);
    for v in m.vifs.values() {
        if !m.vrfs.contains(&v.spec.vrf) {
            return Err(format!("vif {} in missing vrf {}", v.spec.name, v.spec.vrf));
        }
    }
    let mut expected: BTreeMap<u32, BTreeSet<NhUser>> = BTreeMap::new();
    for (id, nh) in &m.nexthops {
        if let Some(vif) = nh.vif() {
            if !m.vifs.contains_key(vif) {
                return Err(format!("nexthop {id} names missing vif {vif}"));
            }
        }
        if let Nexthop::Ecmp { members } = nh {
            for mem in members {
                match m.nexthops.get(mem) {
                    None => return Err(format!("ecmp {id} member {mem} missing")),
                    Some(Nexthop::Ecmp { .. }) => return Err(format!("ecmp {id} nests {mem}")),
                    Some(_) => {}
                }
                expected.entry(*mem).or_default().insert(NhUser::Ecmp(*id));
            }
        }
    }
    for (vrf, routes) in &m.routes {
        for r in routes.values() {
            if !m.vrfs.contains(vrf) || !m.nexthops.contains_key(&r.nexthop) {
                return Err(format!("route {} in vrf {vrf} dangles", r.prefix));
            }
            check_label(lookup, r.nexthop, r.label)
                .map_err(|e| format!("route {}: {e}", r.prefix))?;
            expected
                .entry(r.nexthop)
                .or_default()
                .insert(NhUser::Route(*vrf, r.prefix));
        }
    }
    for (vrf, entries) in &m.bridge {
        for b in entries.values() {
            if !m.vrfs.contains(vrf) || !m.nexthops.contains_key(&b.nexthop) {
                return Err(format!("bridge {} in vrf {vrf} dangles", b.mac));
            }
            check_label(lookup, b.nexthop, b.label)
                .map_err(|e| format!("bridge {}: {e}", b.mac))?;
            expected
                .entry(b.nexthop)
                .or_default()
                .insert(NhUser::Bridge(*vrf, b.mac));
        }
    }
    for (label, target) in &m.mpls {
        match target {
            MplsTarget::Nexthop(nh) => {
                if !m.nexthops.contains_key(nh) {
                    return Err(format!("mpls {label} dangles"));
                }
                expected
                    .entry(*nh)
                    .or_default()
                    .insert(NhUser::Mpls(*label));
            }
            MplsTarget::Vrf(vrf) => {
                if !m.vrfs.contains(vrf) {
                    return Err(format!("mpls {label} leads to a removed vrf {vrf}"));
                }
            }
        }
    }
    for (vni, vrf) in &m.vxlan {
        if !m.vrfs.contains(vrf) {
            return Err(format!("vni {vni} dangles"));
        }
    }
    if expected != m.users {
        return Err(format!(
            "user index {:?} != recomputed {expected:?}",
            m.users
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn accepted_changes_never_leave_dangling_references(ops in proptest::collection::vec(op(), 1..60)) {
        let mut m = Model::new();
        for op in ops {
            apply(&mut m, op.clone());
            if let Err(e) = check_invariants(&m) {
                prop_assert!(false, "after {op:?}: {e}");
            }
        }
    }
}
