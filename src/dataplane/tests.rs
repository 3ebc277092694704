use super::*;

#[test]
fn full_tables_are_507_table_full_naming_table_limit_and_remedy() {
    use vrouter::Error as E;
    let full = |e: E| {
        let d = table_err(e);
        assert_eq!(d.kind, DataplaneErrorKind::TableFull, "{}", d.message);
        assert_eq!((d.kind.status(), d.kind.code()), (507, "table-full"));
        d.message
    };
    let m = full(E::RouteTableFull {
        vrf: 3,
        family: "IPv6",
        limit: 16384,
    });
    assert!(
        m.starts_with("IPv6 route table of VRF 3 is full (limit 16384 trie groups)")
            && m.contains("--route-groups-v6"),
        "{m}"
    );
    let m = full(E::BridgeTableFull {
        vrf: 3,
        capacity: 4096,
    });
    assert!(
        m.starts_with("bridge table of VRF 3 is full (limit 4096 entries)")
            && m.contains("--bridge-entries"),
        "{m}"
    );
    let m = full(E::TableFull {
        table: "vxlan",
        capacity: 65536,
    });
    assert!(
        m.starts_with("vxlan table is full (limit 65536 entries)"),
        "{m}"
    );
    let m = full(E::NexthopOutOfRange {
        id: 70000,
        capacity: 65536,
    });
    assert!(
        m.starts_with("nexthop table is full (limit 65536 ids"),
        "{m}"
    );
    // Everything else stays a rejection.
    let d = table_err(E::NoSuchVrf(9));
    assert_eq!(d.kind, DataplaneErrorKind::Rejected);
}
