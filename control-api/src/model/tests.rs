use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::api::{
    MplsTarget, Policy, PolicyAction, PolicyRule, PortRange, Proto, TunnelEncap, VhostUserMode,
    VifRequest, VifType,
};
use crate::dataplane::VifKind;

fn mac(last: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, last])
}

fn add_af_packet(m: &mut Model, name: &str, vrf: u32, index: u32) {
    let mut req = VifRequest::new(name, VifType::AfPacket, vrf, mac(index as u8 + 1));
    req.iface = Some(format!("veth{index}"));
    let config = m.check_vif_add(&req).unwrap();
    let kind = VifKind::AfPacket {
        iface: req.iface.clone().unwrap(),
    };
    m.commit_vif_add(VifEntry {
        spec: config.spec(index, kind),
        config,
        created_dirs: vec![],
        policy: None,
        pins: Default::default(),
    });
}

fn tunnel(encap: TunnelEncap) -> Nexthop {
    Nexthop::Tunnel {
        encap,
        vif: "fabric".into(),
        sip: "192.0.2.1".parse().unwrap(),
        dip: "192.0.2.2".parse().unwrap(),
        dmac: Some(mac(9)),
        label: None,
    }
}

fn code(e: Error) -> (u16, String) {
    (e.status(), e.code().to_string())
}

#[test]
fn a_device_backs_one_vif_whatever_its_arguments() {
    assert_eq!(device_name("net_null7,size=64"), "net_null7");
    assert_eq!(device_name("0000:00:08.0"), "0000:00:08.0");
    let mut m = Model::new();
    let physical = |name: &str, device: &str| {
        let mut req = VifRequest::new(name, VifType::Physical, 0, mac(1));
        req.device = Some(device.into());
        req
    };
    let req = physical("fab0", "net_af_packet0,iface=veth0");
    let config = m.check_vif_add(&req).unwrap();
    let kind = VifKind::Physical {
        device: req.device.clone().unwrap(),
    };
    m.commit_vif_add(VifEntry {
        spec: config.spec(0, kind),
        config,
        created_dirs: vec![],
        policy: None,
        pins: Default::default(),
    });
    for other in [
        "net_af_packet0,iface=veth0",
        "net_af_packet0,iface=veth1",
        "net_af_packet0",
    ] {
        let e = m.check_vif_add(&physical("fab1", other)).unwrap_err();
        assert_eq!(code(e), (409, "already-exists".into()), "{other}");
    }
    m.check_vif_add(&physical("fab1", "net_af_packet1,iface=veth0"))
        .expect("another device");
}

/// Adds physical vif `name` on `device` in VRF 0 with `mtu`.
fn add_physical(m: &mut Model, name: &str, device: &str, mtu: u32, index: u32) {
    let mut req = VifRequest::new(name, VifType::Physical, 0, mac(0xf0));
    req.device = Some(device.into());
    req.mtu = Some(mtu);
    let config = m.check_vif_add(&req).unwrap();
    let kind = VifKind::Physical {
        device: device.into(),
    };
    m.commit_vif_add(VifEntry {
        spec: config.spec(index, kind),
        config,
        created_dirs: vec![],
        policy: None,
        pins: Default::default(),
    });
}

#[test]
fn a_kernel_fabric_names_a_valid_interface_no_other_vif_has() {
    let mut m = Model::new();
    m.commit_vrf_add(1);
    let physical = |device: &str| {
        let mut req = VifRequest::new("fab", VifType::Physical, 0, mac(1));
        req.device = Some(device.into());
        req
    };
    for bad in [
        "kernel:",
        "kernel:a/b",
        "kernel:a:b",
        "kernel:..",
        "kernel:sixteen_bytes_xx",
    ] {
        let e = m.check_vif_add(&physical(bad)).unwrap_err();
        assert!(
            e.to_string().contains("`device`") && e.to_string().contains("interface name"),
            "{bad}: {e}"
        );
    }
    add_af_packet(&mut m, "pod", 1, 0);
    // veth0 backs the pod's vif: not also the fabric, nor the other way round.
    let e = m.check_vif_add(&physical("kernel:veth0")).unwrap_err();
    assert_eq!(code(e), (409, "already-exists".into()));
    add_physical(&mut m, "fab", "kernel:eth1", 9050, 1);
    let mut req = VifRequest::new("pod2", VifType::AfPacket, 1, mac(3));
    req.iface = Some("eth1".into());
    let e = m.check_vif_add(&req).unwrap_err();
    assert!(e.to_string().contains("vif fab"), "{e}");
    assert_eq!(code(e), (409, "already-exists".into()));
}

#[test]
fn an_overlay_vif_mtu_must_fit_the_fabric_with_tunnel_headroom() {
    assert_eq!(
        tunnel_headroom(),
        50,
        "VXLAN: outer IPv4, UDP, VXLAN, inner Ethernet"
    );
    let mut m = Model::new();
    m.commit_vrf_add(1);
    let pod = |mtu: Option<u32>, vrf: u32| {
        let mut req = VifRequest::new("pod", VifType::VhostUser, vrf, mac(2));
        req.vhostsocket_dir = Some("/var/run/vrouter/p".into());
        req.vhostsocket_filename = Some("s".into());
        req.vhostuser_mode = Some(VhostUserMode::Server);
        req.mtu = mtu;
        req
    };
    // No fabric yet: nothing but the API's range limits it.
    m.check_vif_add(&pod(Some(9216), 1)).expect("no fabric");
    add_physical(&mut m, "fabric0", "kernel:fab0", 1500, 0);
    let e = m.check_vif_add(&pod(None, 1)).unwrap_err();
    let text = e.to_string();
    assert_eq!(code(e), (409, "conflict".into()));
    assert!(
        text.contains("field `mtu`: 1500 (the default)")
            && text.contains("fabric0")
            && text.contains("at most MTU 1450"),
        "{text}"
    );
    m.check_vif_add(&pod(Some(1450), 1)).expect("fits");
    // The fabric's own VRF is not tunnelled: a host-side vif there is not limited by it.
    m.check_vif_add(&pod(Some(9000), 0)).expect("VRF 0");
    // Of two fabrics, the larger one carries it.
    add_physical(&mut m, "fabric1", "net_null0", 9050, 1);
    m.check_vif_add(&pod(Some(9000), 1)).expect("fits fabric1");
    let e = m.check_vif_add(&pod(Some(9001), 1)).unwrap_err();
    assert!(e.to_string().contains("at most MTU 9000"), "{e}");
}

#[test]
fn vif_fields_are_checked_per_type() {
    let m = Model::new();
    let mut req = VifRequest::new("pod1", VifType::VhostUser, 0, mac(1));
    let e = m.check_vif_add(&req).unwrap_err();
    assert!(e.to_string().contains("vhostsocket-dir"), "{e}");
    req.vhostsocket_dir = Some("/var/run/vrouter/p".into());
    req.vhostsocket_filename = Some("s".into());
    req.vhostuser_mode = Some(VhostUserMode::Server);
    let ok = m.check_vif_add(&req).unwrap();
    let accepted = ok.to_request();
    assert_eq!((accepted.mtu, accepted.queues), (Some(1500), Some(1)));
    assert!(matches!(
        ok.port,
        VifPort::VhostUser(VhostUserPort { queues: 1, .. })
    ));
    req.device = Some("0000:00:01.0".into());
    assert!(m
        .check_vif_add(&req)
        .unwrap_err()
        .to_string()
        .contains("`device`"));
    req.device = None;
    req.vrf = 7;
    assert_eq!(
        code(m.check_vif_add(&req).unwrap_err()),
        (409, "unknown-reference".into())
    );
    req.vrf = 5000;
    assert!(m
        .check_vif_add(&req)
        .unwrap_err()
        .to_string()
        .contains("0..=4095"));
    req.vrf = 0;
    req.mtu = Some(9217);
    assert!(m.check_vif_add(&req).is_err());
    req.mtu = Some(1000);
    req.ip6 = Some("2001:db8::1".parse().unwrap());
    assert!(m
        .check_vif_add(&req)
        .unwrap_err()
        .to_string()
        .contains("1280"));
    req.ip6 = None;
    req.mtu = None;
    req.mac = MacAddr([0xff; 6]);
    assert!(m
        .check_vif_add(&req)
        .unwrap_err()
        .to_string()
        .contains("unicast"));
    req.mac = mac(1);
    req.name = "../evil".into();
    assert!(m.check_vif_add(&req).is_err());
}

#[test]
fn duplicates_conflict() {
    let mut m = Model::new();
    add_af_packet(&mut m, "a", 0, 0);
    let mut req = VifRequest::new("a", VifType::AfPacket, 0, mac(5));
    req.iface = Some("vethX".into());
    assert_eq!(
        code(m.check_vif_add(&req).unwrap_err()),
        (409, "already-exists".into())
    );
    req.name = "b".into();
    req.iface = Some("veth0".into());
    let e = m.check_vif_add(&req).unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("vif a"), "{e}");
}

#[test]
fn nexthops_need_their_vifs_and_members() {
    let mut m = Model::new();
    let encap = Nexthop::Encap {
        vif: "a".into(),
        dmac: mac(1),
    };
    assert_eq!(
        code(m.check_nexthop_set(1, &encap).unwrap_err()),
        (409, "unknown-reference".into())
    );
    add_af_packet(&mut m, "a", 0, 0);
    assert!(m.check_nexthop_set(1, &encap).unwrap());
    m.commit_nexthop_set(1, encap.clone());
    assert!(
        !m.check_nexthop_set(1, &encap).unwrap(),
        "a replace is not new"
    );
    assert!(m.check_nexthop_set(0, &encap).is_err());
    let ecmp = |members: Vec<u32>| Nexthop::Ecmp { members };
    assert!(m.check_nexthop_set(2, &ecmp(vec![1, 3])).is_err());
    assert!(m.check_nexthop_set(2, &ecmp(vec![1, 1])).is_err());
    assert_eq!(
        code(m.check_nexthop_set(2, &ecmp(vec![2])).unwrap_err()),
        (409, "conflict".into())
    );
    assert!(m.check_nexthop_set(2, &ecmp(vec![])).is_err());
    m.commit_nexthop_set(2, ecmp(vec![1]));
    assert!(m
        .check_nexthop_set(3, &ecmp(vec![2]))
        .unwrap_err()
        .to_string()
        .contains("nest"));
    m.commit_nexthop_set(4, Nexthop::Discard);
    assert_eq!(
        code(m.check_nexthop_set(1, &ecmp(vec![4])).unwrap_err()).0,
        409
    );
    // In use: deleting names the user; so does deleting the vif.
    let e = m.check_nexthop_del(1).unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("ecmp nexthop 2"), "{e}");
    let e = m.check_vif_del("a").unwrap_err();
    assert!(e.to_string().contains("nexthop 1"), "{e}");
    assert!(m.check_nexthop_del(2).is_ok());
}

#[test]
fn labels_follow_the_tunnel_encapsulation() {
    let mut m = Model::new();
    add_af_packet(&mut m, "fabric", 0, 0);
    m.commit_vrf_add(1);
    m.commit_nexthop_set(1, tunnel(TunnelEncap::Vxlan));
    m.commit_nexthop_set(2, tunnel(TunnelEncap::Mplsoudp));
    m.commit_nexthop_set(3, Nexthop::Discard);
    let route = |nexthop, label| Route {
        prefix: "198.18.2.0/24".parse().unwrap(),
        nexthop,
        label,
    };
    assert!(m.check_route_set(1, &route(1, Some(VNI_MAX))).unwrap());
    // Beyond any label is wrong by itself; a label that does not fit the nexthop as
    // configured, or one missing toward a tunnel, is at odds with the configuration.
    assert_eq!(
        code(
            m.check_route_set(1, &route(1, Some(VNI_MAX + 1)))
                .unwrap_err()
        ),
        (400, "invalid-field".into())
    );
    assert_eq!(
        code(m.check_route_set(1, &route(1, None)).unwrap_err()),
        (409, "conflict".into())
    );
    assert_eq!(
        code(m.check_route_set(1, &route(2, Some(15))).unwrap_err()),
        (409, "conflict".into())
    );
    assert!(
        m.check_route_set(1, &route(2, Some(15))).is_err(),
        "reserved label"
    );
    assert!(m
        .check_route_set(1, &route(2, Some(MPLS_LABEL_MAX + 1)))
        .is_err());
    assert_eq!(
        code(m.check_route_set(1, &route(3, Some(100))).unwrap_err()),
        (409, "conflict".into())
    );
    assert!(m.check_route_set(1, &route(2, Some(100))).is_ok());
    assert!(
        m.check_route_set(1, &route(3, Some(100))).is_err(),
        "no label toward discard"
    );
    assert_eq!(
        code(m.check_route_set(1, &route(9, None)).unwrap_err()).1,
        "unknown-reference"
    );
    assert_eq!(
        code(m.check_route_set(2, &route(3, None)).unwrap_err()),
        (404, "not-found".into())
    );
    // A replacement that would invalidate a route's label is refused.
    m.commit_route_set(1, route(1, Some(5_000_000)));
    let e = m
        .check_nexthop_set(1, &tunnel(TunnelEncap::Mplsogre))
        .unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("198.18.2.0/24"), "{e}");
    assert!(m.check_nexthop_set(1, &tunnel(TunnelEncap::Vxlan)).is_ok());
    // The VRF now has a route: it cannot go.
    assert_eq!(m.check_vrf_del(1).unwrap_err().status(), 409);
    assert_eq!(m.check_vrf_del(0).unwrap_err().status(), 409);
}

fn labelled(encap: TunnelEncap, label: u32) -> Nexthop {
    let mut nh = tunnel(encap);
    if let Nexthop::Tunnel { label: l, .. } = &mut nh {
        *l = Some(label);
    }
    nh
}

#[test]
fn a_tunnel_s_own_label_fits_its_encapsulation_and_stands_in_for_the_route_s() {
    let mut m = Model::new();
    add_af_packet(&mut m, "fabric", 0, 0);
    m.commit_vrf_add(1);
    // In range for its encapsulation, else a bad field (400).
    for (encap, bad) in [
        (TunnelEncap::Mplsoudp, 15),
        (TunnelEncap::Mplsogre, MPLS_LABEL_MAX + 1),
        (TunnelEncap::Vxlan, VNI_MAX + 1),
    ] {
        assert_eq!(
            code(m.check_nexthop_set(1, &labelled(encap, bad)).unwrap_err()),
            (400, "invalid-field".into()),
            "{encap} {bad}"
        );
    }
    assert!(m
        .check_nexthop_set(1, &labelled(TunnelEncap::Vxlan, 0))
        .is_ok());
    m.commit_nexthop_set(1, tunnel(TunnelEncap::Mplsoudp));
    m.commit_nexthop_set(2, labelled(TunnelEncap::Mplsogre, 2003));
    m.commit_nexthop_set(
        3,
        Nexthop::Ecmp {
            members: vec![1, 2],
        },
    );
    m.commit_nexthop_set(4, labelled(TunnelEncap::Mplsoudp, 2004));
    m.commit_nexthop_set(
        5,
        Nexthop::Ecmp {
            members: vec![2, 4],
        },
    );
    let route = |nexthop, label| Route {
        prefix: "198.18.2.0/24".parse().unwrap(),
        nexthop,
        label,
    };
    // A member without its own label still needs the route's.
    assert_eq!(
        code(m.check_route_set(1, &route(3, None)).unwrap_err()),
        (409, "conflict".into())
    );
    assert!(m.check_route_set(1, &route(3, Some(2002))).is_ok());
    // Every tunnel with its own: the route's label may go; one given is not checked against
    // tunnels that do not push it.
    assert!(m.check_route_set(1, &route(5, None)).is_ok());
    assert!(m.check_route_set(1, &route(2, None)).is_ok());
    assert!(m.check_route_set(1, &route(5, Some(5))).is_ok());
    // A member losing its own label would leave a route without one: refused.
    m.commit_route_set(1, route(5, None));
    let e = m
        .check_nexthop_set(4, &tunnel(TunnelEncap::Mplsoudp))
        .unwrap_err();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("198.18.2.0/24"), "{e}");
    assert!(m
        .check_nexthop_set(4, &labelled(TunnelEncap::Mplsoudp, 3000))
        .is_ok());
}

#[test]
fn tunnels_leave_through_the_fabric_vrf() {
    let mut m = Model::new();
    m.commit_vrf_add(1);
    add_af_packet(&mut m, "fabric", 0, 0);
    add_af_packet(&mut m, "pod", 1, 1);
    assert!(m.check_nexthop_set(1, &tunnel(TunnelEncap::Vxlan)).is_ok());
    let mut nh = tunnel(TunnelEncap::Vxlan);
    if let Nexthop::Tunnel { vif, .. } = &mut nh {
        *vif = "pod".into();
    }
    let e = m.check_nexthop_set(1, &nh).unwrap_err();
    assert!(e.to_string().contains("vrf 0"), "{e}");
}

#[test]
fn the_user_index_follows_replacements_and_deletes() {
    let mut m = Model::new();
    add_af_packet(&mut m, "fabric", 0, 0);
    m.commit_vrf_add(1);
    for id in [1, 2, 3] {
        m.commit_nexthop_set(id, Nexthop::Discard);
    }
    let prefix: IpPrefix = "198.18.0.0/15".parse().unwrap();
    m.commit_route_set(
        1,
        Route {
            prefix,
            nexthop: 1,
            label: None,
        },
    );
    m.commit_route_set(
        1,
        Route {
            prefix,
            nexthop: 2,
            label: None,
        },
    );
    assert!(
        m.check_nexthop_del(1).is_ok(),
        "the replaced route released nexthop 1"
    );
    assert_eq!(m.nexthop_users(2), vec!["route 198.18.0.0/15 in vrf 1"]);
    m.commit_nexthop_set(
        4,
        Nexthop::Ecmp {
            members: vec![1, 3],
        },
    );
    m.commit_nexthop_set(4, Nexthop::Ecmp { members: vec![3] });
    assert!(
        m.check_nexthop_del(1).is_ok(),
        "the replaced group released member 1"
    );
    assert_eq!(m.nexthop_users(3), vec!["ecmp nexthop 4"]);
    m.commit_mpls_set(100, MplsTarget::Nexthop(3));
    m.commit_mpls_set(100, MplsTarget::Nexthop(1));
    assert_eq!(m.nexthop_users(3), vec!["ecmp nexthop 4"]);
    m.commit_nexthop_del(4);
    assert!(m.nexthop_users(3).is_empty());
    m.commit_route_del(1, &prefix);
    m.commit_mpls_del(100);
    assert!(m.users.is_empty(), "{:?}", m.users);
    // A route through an ECMP group is rechecked when a member changes.
    m.commit_nexthop_set(5, tunnel(TunnelEncap::Vxlan));
    m.commit_nexthop_set(6, Nexthop::Ecmp { members: vec![5] });
    m.commit_route_set(
        1,
        Route {
            prefix,
            nexthop: 6,
            label: Some(5_000_000),
        },
    );
    let e = m
        .check_nexthop_set(5, &tunnel(TunnelEncap::Mplsogre))
        .unwrap_err();
    assert!(
        e.to_string().contains("route 198.18.0.0/15 in vrf 1"),
        "{e}"
    );
}

#[test]
fn many_users_are_summarised() {
    let mut m = Model::new();
    m.commit_nexthop_set(1, Nexthop::Discard);
    for i in 0..25u32 {
        let prefix = IpPrefix::new(
            IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + (i << 8))),
            24,
        )
        .unwrap();
        m.commit_route_set(
            0,
            Route {
                prefix,
                nexthop: 1,
                label: None,
            },
        );
    }
    let users = m.nexthop_users(1);
    assert_eq!(users.len(), USERS_NAMED_MAX + 1);
    assert_eq!(users.last().unwrap(), "and 15 more");
    assert_eq!(m.nexthop_use_count(1), 25);
    assert!(m
        .check_nexthop_del(1)
        .unwrap_err()
        .to_string()
        .contains("and 15 more"));
}

#[test]
fn policy_rules_are_checked() {
    let mut m = Model::new();
    add_af_packet(&mut m, "a", 0, 0);
    let rule = |proto, ports| PolicyRule {
        action: PolicyAction::Allow,
        proto,
        cidr: None,
        ports,
    };
    let mut p = Policy {
        default: PolicyAction::Deny,
        ingress: vec![rule(
            Proto::TCP,
            Some(PortRange {
                first: 80,
                last: 80,
            }),
        )],
        egress: vec![],
    };
    assert_eq!(m.check_policy_set("a", &p).unwrap(), 0);
    p.egress
        .push(rule(Proto::ICMP, Some(PortRange { first: 1, last: 2 })));
    let e = m.check_policy_set("a", &p).unwrap_err();
    assert!(e.to_string().contains("egress[0].ports"), "{e}");
    assert_eq!(m.check_policy_set("zz", &p).unwrap_err().status(), 404);
}

#[test]
fn created_dirs_pass_to_a_vif_still_inside_them() {
    let mut m = Model::new();
    let vhost = |name: &str, idx: u32, sock: &str, created: Vec<PathBuf>| {
        let sock = Path::new(sock);
        let config = VifConfig {
            name: name.into(),
            vrf: 0,
            mac: mac(idx as u8 + 1),
            ip: None,
            ip6: None,
            mtu: 1500,
            dhcp: None,
            port: VifPort::VhostUser(VhostUserPort {
                dir: sock.parent().unwrap().into(),
                filename: sock.file_name().unwrap().to_str().unwrap().into(),
                mode: VhostUserMode::Server,
                group: None,
                queues: 1,
            }),
        };
        let kind = VifKind::VhostUser {
            socket: sock.into(),
            mode: VhostUserMode::Server,
            queues: 1,
            group: None,
        };
        VifEntry {
            spec: config.spec(idx, kind),
            config,
            created_dirs: created,
            policy: None,
            pins: Default::default(),
        }
    };
    m.commit_vif_add(vhost("a", 0, "/b/pod/a.sock", vec!["/b/pod".into()]));
    m.commit_vif_add(vhost("b", 1, "/b/pod/b.sock", vec![]));
    assert_eq!(m.socket_user(Path::new("/b/pod/b.sock")), Some("b"));
    assert_eq!(m.free_vif_index(), 2);
    let (_, removable) = m.commit_vif_del("a").unwrap();
    assert!(removable.is_empty());
    assert_eq!(m.free_vif_index(), 0);
    let (_, removable) = m.commit_vif_del("b").unwrap();
    assert_eq!(removable, vec![PathBuf::from("/b/pod")]);
}

#[test]
fn dhcp_settings_are_checked_field_by_field_and_round_trip() {
    use crate::api::StaticRoute;
    let mut m = Model::new();
    m.commit_vrf_add(1);
    let base = || {
        let mut req = VifRequest::new("pod", VifType::AfPacket, 1, mac(1));
        req.iface = Some("veth1".into());
        req
    };
    // Without prefix-len no DHCP, and no DHCP field alone.
    let c = m.check_vif_add(&base()).unwrap();
    assert_eq!(c.dhcp, None);
    let mut req = base();
    req.lease_time = Some(600);
    let e = m.check_vif_add(&req).unwrap_err();
    assert!(
        e.to_string().contains("lease-time") && e.to_string().contains("prefix-len"),
        "{e}"
    );
    let mut req = base();
    req.prefix_len = Some(24);
    let e = m.check_vif_add(&req).unwrap_err();
    assert_eq!(code(e), (400, "missing-field".into()));

    let mut req = base();
    req.ip = Some("198.18.1.2".parse().unwrap());
    req.prefix_len = Some(24);
    req.dns_servers = vec!["192.0.2.53".parse().unwrap()];
    req.static_routes = vec![StaticRoute {
        prefix: "203.0.113.0/24".parse().unwrap(),
        via: "198.18.1.1".parse().unwrap(),
    }];
    let c = m.check_vif_add(&req).unwrap();
    let d = c.dhcp.clone().unwrap();
    assert_eq!(
        d.gateway,
        "198.18.1.1".parse::<std::net::Ipv4Addr>().unwrap(),
        "default: first address"
    );
    assert_eq!(d.lease_time, 86_400);
    // What is saved reads back to the same settings.
    let again = m.check_vif_add(&c.to_request()).unwrap();
    assert_eq!(again, c);

    let bad = |f: &dyn Fn(&mut VifRequest), field: &str| {
        let mut r = req.clone();
        f(&mut r);
        let e = m.check_vif_add(&r).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    };
    bad(&|r| r.prefix_len = Some(31), "prefix-len");
    bad(&|r| r.ip = Some("198.18.1.0".parse().unwrap()), "ip");
    bad(&|r| r.ip = Some("198.18.1.1".parse().unwrap()), "gateway");
    bad(
        &|r| r.gateway = Some("198.18.2.1".parse().unwrap()),
        "gateway",
    );
    bad(
        &|r| r.dns_servers = vec!["255.255.255.255".parse().unwrap()],
        "dns-servers",
    );
    bad(
        &|r| r.dns_servers = vec!["192.0.2.1".parse().unwrap(); 5],
        "dns-servers",
    );
    bad(&|r| r.lease_time = Some(59), "lease-time");
    bad(
        &|r| {
            r.static_routes[0].via = "203.0.113.1".parse().unwrap();
        },
        "static-routes",
    );
    bad(
        &|r| r.static_routes[0].prefix = "0.0.0.0/0".parse().unwrap(),
        "static-routes",
    );
    bad(
        &|r| r.static_routes[0].prefix = "2001:db8::/32".parse().unwrap(),
        "static-routes",
    );
    bad(
        &|r| {
            r.vif_type = VifType::Tap;
        },
        "prefix-len",
    );
}

#[test]
fn link_local_services_are_link_local_and_unique() {
    use crate::api::{LinkLocalService, ServiceProto};
    let mut m = Model::new();
    let md = LinkLocalService {
        address: LinkLocalService::METADATA,
        port: 80,
        proto: ServiceProto::Tcp,
        service_address: "198.51.100.80".parse().unwrap(),
        service_port: 8775,
    };
    assert!(m.check_link_local_set("metadata", &md).unwrap());
    m.commit_link_local_set("metadata", md);
    assert!(
        !m.check_link_local_set("metadata", &md).unwrap(),
        "a replacement"
    );
    let e = m.check_link_local_set("other", &md).unwrap_err();
    assert_eq!(code(e), (409, "conflict".into()));
    let udp = LinkLocalService {
        proto: ServiceProto::Udp,
        ..md
    };
    assert!(
        m.check_link_local_set("other", &udp).is_ok(),
        "UDP is another service"
    );
    for (bad, field) in [
        (
            LinkLocalService {
                address: "198.18.1.1".parse().unwrap(),
                ..md
            },
            "address",
        ),
        (
            LinkLocalService {
                address: "169.254.1.7".parse().unwrap(),
                ..md
            },
            "address",
        ),
        (LinkLocalService { port: 0, ..md }, "port"),
        (
            LinkLocalService {
                service_address: "255.255.255.255".parse().unwrap(),
                ..md
            },
            "service-address",
        ),
        (
            LinkLocalService {
                service_port: 0,
                ..md
            },
            "service-port",
        ),
    ] {
        let e = m.check_link_local_set("x", &bad).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    assert_eq!(m.link_local("nope").unwrap_err().status(), 404);
}
