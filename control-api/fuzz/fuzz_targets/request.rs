//! Arbitrary request bodies through the body parser and the model's validation: any input must
//! be answered (accepted or refused with a 4xx), never panic. The first byte picks the endpoint.
#![no_main]

use control_api::api::{
    BridgeEntry, FloatingIp, IpPrefix, MacAddr, NatPool, Nexthop, Policy, PortRange, Proto, Route,
    SnatAttachment, VifRequest, VifType,
};
use control_api::dataplane::VifKind;
use control_api::model::{Model, VifEntry};
use control_api::server::parse_json;
use libfuzzer_sys::fuzz_target;

/// VRF 1, a pod vif, a fabric vif and one nexthop of each kind, so references can resolve.
fn model() -> Model {
    let mut m = Model::new();
    m.commit_vrf_add(1);
    for (i, (name, vrf)) in [("pod", 1), ("fabric", 0)].into_iter().enumerate() {
        let mut req = VifRequest::new(
            name,
            VifType::Tap,
            vrf,
            MacAddr([2, 0, 0, 0, 0, i as u8 + 1]),
        );
        req.iface = Some(format!("tap{i}"));
        let config = m.check_vif_add(&req).expect("a valid tap vif");
        let kind = VifKind::Tap {
            iface: format!("tap{i}"),
        };
        m.commit_vif_add(VifEntry {
            spec: config.spec(i as u32, kind),
            config,
            created_dirs: vec![],
            policy: None,
            pins: Default::default(),
        });
    }
    m.commit_nexthop_set(
        1,
        Nexthop::Encap {
            vif: "pod".into(),
            dmac: MacAddr([2, 0, 0, 0, 0, 9]),
        },
    );
    m.commit_nexthop_set(
        2,
        Nexthop::Tunnel {
            encap: control_api::api::TunnelEncap::Vxlan,
            vif: "fabric".into(),
            sip: "192.0.2.1".parse().unwrap(),
            dip: "192.0.2.2".parse().unwrap(),
            dmac: Some(MacAddr([2, 0, 0, 0, 0, 10])),
            label: None,
        },
    );
    m.commit_nexthop_set(
        3,
        Nexthop::Ecmp {
            members: vec![1, 2],
        },
    );
    m
}

fn check_status(e: control_api::Error) {
    assert!(
        (400..500).contains(&e.status()),
        "refusal {e} must be a 4xx"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let mut m = model();
    match sel % 10 {
        0 => match parse_json::<VifRequest>(body).and_then(|r| m.check_vif_add(&r)) {
            Ok(_) => {}
            Err(e) => check_status(e),
        },
        1 => match parse_json::<Nexthop>(body) {
            Ok(nh) => {
                for id in [1, 2, 3, 4] {
                    match m.check_nexthop_set(id, &nh) {
                        Ok(_) => m.commit_nexthop_set(id, nh.clone()),
                        Err(e) => check_status(e),
                    }
                }
            }
            Err(e) => check_status(e),
        },
        2 => match parse_json::<Route>(body) {
            Ok(r) => match m.check_route_set(1, &r) {
                Ok(_) => m.commit_route_set(1, r),
                Err(e) => check_status(e),
            },
            Err(e) => check_status(e),
        },
        3 => match parse_json::<BridgeEntry>(body).and_then(|b| m.check_bridge_set(1, &b)) {
            Ok(_) => {}
            Err(e) => check_status(e),
        },
        4 => match parse_json::<Policy>(body).and_then(|p| m.check_policy_set("pod", &p)) {
            Ok(_) => {}
            Err(e) => check_status(e),
        },
        // NAT: a pool (twice: the same again, or a replacement), an attachment of VRF 1 to the
        // pool `egress`, a floating IP; against a model holding pool `egress` and a floating IP.
        7..=9 => {
            let egress: NatPool = parse_json(
                br#"{"vrf":0,"first":"198.51.100.64","last":"198.51.100.71"}"#,
            )
            .expect("a valid pool");
            m.commit_nat_pool_set("egress", egress);
            let fip: FloatingIp =
                parse_json(br#"{"vrf":1,"ip":"198.18.1.10"}"#).expect("a valid floating IP");
            m.commit_floating_ip_set([198, 51, 100, 200].into(), fip);
            let outcome = match sel % 10 {
                7 => parse_json::<NatPool>(body).and_then(|p| {
                    m.check_nat_pool_set("p", &p)?;
                    m.commit_nat_pool_set("p", p.clone());
                    m.check_nat_pool_set("p", &p).map(drop)
                }),
                8 => parse_json::<SnatAttachment>(body).and_then(|a| {
                    m.check_snat_set(1, &a)?;
                    m.commit_snat_set(1, &a);
                    m.check_nat_pool_del(&a.pool).map(drop)
                }),
                _ => parse_json::<FloatingIp>(body).and_then(|f| {
                    m.check_floating_ip_set([198, 51, 100, 201].into(), &f)
                        .map(drop)
                }),
            };
            if let Err(e) = outcome {
                check_status(e);
            }
        }
        _ => {
            // Wire strings: whatever parses prints back to something that parses to the same.
            let Ok(s) = std::str::from_utf8(body) else {
                return;
            };
            if let Ok(v) = s.parse::<MacAddr>() {
                assert_eq!(v.to_string().parse::<MacAddr>().ok(), Some(v));
            }
            if let Ok(v) = s.parse::<IpPrefix>() {
                assert_eq!(v.to_string().parse::<IpPrefix>().ok(), Some(v));
            }
            if let Ok(v) = s.parse::<PortRange>() {
                assert_eq!(v.to_string().parse::<PortRange>().ok(), Some(v));
            }
            if let Ok(v) = s.parse::<Proto>() {
                assert_eq!(v.to_string().parse::<Proto>().ok(), Some(v));
            }
        }
    }
});
