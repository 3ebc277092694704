//! vr-tcpbench: TCP between kernel pods whose veths keep their default offloads, through
//! vrouterd (af-packet vifs on its kernel port, routed in VRF 1) and, in the same run, through
//! the Linux kernel's own routing between the same kind of namespaces (veth + ip_forward);
//! between kernel pods on two vrouterd nodes over a veth fabric on their kernel ports in VXLAN;
//! and from a QEMU guest to a kernel pod through vrouterd. iperf3 for the pods (`--seconds`, 1 and 4
//! streams, at each `--mtu`); the guest (TCG, so its own CPU is the limit) sends a checksummed
//! transfer over busybox nc. Prints one JSON line per measurement:
//! `{"case","mtu","streams","gbit_per_s"}`, and for the pods the average ping round trip
//! after the TCP runs: `{"case","mtu","rtt_us"}`.
//!
//! Uses the test helpers (testkit): namespaces, pods and guests are made and removed here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Parser;
use control_api::api::{TunnelEncap, VhostUserMode};
use testkit::kernel_pod::{route_in_vrf1_mtu, KernelPod};
use testkit::netns::{host, Netns};
use testkit::overlay::{Fabric, TwoNodes};
use testkit::vm::{self, GuestRam, Vm, VmConfig};
use testkit::vrouterd::Vrouterd;

#[derive(Debug, Parser)]
#[command(name = "vr-tcpbench", about)]
struct Args {
    /// The vrouterd binary.
    #[arg(long)]
    vrouterd: PathBuf,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// MTUs to measure at (pods, vifs and the kernel router's veths).
    #[arg(long, value_delimiter = ',', default_value = "1500,9000")]
    mtu: Vec<u32>,
    /// Parallel streams per run.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    streams: Vec<u32>,
    /// Cases: kernel (Linux routing), vrouterd (kernel pods through vrouterd), fabric (kernel
    /// pods on two vrouterd nodes, VXLAN over a veth fabric), vm (a guest to a kernel pod
    /// through vrouterd).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,vrouterd,fabric,vm"
    )]
    cases: Vec<String>,
    /// Bytes the guest sends in the vm case.
    #[arg(long, default_value_t = 64 << 20)]
    vm_bytes: u64,
}

/// Average ping round trip from `from` to `to`'s IPv4 address, in microseconds (100 pings,
/// 10 ms apart: what one packet waits for each way when nothing else is going on).
fn rtt_us(from: &KernelPod, to: &KernelPod) -> Result<f64> {
    let out = from.ns.exec(&[
        "ping",
        "-q",
        "-c",
        "100",
        "-i",
        "0.01",
        "-W",
        "1",
        &to.ip.to_string(),
    ]);
    // "rtt min/avg/max/mdev = 0.031/0.045/0.120/0.010 ms"
    let avg = out
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok());
    match avg {
        Some(ms) if out.contains(" 0% packet loss") => Ok(ms * 1000.0),
        _ => bail!("ping did not come back whole: {out}"),
    }
}

fn report_rtt(case: &str, mtu: u32, rtt_us: f64) {
    println!(
        "{}",
        serde_json::json!({"case": case, "mtu": mtu, "rtt_us": rtt_us})
    );
}

fn report(case: &str, mtu: u32, streams: u32, gbit_per_s: f64) {
    println!(
        "{}",
        serde_json::json!({"case": case, "mtu": mtu, "streams": streams, "gbit_per_s": gbit_per_s})
    );
}

/// Two pods whose host-side veth ends sit in a router namespace with forwarding on: the
/// kernel's own routing between them.
fn kernel_case(args: &Args, mtu: u32) -> Result<()> {
    let a = KernelPod::new("ra", 1, mtu);
    let b = KernelPod::new("rb", 2, mtu);
    let router = Netns::new("kr");
    for pod in [&a, &b] {
        host(&["ip", "link", "set", &pod.host_side, "netns", router.name()]);
        let gw = format!("{}/24", pod.gateway());
        router.ip(&["addr", "add", &gw, "dev", &pod.host_side]);
        router.ip(&["link", "set", &pod.host_side, "mtu", &mtu.to_string(), "up"]);
    }
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    for &streams in &args.streams {
        let r = a.iperf3_timed(&b, IpAddr::V4(b.ip), args.seconds, streams);
        report("tcp-kernel-routing", mtu, streams, r.gbit_per_s);
    }
    report_rtt("rtt-kernel-routing", mtu, rtt_us(&a, &b)?);
    Ok(())
}

/// The same two pods on af-packet vifs of vrouterd, routed in VRF 1.
fn vrouterd_case(args: &Args, mtu: u32) -> Result<()> {
    let vr = Vrouterd::start(&args.vrouterd, &["--fwd-lcores", "1"], &[]);
    let a = KernelPod::new("va", 1, mtu);
    let b = KernelPod::new("vb", 2, mtu);
    route_in_vrf1_mtu(&vr, &[("podA", &a), ("podB", &b)], Some(mtu));
    for &streams in &args.streams {
        let r = a.iperf3_timed(&b, IpAddr::V4(b.ip), args.seconds, streams);
        report("tcp-vrouterd", mtu, streams, r.gbit_per_s);
    }
    report_rtt("rtt-vrouterd", mtu, rtt_us(&a, &b)?);
    let status = vr.stop();
    if !status.success() {
        bail!("vrouterd exited with {status}");
    }
    Ok(())
}

/// Pods on two vrouterd nodes, VXLAN between them over a veth fabric on the nodes' kernel ports
/// (`--fabric kernel:IFACE`) at the pods' MTU plus the tunnel headroom. Both nodes' forwarding
/// lcores are CPU 1, napping when idle: on a small machine they take turns.
fn fabric_case(args: &Args, mtu: u32) -> Result<()> {
    let nodes = TwoNodes::start(&args.vrouterd, "f", |iface| Fabric::kernel(iface, mtu));
    nodes.tunnel(TunnelEncap::Vxlan);
    let (a, b) = (&nodes.pod1, &nodes.pod2);
    for &streams in &args.streams {
        let r = a.iperf3_timed(b, IpAddr::V4(b.ip), args.seconds, streams);
        report("tcp-vrouterd-fabric-vxlan", mtu, streams, r.gbit_per_s);
    }
    report_rtt("rtt-vrouterd-fabric-vxlan", mtu, rtt_us(a, b)?);
    let (s1, s2) = nodes.stop();
    if !(s1.success() && s2.success()) {
        bail!("vrouterd exited with {s1} and {s2}");
    }
    Ok(())
}

/// A guest on a server-mode vhost-user vif sends to a kernel pod through vrouterd.
fn vm_case(args: &Args, mtu: u32) -> Result<()> {
    let vr = Vrouterd::start(&args.vrouterd, &["--fwd-lcores", "1"], &[]);
    let pod = KernelPod::new("vp", 1, mtu);
    route_in_vrf1_mtu(&vr, &[("pod", &pod)], Some(mtu));
    let socket = vr.socket_base().join("vm").join("net0");
    let mut cfg = VmConfig::new("vm", 5, socket, VhostUserMode::Server);
    cfg.mtu = mtu;
    cfg.ram = GuestRam::Hugepages;
    vm::route_vm_in_vrf1(&vr, "vm", &cfg, 10, 11);
    let mut guest = Vm::boot(cfg);
    let t = Instant::now();
    let transfer =
        vm::tcp_vm_to_pod(&mut guest, &pod, args.vm_bytes).map_err(anyhow::Error::msg)?;
    let secs = t.elapsed().as_secs_f64();
    if !transfer.verified() {
        bail!("the guest's transfer did not arrive intact: {transfer:?}");
    }
    report(
        "tcp-vm-to-pod",
        mtu,
        1,
        args.vm_bytes as f64 * 8.0 / secs / 1e9,
    );
    drop(guest);
    let status = vr.stop();
    if !status.success() {
        bail!("vrouterd exited with {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    for &mtu in &args.mtu {
        for case in &args.cases {
            match case.as_str() {
                "kernel" => kernel_case(&args, mtu)?,
                "vrouterd" => vrouterd_case(&args, mtu)?,
                "fabric" => fabric_case(&args, mtu)?,
                // The guest's TCG CPU is its limit whatever the MTU: one MTU is enough.
                "vm" if mtu == args.mtu[0] => vm_case(&args, mtu)?,
                "vm" => {}
                other => bail!("unknown case {other:?}"),
            }
        }
    }
    Ok(())
}
