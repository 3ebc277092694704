//! Link-local services through the real vrouterd: kernel pods fetch
//! `http://169.254.169.254/` with curl and reach an HTTP server on the fabric side (a
//! "remote" namespace behind an af-packet vif of VRF 0), which sees each pod by its vif's own
//! link-local address, 169.254.1.0 + the vif's index; the pods see the answer come from
//! 169.254.169.254. Removing the service stops it.

use std::io::BufRead;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;

use control_api::api::{IpPrefix, LinkLocalService, MacAddr, Nexthop, Route, ServiceProto};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

const SERVICE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const SERVICE_PORT: u16 = 8775;
const NH_UPLINK: u32 = 10;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// An HTTP server answering every GET with "client ADDRESS" (the address it saw), one line on
/// stderr per request.
const SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("client %s\n" % self.client_address[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        sys.stderr.write("seen %s\n" % self.client_address[0])
        sys.stderr.flush()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("listening", flush=True)
s.serve_forever()
"#;

fn curl(pod: &KernelPod) -> std::process::Output {
    pod.ns
        .command("curl")
        .args(["-s", "-S", "-m", "5", "http://169.254.169.254/"])
        .output()
        .expect("curl")
}

#[test]
fn pods_reach_the_metadata_service_which_sees_each_by_its_vifs_link_local_address() {
    testkit::netns::require_root();
    let node = Netns::new("mdnode");
    let pod1 = KernelPod::attached_to(Some(&node), "ma", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "mb", 2, 1500);
    // The service side: 203.0.113.10/24 behind a router at .1 (vrouterd, its MAC given).
    let remote = KernelPod::remote(
        &node,
        "mr",
        3,
        SERVICE,
        Ipv4Addr::new(203, 0, 113, 1),
        Some("00:00:5e:00:01:00"),
    );

    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2)]);
    vr.add_af_packet_vif("uplink", 0, &remote);
    vr.set_nexthop(
        NH_UPLINK,
        Nexthop::Encap {
            vif: "uplink".into(),
            dmac: MacAddr(remote.mac),
        },
    );
    let route = Route {
        prefix: "203.0.113.0/24".parse::<IpPrefix>().unwrap(),
        nexthop: NH_UPLINK,
        label: None,
    };
    vr.api(|c| async move { c.route_set(0, &route).await })
        .expect("the service's route in the fabric VRF");

    let mut server = remote
        .ns
        .command("python3")
        .args([
            "-c",
            SERVER,
            &SERVICE.to_string(),
            &SERVICE_PORT.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("http server");
    let mut ready = String::new();
    std::io::BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("server ready");
    assert_eq!(ready.trim(), "listening");

    // No service yet: nothing answers.
    assert!(!curl(&pod1).status.success());

    let md = LinkLocalService {
        address: LinkLocalService::METADATA,
        port: 80,
        proto: ServiceProto::Tcp,
        service_address: SERVICE,
        service_port: SERVICE_PORT,
    };
    vr.api(|c| async move { c.link_local_set("metadata", &md).await })
        .expect("link-local service");
    let listed = vr
        .api(|c| async move { c.link_locals().await })
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].service, md);

    let mut expected = Vec::new();
    for (name, pod) in [("pod1", &pod1), ("pod2", &pod2)] {
        let index = vr.vif(name).index;
        let source = Ipv4Addr::from(u32::from(Ipv4Addr::new(169, 254, 1, 0)) + index);
        let out = curl(pod);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            body.trim(),
            format!("client {source}"),
            "{name} (vif {index}) is seen by its link-local source"
        );
        expected.push(format!("seen {source}"));
    }
    // The pods' sockets saw the answer come from 169.254.169.254:80 (curl connected to it).

    // Removed: nothing answers again.
    vr.api(|c| async move { c.link_local_del("metadata").await })
        .expect("removed");
    assert!(!curl(&pod1).status.success());

    let _ = server.kill();
    let out = server.wait_with_output().expect("server output");
    let seen = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = seen.lines().filter(|l| l.starts_with("seen ")).collect();
    assert_eq!(
        lines, expected,
        "the server saw each pod once, by its address"
    );
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    for reason in [
        "nat_unsupported",
        "truncated",
        "malformed",
        "offload",
        "flow_drop",
    ] {
        assert_eq!(drops.reasons.get(reason), Some(&0), "{reason}: {drops:?}");
    }
    assert!(vr.stop().success());
}
