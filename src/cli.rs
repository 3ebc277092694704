//! Command-line options of vrouterd and the EAL arguments derived from them.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser};
use vrouter::MacAddr;

use crate::config::{self, ParseError};

/// vrouterd: the vrouter data-plane process.
///
/// Polls the fabric port and pod interfaces on pinned forwarding lcores, serves vhost-user
/// sockets on a dedicated vhost lcore, and takes configuration over a REST control socket.
/// DPDK EAL arguments go after `--` (e.g. `-- --no-pci --vdev net_tap0,iface=vr0`).
#[derive(Debug, Parser)]
#[command(name = "vrouterd", version, about, long_about)]
pub struct Options {
    /// Read options from this TOML file: one key per option, named as the long option
    /// (`fwd-lcores = "1,3"`), flags as booleans, the EAL arguments as `eal-args = [...]`.
    /// Options on the command line win over the file's.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Check the options (and the --config file), print the configuration they make as TOML,
    /// and exit without starting anything.
    #[arg(long)]
    pub check_config: bool,

    /// Unix socket of the REST control API (HTTP/1.1 + JSON, mode 0600).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/vrouter/vrouter.sock"
    )]
    pub control_socket: PathBuf,

    /// Directory every vhost-user socket directory must lie under (after resolving `..` and
    /// symlinks); pods cannot reach each other's sockets.
    #[arg(long, value_name = "DIR", default_value = "/var/run/vrouter")]
    pub socket_base: PathBuf,

    /// Forwarding lcores (CPU ids), as a list such as `1`, `1,3` or `2-5`. Each is pinned and
    /// busy-polls its share of the queues. `LCORE@CPU` runs lcore LCORE on CPU CPU (`1,2@1`:
    /// two forwarding lcores sharing CPU 1, for tests on small machines).
    #[arg(long, value_name = "LIST", default_value = "1", value_parser = parse_lcore_list)]
    pub fwd_lcores: LcoreList,

    /// The lcore that serves the vhost-user control channels (and runs the control side).
    /// It must not be a forwarding lcore.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub vhost_lcore: u32,

    /// Fabric port added at start-up as vif `fabric0` in VRF 0 (the same as a `physical` vif
    /// added through the API): a PCI address of a NIC or SR-IOV VF bound to vfio
    /// (`0000:03:00.1`) or a DPDK vdev string (`net_af_packet0,iface=eth1`, `net_ring0`), which
    /// gets one RSS queue per forwarding lcore; or `kernel:IFACE`, a kernel interface (a veth,
    /// a NIC the kernel keeps) on vrouterd's own AF_PACKET port, polled by one forwarding lcore,
    /// which carries jumbo frames (DPDK's net_af_packet and net_tap take standard frames only).
    #[arg(long, value_name = "DEVARGS")]
    pub fabric: Option<String>,

    /// The vrouter's underlay address on the fabric port (tunnels start and end here).
    #[arg(long, value_name = "IPV4", requires = "fabric")]
    pub fabric_ip: Option<std::net::Ipv4Addr>,

    /// MAC of the --fabric vif.
    #[arg(
        long,
        value_name = "MAC",
        default_value = "02:00:00:00:00:01",
        requires = "fabric"
    )]
    pub fabric_mac: MacAddr,

    /// MTU of the --fabric vif. Underlays carrying tunnels usually run jumbo frames so that a
    /// 1500-byte pod frame still fits once encapsulated (VXLAN adds 50 bytes). Pod vifs whose
    /// MTU does not fit it with that headroom are refused when added.
    #[arg(long, value_name = "BYTES", requires = "fabric")]
    pub fabric_mtu: Option<u32>,

    /// The host's interface on the fabric (vhost0): a tap of this name, added at start-up as
    /// vif `vhost0` with the --fabric-mac. Fabric traffic for the node that is not a tunnel to
    /// it (and ARP other than requests for --fabric-ip, which vrouterd answers) goes to it, and
    /// what the host sends on it leaves by the fabric. Its addresses (the --fabric-ip) and
    /// routes are the host's to set.
    #[arg(long, value_name = "NAME", requires = "fabric")]
    pub host_iface: Option<String>,

    /// Seconds an underlay neighbour's MAC (resolved by ARP for tunnel nexthops without a
    /// `dmac`) is used before vrouterd asks again; one that does not answer is `failed`.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub neigh_reachable_secs: u64,

    /// Seconds between the router advertisements sent unsolicited to every vif with an
    /// `ip6` (they also answer solicitations at once); 0 sends none.
    #[arg(long, value_name = "SECS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=1800))]
    pub ra_interval_secs: u64,

    /// The MAC pods send routed traffic to (and ARP / ND answers carry).
    #[arg(long, value_name = "MAC", default_value_t = MacAddr::VROUTER_DEFAULT)]
    pub vrouter_mac: MacAddr,

    /// Keep the configuration across restarts in DIR (created mode 0700 if missing): VRFs,
    /// vifs with their socket settings, nexthops, routes, bridge entries, labels, VNIs and
    /// policies are saved (fsynced) before the API answers, and restored at start-up before the
    /// control socket opens. Without it nothing is written.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Exit cleanly after this many seconds (for scripts and tests); 0 = run until SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub run_for: f64,

    /// Microseconds a forwarding lcore sleeps after a poll that found no packets: 0 = pure busy
    /// polling (production); >0 keeps small or shared machines responsive. At most 100 000
    /// (100 ms): health takes a core that has not polled for 2 s as stuck.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub idle_sleep_us: u64,

    /// Flow-table entries (each flow takes two: it and its reverse), preallocated at start.
    #[arg(long, value_name = "N", default_value_t = 524_288)]
    pub flow_entries: usize,

    /// Route-table limit per VRF for IPv4, in 2 KiB trie groups: one below each /16 that
    /// holds longer routes, one more below each /24 that holds longer ones. Freed groups are
    /// reused; a route that needs more is refused with 507 table-full.
    #[arg(long, value_name = "N", default_value_t = 131_072,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub route_groups_v4: u64,

    /// The same for IPv6 (one group below each /16, /24, /32, ... holding longer routes).
    #[arg(long, value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub route_groups_v6: u64,

    /// Bridge (MAC) entries per VRF, preallocated with the VRF (48 bytes each); one more is
    /// refused with 507 table-full.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub bridge_entries: u64,

    /// Packet buffers in the mempool.
    #[arg(long, value_name = "N", default_value_t = 32767)]
    pub mbufs: u32,

    /// Export flow records over IPFIX (RFC 7011, UDP) to this collector (`ADDR:PORT`): a record
    /// when a flow ends, and periodically for long ones. Off without it.
    #[arg(long, value_name = "ADDR:PORT")]
    pub ipfix_collector: Option<std::net::SocketAddr>,

    /// Seconds between records of a running flow.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400), requires = "ipfix_collector")]
    pub ipfix_active_timeout: u64,

    /// IPFIX records per second at most; the rest are dropped (and counted in the log).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..), requires = "ipfix_collector")]
    pub ipfix_max_rate: u32,

    /// The agent channel, pkt0: a unix socket (mode 0600) an agent connects to, receiving
    /// packets the data plane hands to it (first packets of flows a vif policy's `agent`
    /// action leaves to it, DHCP from vifs without an address) and sending packets out of vifs,
    /// injecting them, or deciding flows. Wire format: control-api's `pkt0` module.
    #[arg(long, value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,

    /// Packets per second each vif may hand to the agent, per forwarding lcore (a token bucket
    /// on the lcore); the rest are dropped as `agent_rate_limited`.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..), requires = "agent_socket")]
    pub agent_trap_rate: u32,

    /// Depth of that bucket: packets a vif may hand over at once after a quiet spell.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..), requires = "agent_socket")]
    pub agent_trap_burst: u32,

    /// New flows per vif held for the agent's verdict at most: the first packet of a further
    /// new flow of that vif is dropped (`agent_held_full`) until a verdict or expiry frees a
    /// slot; later packets of a held flow are dropped too (`agent_held_repeat`).
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=65_536), requires = "agent_socket")]
    pub agent_max_held: u64,

    /// Milliseconds a held flow waits for the agent's verdict; after that its next packet goes
    /// to the agent again.
    #[arg(long, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000), requires = "agent_socket")]
    pub agent_held_ms: u64,

    /// Log filter: error, warn, info, debug, trace (or a tracing directive such as
    /// `vrouterd=debug`).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// DPDK EAL arguments, after `--`. The core list (-l/--lcores/-c) is derived from
    /// --fwd-lcores and --vhost-lcore; EAL always runs `--in-memory` (hugepages without files,
    /// no shared config), and gets `--file-prefix=vrouterd-<pid>` unless one is given here.
    #[arg(last = true, value_name = "EAL ARGS")]
    pub eal_args: Vec<String>,
}

/// A set of lcore ids, sorted, without duplicates; and the lcores run on another CPU than
/// their id (`LCORE@CPU`), by lcore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LcoreList(pub Vec<u32>, pub Vec<(u32, u32)>);

fn parse_lcore_list(text: &str) -> Result<LcoreList, String> {
    let mut ids = Vec::new();
    let mut on_cpu = Vec::new();
    for part in text.split(',').map(str::trim) {
        let bad = || format!("{part:?} is not an lcore id or range (examples: 1  1,3  2-5  2@1)");
        if let Some((id, cpu)) = part.split_once('@') {
            let (id, cpu): (u32, u32) = (
                id.parse().map_err(|_| bad())?,
                cpu.parse().map_err(|_| bad())?,
            );
            ids.push(id);
            on_cpu.push((id, cpu));
            continue;
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(format!("range {part:?} runs backwards"));
                }
                ids.extend(a..=b);
            }
            None => ids.push(part.parse().map_err(|_| bad())?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err("at least one forwarding lcore is needed".into());
    }
    if let Some(&max) = ids.last() {
        if max >= 1024 {
            return Err(format!("lcore {max} is out of range"));
        }
    }
    on_cpu.sort_unstable();
    on_cpu.dedup();
    Ok(LcoreList(ids, on_cpu))
}

impl Options {
    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<()> {
        if self.fwd_lcores.0.contains(&self.vhost_lcore) {
            bail!(
                "--vhost-lcore {} is also in --fwd-lcores {:?}: forwarding lcores busy-poll and \
                 must have their CPU to themselves",
                self.vhost_lcore,
                self.fwd_lcores.0
            );
        }
        if !(self.run_for >= 0.0 && self.run_for.is_finite()) {
            bail!(
                "--run-for must be a number of seconds >= 0, got {}",
                self.run_for
            );
        }
        for arg in &self.eal_args {
            let name = arg.split('=').next().unwrap_or(arg);
            if matches!(name, "-l" | "--lcores" | "-c" | "--main-lcore") {
                bail!(
                    "EAL argument {arg:?} conflicts with --fwd-lcores/--vhost-lcore, which set the \
                     EAL core list; remove it"
                );
            }
        }
        Ok(())
    }

    /// The table sizes the options ask for.
    pub fn tables_config(&self) -> vrouter::tables::TablesConfig {
        // In range: clap bounds each of these well below usize::MAX.
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        vrouter::tables::TablesConfig {
            v4_groups: size(self.route_groups_v4),
            v6_groups: size(self.route_groups_v6),
            bridge_entries: size(self.bridge_entries),
            ..vrouter::tables::TablesConfig::default()
        }
    }

    /// The full EAL command line: program name, core list with the vhost lcore as main lcore,
    /// in-memory mode by default, then the user's EAL arguments.
    pub fn eal_argv(&self) -> Vec<String> {
        let mut cores = vec![self.vhost_lcore];
        cores.extend(&self.fwd_lcores.0);
        let on_cpu = &self.fwd_lcores.1;
        let list = cores
            .iter()
            .map(|id| match on_cpu.iter().find(|(l, _)| l == id) {
                Some((_, cpu)) => format!("{id}@{cpu}"),
                None => id.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut argv = vec![
            "vrouterd".to_owned(),
            // With lcores mapped to CPUs, EAL's --lcores form (`1,2@1`); else the plain list.
            if on_cpu.is_empty() { "-l" } else { "--lcores" }.to_owned(),
            list,
            "--main-lcore".to_owned(),
            self.vhost_lcore.to_string(),
        ];
        let user_has = |flag: &str| {
            self.eal_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        // Hugepages without hugetlbfs files and no shared config: nothing of ours stays in
        // hugetlbfs after exit, and several vrouterd processes coexist without sharing state.
        if !user_has("--in-memory") {
            argv.push("--in-memory".to_owned());
        }
        // One memfd per memseg list rather than one per hugepage: a handful of fds, not hundreds.
        if !user_has("--single-file-segments") {
            argv.push("--single-file-segments".to_owned());
        }
        if !user_has("--file-prefix") {
            argv.push(format!("--file-prefix=vrouterd-{}", std::process::id()));
        }
        argv.extend(self.eal_args.iter().cloned());
        argv
    }
}

/// Parses `--run-for` into a deadline, if any.
pub fn run_deadline(opts: &Options) -> Option<std::time::Instant> {
    (opts.run_for > 0.0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_secs_f64(opts.run_for))
}

/// The options on vrouterd's command line and in the `--config` file it names; exits with
/// clap's message (or the help) if they do not parse, and after printing them for
/// `--check-config`.
pub fn parse() -> Result<Options> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (opts, effective) = match parse_from(&argv) {
        Ok(parsed) => parsed,
        Err(ParseError::Clap { error, file }) => {
            if let (Some(file), true) = (file, error.use_stderr()) {
                let _ = error.print();
                eprintln!(
                    "note: options were read from {} as well as from the command line",
                    file.display()
                );
                std::process::exit(error.exit_code());
            }
            error.exit()
        }
        Err(ParseError::File(e)) => bail!("configuration file {e}"),
    };
    let context = match &opts.config {
        Some(file) => format!("invalid options (command line and {})", file.display()),
        None => "invalid options".to_owned(),
    };
    opts.validate().context(context)?;
    if opts.check_config {
        print!("{effective}");
        std::process::exit(0);
    }
    Ok(opts)
}

/// The options `argv` gives, and the configuration they make written as a file.
fn parse_from(argv: &[OsString]) -> Result<(Options, String), ParseError> {
    let matches = config::parse(Options::command(), argv)?;
    let opts = Options::from_arg_matches(&matches)
        .map_err(|error| ParseError::Clap { error, file: None })?;
    Ok((opts, config::render(&Options::command(), &matches)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcore_lists_parse_ranges_and_reject_garbage() {
        assert_eq!(parse_lcore_list("1").unwrap().0, vec![1]);
        assert_eq!(parse_lcore_list("3,1-2,2").unwrap().0, vec![1, 2, 3]);
        assert!(parse_lcore_list("2-1").is_err());
        assert!(parse_lcore_list("a").is_err());
        assert!(parse_lcore_list("").is_err());
        assert!(parse_lcore_list("5000").is_err());
    }

    #[test]
    fn eal_argv_sets_cores_and_memory_mode() {
        let o = Options::parse_from(["vrouterd", "--fwd-lcores", "1", "--", "--no-pci"]);
        o.validate().unwrap();
        let argv = o.eal_argv();
        assert_eq!(&argv[..5], &["vrouterd", "-l", "0,1", "--main-lcore", "0"]);
        assert!(argv.contains(&"--in-memory".to_owned()));
        assert_eq!(argv.last().map(String::as_str), Some("--no-pci"));

        // Two forwarding lcores on one CPU: EAL's --lcores form.
        let o = Options::parse_from(["vrouterd", "--fwd-lcores", "1,2@1"]);
        o.validate().unwrap();
        assert_eq!(o.fwd_lcores.0, [1, 2]);
        let argv = o.eal_argv();
        assert_eq!(&argv[..3], &["vrouterd", "--lcores", "0,1,2@1"]);
        assert!(parse_lcore_list("2@x").is_err());

        let o = Options::parse_from(["vrouterd", "--", "--file-prefix=vr1"]);
        let argv = o.eal_argv();
        assert!(argv.contains(&"--in-memory".to_owned()));
        assert_eq!(
            argv.iter()
                .filter(|a| a.starts_with("--file-prefix"))
                .count(),
            1
        );
    }

    #[test]
    fn conflicting_options_are_refused() {
        let o = Options::parse_from(["vrouterd", "--fwd-lcores", "0-1", "--vhost-lcore", "1"]);
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--vhost-lcore 1"));
        let o = Options::parse_from(["vrouterd", "--", "-l", "0-3"]);
        assert!(o.validate().is_err());
        let o = Options::parse_from(["vrouterd", "--run-for=-1"]);
        assert!(o.validate().is_err());
    }

    #[test]
    fn table_limits_default_to_the_library_defaults_and_can_be_set() {
        let d = vrouter::tables::TablesConfig::default();
        let c = Options::parse_from(["vrouterd"]).tables_config();
        assert_eq!(
            (c.v4_groups, c.v6_groups, c.bridge_entries, c.nexthops),
            (d.v4_groups, d.v6_groups, d.bridge_entries, d.nexthops)
        );
        let c = Options::parse_from([
            "vrouterd",
            "--route-groups-v4",
            "8",
            "--route-groups-v6",
            "9",
            "--bridge-entries",
            "10",
        ])
        .tables_config();
        assert_eq!((c.v4_groups, c.v6_groups, c.bridge_entries), (8, 9, 10));
        assert!(Options::try_parse_from(["vrouterd", "--bridge-entries", "0"]).is_err());
    }

    fn parse_with_file(text: &str, args: &[&str]) -> Result<(Options, String), ParseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vrouterd.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["vrouterd".into(), "--config".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        parse_from(&argv)
    }

    #[test]
    fn the_configuration_file_sets_options_and_the_command_line_wins() {
        let file = "fwd-lcores = \"2-3\"\nvhost-lcore = 1\nrun-for = 2\n\
                    state-dir = \"/var/lib/vrouter\"\neal-args = [\"--no-pci\"]\n";
        let (o, _) = parse_with_file(file, &[]).unwrap();
        assert_eq!(o.fwd_lcores.0, [2, 3]);
        assert_eq!((o.vhost_lcore, o.run_for), (1, 2.0));
        assert_eq!(
            o.state_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/vrouter"))
        );
        assert_eq!(o.eal_args, ["--no-pci"]);
        assert!(o.config.is_some());

        let (o, effective) = parse_with_file(
            file,
            &[
                "--fwd-lcores",
                "4",
                "--run-for=0.5",
                "--",
                "--vdev",
                "net_null0",
            ],
        )
        .unwrap();
        assert_eq!(o.fwd_lcores.0, [4]);
        assert_eq!((o.vhost_lcore, o.run_for), (1, 0.5));
        assert_eq!(o.eal_args, ["--vdev", "net_null0"]);
        assert!(effective.contains("\nfwd-lcores = \"4\"\n"), "{effective}");
        assert!(effective.contains("\n# mbufs = 32767\n"), "{effective}");
    }

    #[test]
    fn the_configuration_file_refuses_what_the_command_line_would() {
        let error = |text| match parse_with_file(text, &[]) {
            Err(ParseError::File(e)) => e.to_string(),
            Err(ParseError::Clap { error, .. }) => error.to_string(),
            Ok(_) => panic!("{text:?} was accepted"),
        };
        assert!(error("fwd-lcores = \"3-1\"").contains(":1: fwd-lcores: invalid value \"3-1\""));
        assert!(error("fabric-ip = \"10.0.0\"").contains(":1: fabric-ip: invalid value"));
        assert!(error("idle-sleep-us = 100001").contains(":1: idle-sleep-us: invalid value"));
        assert!(error("mbufs = \"1\"").contains(":1: mbufs: expected an integer"));
        assert!(error("eal-args = \"--no-pci\"").contains(":1: eal-args: expected an array"));
        assert!(error("check-config = true").contains(":1: check-config: unknown key"));
        // Options that need another hold in the file as on the command line.
        assert!(error("fabric-ip = \"10.0.0.1\"").contains("--fabric"));
    }

    /// The configuration file the package installs in /etc/vrouter.
    const SHIPPED: &str = include_str!("../packaging/vrouterd.toml");

    #[test]
    fn the_shipped_configuration_has_every_key_with_its_default() {
        let (o, effective) = parse_with_file(SHIPPED, &[]).unwrap();
        o.validate().unwrap();
        let lines: Vec<&str> = SHIPPED.lines().collect();
        for key in config::key_names(&Options::command()) {
            let set = lines.iter().any(|l| l.starts_with(&format!("{key} = ")));
            let shown = lines.iter().any(|l| l.starts_with(&format!("# {key} = ")));
            assert!(
                set || shown,
                "the shipped configuration lacks the key {key}"
            );
            // What --check-config shows for a default is the line the file has for it.
            let default = effective
                .lines()
                .find(|l| l.starts_with(&format!("# {key} = ")));
            if let (false, Some(default)) = (set, default) {
                assert!(
                    lines.contains(&default),
                    "{key}: expected {default:?} in the file"
                );
            }
        }
        // Each commented-out setting, examples included, is a valid one.
        let uncommented: String = lines
            .iter()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let (o, _) = parse_with_file(&uncommented, &[]).unwrap();
        o.validate().unwrap();
        assert_eq!(o.fabric.as_deref(), Some("0000:03:00.1"));
    }

    #[test]
    fn an_idle_sleep_that_health_would_take_for_a_stall_is_refused() {
        let ok = Options::try_parse_from(["vrouterd", "--idle-sleep-us", "100000"]).unwrap();
        assert_eq!(ok.idle_sleep_us, 100_000);
        let err = Options::try_parse_from(["vrouterd", "--idle-sleep-us", "100001"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--idle-sleep-us"), "{err}");
    }
}
