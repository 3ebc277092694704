//! ADD, DEL, CHECK and VERSION.
//!
//! Every command holds the node's store lock from start to end, so invocations on one node
//! run one at a time. ADD records its whole plan (names, addresses, nexthop id) before it
//! touches vrouterd or the kernel, so whatever a crash leaves half-made, DEL finds and takes
//! away; a failed ADD takes away what it made before it answers.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, VhostUserMode, VifRequest, VifType};
use control_api::BlockingClient;
use serde_json::{json, Value};

use crate::config::{
    from_u128, to_u128, Env, InterfaceType, IpamConf, Mode, NetConf, SUPPORTED_VERSIONS,
};
use crate::error::{code, from_api, CniError, Result};
use crate::ipam::{self, Lease};
use crate::netif;
use crate::store::{attachment_key, Attachment, State, Store};

/// Runs one invocation; returns what to print on stdout.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Value> {
    match env.command.as_str() {
        "VERSION" => Ok(version(stdin)),
        "ADD" => add(env, &NetConf::parse(stdin)?),
        "DEL" => del(env, &NetConf::parse(stdin)?).map(|()| Value::Null),
        "CHECK" => check(env, &NetConf::parse(stdin)?).map(|()| Value::Null),
        "STATUS" => status(&NetConf::parse(stdin)?).map(|()| Value::Null),
        "GC" => gc(env, &NetConf::parse(stdin)?).map(|()| Value::Null),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        )),
    }
}

pub fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".to_string());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

/// FNV-1a: stable across builds and machines, unlike the standard library's hasher.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Names and MAC an attachment gets, derived from the container id and interface name alone,
/// so that DEL finds them even without the store.
struct Names {
    /// `<container-id[:12]>-<ifname>`: the socket file and the vif.
    socket_file: String,
    host_veth: String,
    mac: MacAddr,
}

fn names(container_id: &str, ifname: &str) -> Names {
    let short: String = container_id.chars().take(12).collect();
    let h = fnv(&attachment_key(container_id, ifname));
    let b = h.to_be_bytes();
    Names {
        socket_file: format!("{short}-{ifname}"),
        host_veth: format!("vr{:011x}", h & 0x0fff_ffff_ffff),
        // Locally administered unicast.
        mac: MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]]),
    }
}

fn client(conf_socket: &Path) -> Result<BlockingClient> {
    BlockingClient::new(conf_socket)
        .map_err(|e| CniError::io(format!("starting the control client: {e}")))
}

/// An attachment DEL knows nothing about has no nexthop of ours.
const NO_NEXTHOP: u32 = u32::MAX;

fn not_found() -> control_api::Error {
    control_api::Error::Api {
        status: 404,
        code: "not-found".to_string(),
        message: String::new(),
    }
}

fn is_not_found(e: &control_api::Error) -> bool {
    matches!(e, control_api::Error::Api { status: 404, .. })
}

/// `ip/32` or `ip/128`, as text.
fn host_prefix(ip: IpAddr) -> String {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    format!("{ip}/{len}")
}

// ------------------------------------------------------------------------------------------
// delegated IPAM

fn find_plugin(env: &Env, plugin: &str) -> Result<PathBuf> {
    env.path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(
                "ipam.type",
                format!(
                    "no plugin {plugin:?} in CNI_PATH ({})",
                    env.path
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

/// Runs the IPAM plugin with `command` and the same environment and configuration, as the
/// runtime would.
fn delegate(env: &Env, conf: &NetConf, plugin: &str, command: &str, stdin: &[u8]) -> Result<Value> {
    use std::io::Write;
    let path = find_plugin(env, plugin)?;
    let mut child = std::process::Command::new(&path)
        .env("CNI_COMMAND", command)
        // Set from `env` rather than inherited: GC runs the plugin for other attachments.
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_IFNAME", &env.ifname)
        .env(
            "CNI_NETNS",
            env.netns
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("running {}: {e}", path.display())))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin)
            .map_err(|e| CniError::io(format!("writing to {}: {e}", path.display())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("running {}: {e}", path.display())))?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = v["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(CniError::new(
            code::DELEGATE_FAILED,
            format!(
                "IPAM plugin {plugin:?} {command} for network {:?} failed: {msg}",
                conf.name
            ),
        )
        .with_details(v["details"].as_str().unwrap_or("").to_string()));
    }
    Ok(v)
}

fn leases_from_result(plugin: &str, v: &Value) -> Result<Vec<Lease>> {
    let mut out = Vec::new();
    for ip in v["ips"].as_array().into_iter().flatten() {
        let bad = || {
            CniError::new(
                code::DELEGATE_FAILED,
                format!("IPAM plugin {plugin:?} returned an address this plugin cannot read: {ip}"),
            )
        };
        let text = ip["address"].as_str().ok_or_else(bad)?;
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len > bits {
            return Err(bad());
        }
        let gateway = match ip["gateway"].as_str() {
            Some(g) => g.parse().map_err(|_| bad())?,
            None => {
                // No gateway from the plugin: the subnet's first address, as host-local does.
                let host = u32::from(bits - len);
                let mask = if host >= 128 { 0 } else { u128::MAX << host };
                from_u128((to_u128(addr) & mask).wrapping_add(1), addr.is_ipv4())
            }
        };
        out.push(Lease {
            ip: addr,
            prefix_len: len,
            gateway,
        });
    }
    if out.is_empty() {
        return Err(CniError::new(
            code::DELEGATE_FAILED,
            format!("IPAM plugin {plugin:?} returned no address"),
        ));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// ADD

fn add(env: &Env, conf: &NetConf) -> Result<Value> {
    env.check_attachment()?;
    let pod_uid = match conf.interface_type {
        InterfaceType::VhostUser => Some(env.pod_uid()?),
        InterfaceType::Veth => {
            if env.netns.is_none() {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_NETNS is required for veth pods: the pod's network namespace",
                ));
            }
            None
        }
    };
    let store = Store::lock(&conf.data_dir)?;
    let mut state = store.load()?;
    let key = attachment_key(&env.container_id, &env.ifname);
    let api = client(&conf.control_socket)?;
    if let Some(a) = state.attachments.get(&key).cloned() {
        if a.network != conf.name {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "container {} interface {} is already attached to network {:?}; DEL it first",
                    env.container_id, env.ifname, a.network
                ),
            ));
        }
        if a.complete && verify(&api, &a).is_ok() {
            if let Some(r) = &a.result {
                return Ok(versioned(r.clone(), &conf.cni_version));
            }
        }
        // Half made (a crash) or broken since: take it away and make it again. The built-in
        // pools keep its addresses (the pod may hold them already); a delegated plugin is
        // asked again, as it may refuse a second ADD for the same container.
        teardown(&api, &a, &mut state)?;
        if a.delegate.is_some() {
            release_ipam(env, conf, &mut state)?;
        }
        state.attachments.remove(&key);
        store.save(&state)?;
    }

    // What a failed ADD restores, once it has taken away what it made: the store exactly as
    // it was, down to the pools' last-used addresses.
    let original = state.clone();
    let leases = match &conf.ipam {
        IpamConf::Builtin { pools } => ipam::allocate(
            &mut state,
            &conf.name,
            conf.vrf,
            pools,
            &env.container_id,
            &env.ifname,
        )?,
        IpamConf::Delegate { plugin } => {
            let v = delegate(env, conf, plugin, "ADD", &conf.raw)?;
            match leases_from_result(plugin, &v) {
                Ok(l) => l,
                Err(e) => {
                    let _ = delegate(env, conf, plugin, "DEL", &conf.raw);
                    return Err(e);
                }
            }
        }
    };

    let planned = plan(
        env,
        conf,
        &api,
        &mut state,
        &key,
        pod_uid.as_deref(),
        &leases,
    );
    let mut a = match planned {
        Ok(a) => a,
        Err(e) => {
            let _ = release_ipam(env, conf, &mut state);
            return Err(e);
        }
    };
    state.attachments.insert(key.clone(), a.clone());
    if let Err(e) = store.save(&state) {
        let _ = release_ipam(env, conf, &mut state);
        return Err(e);
    }

    match apply(&api, &mut a, &mut state, env, &leases) {
        Ok(result) => {
            a.complete = true;
            a.result = Some(result.clone());
            state.attachments.insert(key, a);
            store.save(&state)?;
            Ok(versioned(result, &conf.cni_version))
        }
        Err(e) => {
            let undo =
                teardown(&api, &a, &mut state).and_then(|()| release_ipam(env, conf, &mut state));
            match undo {
                Ok(()) => {
                    store.save(&original)?;
                    Err(e)
                }
                // Kept in the store: DEL finishes the job.
                Err(u) => {
                    let _ = store.save(&state);
                    Err(e.with_details(format!("and undoing it failed: {}", u.msg)))
                }
            }
        }
    }
}

/// The nexthop id: the lowest in the configured range that neither this plugin nor anyone
/// else on vrouterd uses.
fn free_nexthop(api: &BlockingClient, conf: &NetConf, state: &State) -> Result<u32> {
    let live = api
        .run(|c| async move { c.nexthops().await })
        .map_err(|e| from_api("listing nexthops", e))?;
    let (lo, hi) = conf.nexthop_range;
    (lo..=hi)
        .find(|id| {
            !live.iter().any(|n| n.id == *id)
                && !state.attachments.values().any(|a| a.nexthop == *id)
                && state.receive_nexthop != Some(*id)
        })
        .ok_or_else(|| {
            CniError::config(
                "nexthopRange",
                format!("every nexthop id in {lo}..={hi} is in use: widen the range"),
            )
        })
}

/// Refuses addresses that vrouterd already routes somewhere this plugin did not send them (an
/// agent's route, a pool that overlaps what someone else configured), and gateways routed
/// anywhere but to a receive nexthop: taking them over would break someone else's traffic.
fn check_routes_free(
    api: &BlockingClient,
    vrf: u32,
    state: &State,
    leases: &[Lease],
) -> Result<()> {
    let routes = api
        .run(|c| async move { c.routes(vrf).await })
        .map_err(|e| from_api(&format!("listing routes of VRF {vrf}"), e))?;
    let ours = |id: u32| {
        state.receive_nexthop == Some(id) || state.attachments.values().any(|a| a.nexthop == id)
    };
    for l in leases {
        for (ip, gateway) in [(l.ip, false), (l.gateway, true)] {
            let p = host_prefix(ip);
            let Some(r) = routes.iter().find(|r| r.prefix.to_string() == p) else {
                continue;
            };
            if ours(r.nexthop) {
                continue;
            }
            let id = r.nexthop;
            if gateway {
                let nh = api
                    .run(|c| async move { c.nexthop(id).await })
                    .map_err(|e| from_api(&format!("reading nexthop {id}"), e))?;
                if matches!(nh.nexthop, Nexthop::Receive) {
                    continue;
                }
            }
            return Err(CniError::config(
                "ipam",
                format!(
                    "{p} is already routed in VRF {vrf} to nexthop {id}, which this plugin did not make: give the network addresses nobody else routes in that VRF"
                ),
            ));
        }
    }
    Ok(())
}

fn plan(
    env: &Env,
    conf: &NetConf,
    api: &BlockingClient,
    state: &mut State,
    key: &str,
    pod_uid: Option<&str>,
    leases: &[Lease],
) -> Result<Attachment> {
    let n = names(&env.container_id, &env.ifname);
    let nexthop = free_nexthop(api, conf, state)?;
    if state.receive_nexthop.is_none() {
        // Taken before this attachment's own id is recorded, so it must differ from it.
        let mut probe = state.clone();
        probe.receive_nexthop = Some(nexthop);
        state.receive_nexthop = Some(free_nexthop(api, conf, &probe)?);
    }
    let vrfs = api
        .run(|c| async move { c.vrfs().await })
        .map_err(|e| from_api("listing VRFs", e))?;
    let exists = vrfs.iter().any(|v| v.vrf == conf.vrf);
    if exists {
        check_routes_free(api, conf.vrf, state, leases)?;
    }
    let created_vrf = !exists || state.vrfs.contains_key(&conf.vrf);
    if created_vrf {
        state
            .vrfs
            .entry(conf.vrf)
            .or_default()
            .insert(key.to_string());
    }
    let (socket_dir, socket_file, info_file, mode) = match pod_uid {
        Some(uid) => {
            let dir = conf.socket_base.join(uid);
            let info = dir.join(format!("{}.json", n.socket_file));
            (
                Some(dir),
                Some(n.socket_file.clone()),
                Some(info),
                Some(conf.mode),
            )
        }
        None => (None, None, None, None),
    };
    Ok(Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: conf.name.clone(),
        kind: conf.interface_type,
        control_socket: conf.control_socket.clone(),
        vrf: conf.vrf,
        vif: n.socket_file.clone(),
        mac: n.mac.to_string(),
        mtu: conf.mtu,
        nexthop,
        routes: leases.iter().map(|l| host_prefix(l.ip)).collect(),
        gateways: leases
            .iter()
            .map(|l| format!("{}/{}", conf.vrf, l.gateway))
            .collect(),
        ips: leases
            .iter()
            .map(|l| (l.cidr(), l.gateway.to_string()))
            .collect(),
        socket_dir,
        socket_file,
        mode,
        info_file,
        host_veth: (conf.interface_type == InterfaceType::Veth).then(|| n.host_veth.clone()),
        netns: env.netns.clone(),
        delegate: match &conf.ipam {
            IpamConf::Delegate { plugin } => Some(plugin.clone()),
            IpamConf::Builtin { .. } => None,
        },
        created_vrf,
        complete: false,
        result: None,
    })
}

fn parse_mac(s: &str) -> MacAddr {
    s.parse().unwrap_or(MacAddr([0x02, 0, 0, 0, 0, 0]))
}

/// vrouterd's refusal of the vif, with its socket rules mapped onto the configuration field
/// that decides them.
fn vif_error(e: control_api::Error, a: &Attachment) -> CniError {
    if let control_api::Error::Api {
        code: c, message, ..
    } = &e
    {
        let field = match c.as_str() {
            "socket-outside-base" | "socket-dir-invalid" | "socket-path-unusable" => {
                Some("socketBase")
            }
            "socket-path-too-long" => Some("socketBase"),
            "invalid-field" if message.contains("mtu") => Some("mtu"),
            _ => None,
        };
        if let Some(f) = field {
            return CniError::config(
                f,
                format!(
                    "vrouterd refused socket directory {} ({c}): {message}; `socketBase` must lie under vrouterd's --socket-base",
                    a.socket_dir
                        .as_deref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ),
            );
        }
    }
    from_api(&format!("adding vif {}", a.vif), e)
}

fn apply(
    api: &BlockingClient,
    a: &mut Attachment,
    state: &mut State,
    env: &Env,
    leases: &[Lease],
) -> Result<Value> {
    let mac = parse_mac(&a.mac);
    let vrf = a.vrf;
    if a.created_vrf {
        api.run(|c| async move { c.vrf_add(vrf).await })
            .map_err(|e| from_api(&format!("creating VRF {vrf}"), e))?;
    }
    let mut req = match a.kind {
        InterfaceType::VhostUser => {
            let mut r = VifRequest::new(&a.vif, VifType::VhostUser, vrf, mac);
            r.vhostsocket_dir = a.socket_dir.clone();
            r.vhostsocket_filename = a.socket_file.clone();
            r.vhostuser_mode = Some(match a.mode {
                Some(Mode::Client) => VhostUserMode::Client,
                _ => VhostUserMode::Server,
            });
            r
        }
        InterfaceType::Veth => {
            let (Some(host), Some(netns)) = (a.host_veth.as_deref(), a.netns.as_deref()) else {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    "CNI_NETNS is required for veth pods",
                ));
            };
            netif::delete_veth(host)?;
            let ips: Vec<(String, IpAddr)> = leases.iter().map(|l| (l.cidr(), l.gateway)).collect();
            netif::create_veth(&netif::VethPlan {
                host,
                netns,
                ifname: &a.ifname,
                mac: &a.mac,
                mtu: a.mtu,
                ips: &ips,
            })?;
            let mut r = VifRequest::new(&a.vif, VifType::AfPacket, vrf, mac);
            r.iface = Some(host.to_string());
            r
        }
    };
    req.mtu = Some(a.mtu);
    req.ip = leases.iter().find_map(|l| match l.ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    });
    req.ip6 = leases.iter().find_map(|l| match l.ip {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    });
    let info = {
        let r = req.clone();
        api.run(|c| async move { c.vif_add(&r).await })
            .map_err(|e| vif_error(e, a))?
    };
    let nh = Nexthop::Encap {
        vif: a.vif.clone(),
        dmac: mac,
    };
    let id = a.nexthop;
    api.run(|c| async move { c.nexthop_set(id, &nh).await })
        .map_err(|e| from_api(&format!("setting nexthop {id}"), e))?;
    for p in &a.routes {
        set_route(api, vrf, p, id)?;
    }
    if let Some(rid) = state.receive_nexthop {
        api.run(|c| async move { c.nexthop_set(rid, &Nexthop::Receive).await })
            .map_err(|e| from_api(&format!("setting receive nexthop {rid}"), e))?;
        let existing = api
            .run(|c| async move { c.routes(vrf).await })
            .map_err(|e| from_api(&format!("listing routes of VRF {vrf}"), e))?;
        for l in leases {
            let p = host_prefix(l.gateway);
            // Answered already through someone else's receive nexthop (checked in the plan):
            // left as it is, and so never removed by this plugin either.
            if existing
                .iter()
                .any(|r| r.prefix.to_string() == p && r.nexthop != rid)
            {
                continue;
            }
            set_route(api, vrf, &p, rid)?;
        }
    }
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    let iface_index = match a.kind {
        InterfaceType::VhostUser => 0,
        InterfaceType::Veth => 1,
    };
    for l in leases {
        ips.push(json!({"address": l.cidr(), "gateway": l.gateway.to_string(), "interface": iface_index}));
        routes.push(json!({"dst": if l.ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" }, "gw": l.gateway.to_string()}));
    }
    let interfaces = match a.kind {
        InterfaceType::VhostUser => {
            let socket = info
                .socket
                .clone()
                .or_else(|| Some(a.socket_dir.as_ref()?.join(a.socket_file.as_ref()?)))
                .unwrap_or_default();
            if let Some(dir) = &a.socket_dir {
                // In client mode the pod creates the socket here; make sure the place exists.
                std::fs::create_dir_all(dir)
                    .map_err(|e| CniError::io(format!("creating {}: {e}", dir.display())))?;
            }
            if let Some(path) = &a.info_file {
                let facts = json!({
                    "interface": a.ifname,
                    "containerId": a.container_id,
                    "network": a.network,
                    "vif": a.vif,
                    "socketPath": socket,
                    "vhostuserMode": a.mode.map(|m| m.as_str()),
                    "mac": a.mac,
                    "vrouterMac": info.vrouter_mac.to_string(),
                    "mtu": a.mtu,
                    "ips": ips,
                    "routes": routes,
                });
                let bytes = serde_json::to_vec_pretty(&facts)
                    .map_err(|e| CniError::io(format!("encoding {}: {e}", path.display())))?;
                let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
                crate::store::write_atomically(&tmp, path, &bytes)?;
                // The application in the pod reads it, possibly not as root.
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
            }
            vec![json!({"name": a.ifname, "mac": a.mac, "socketPath": socket})]
        }
        InterfaceType::Veth => {
            let host = a.host_veth.clone().unwrap_or_default();
            let host_mac = std::fs::read_to_string(format!("/sys/class/net/{host}/address"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            vec![
                json!({"name": host, "mac": host_mac}),
                json!({"name": a.ifname, "mac": a.mac, "sandbox": env.netns.as_ref().map(|p| p.display().to_string())}),
            ]
        }
    };
    Ok(json!({
        "cniVersion": "1.0.0",
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

fn set_route(api: &BlockingClient, vrf: u32, prefix: &str, nexthop: u32) -> Result<()> {
    let prefix: IpPrefix = prefix
        .parse()
        .map_err(|e| CniError::io(format!("route {prefix}: {e}")))?;
    let r = Route {
        prefix,
        nexthop,
        label: None,
    };
    api.run(|c| async move { c.route_set(vrf, &r).await })
        .map(|_| ())
        .map_err(|e| from_api(&format!("routing {prefix} in VRF {vrf}"), e))
}

/// The result in the version the runtime asked for (0.4.0 results name each address's
/// family).
fn versioned(mut r: Value, version: &str) -> Value {
    r["cniVersion"] = Value::String(version.to_string());
    if version.starts_with("0.") {
        if let Some(ips) = r["ips"].as_array_mut() {
            for ip in ips {
                let v6 = ip["address"].as_str().is_some_and(|a| a.contains(':'));
                ip["version"] = Value::String(if v6 { "6" } else { "4" }.to_string());
            }
        }
    }
    r
}

// ------------------------------------------------------------------------------------------
// DEL

fn release_ipam(env: &Env, conf: &NetConf, state: &mut State) -> Result<()> {
    match &conf.ipam {
        IpamConf::Builtin { .. } => {
            ipam::release(state, &conf.name, &env.container_id, &env.ifname);
            Ok(())
        }
        IpamConf::Delegate { plugin } => delegate(env, conf, plugin, "DEL", &conf.raw).map(|_| ()),
    }
}

/// Takes away what `a` says ADD made: only objects that are still the attachment's own (a vif
/// with its MAC, routes through its nexthop), each step fine when already gone.
fn teardown(api: &BlockingClient, a: &Attachment, state: &mut State) -> Result<()> {
    let key = attachment_key(&a.container_id, &a.ifname);
    let vrf = a.vrf;
    let id = a.nexthop;
    let routes = api
        .run(|c| async move { c.routes(vrf).await })
        .or_else(|e| {
            if is_not_found(&e) {
                Ok(Vec::new())
            } else {
                Err(e)
            }
        })
        .map_err(|e| from_api(&format!("listing routes of VRF {vrf}"), e))?;
    for r in routes.iter().filter(|r| r.nexthop == id) {
        let p = r.prefix;
        api.run(|c| async move { c.route_del(vrf, &p).await })
            .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
            .map_err(|e| from_api(&format!("removing route {p}"), e))?;
    }
    // Gateways: the route goes with the last attachment using it. Users are every other
    // attachment the store lists, half-made ones included: their plans name their gateways
    // before any route is set.
    let others = |g: Option<&String>| {
        state
            .attachments
            .iter()
            .any(|(k, o)| *k != key && g.map_or(!o.gateways.is_empty(), |g| o.gateways.contains(g)))
    };
    for g in &a.gateways {
        if others(Some(g)) {
            continue;
        }
        let Some((_, gw)) = g.split_once('/') else {
            continue;
        };
        let Ok(gw) = gw.parse::<IpAddr>() else {
            continue;
        };
        let p = host_prefix(gw);
        if let Some(r) = routes.iter().find(|r| r.prefix.to_string() == p) {
            let p = r.prefix;
            if Some(r.nexthop) == state.receive_nexthop {
                api.run(|c| async move { c.route_del(vrf, &p).await })
                    .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
                    .map_err(|e| from_api(&format!("removing gateway route {p}"), e))?;
            }
        }
    }
    let nexthop = if id == NO_NEXTHOP {
        Err(not_found())
    } else {
        api.run(|c| async move { c.nexthop(id).await })
    };
    match nexthop {
        Ok(nh) if matches!(&nh.nexthop, Nexthop::Encap { vif, .. } if *vif == a.vif) => {
            api.run(|c| async move { c.nexthop_del(id).await })
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
                .map_err(|e| from_api(&format!("removing nexthop {id}"), e))?;
        }
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(from_api(&format!("reading nexthop {id}"), e)),
    }
    if let Some(path) = &a.info_file {
        let _ = std::fs::remove_file(path);
    }
    let name = a.vif.clone();
    match api.run(|c| async move { c.vif(&name).await }) {
        Ok(v) if v.config.mac.to_string() == a.mac => {
            let name = a.vif.clone();
            api.run(|c| async move { c.vif_del(&name).await })
                .or_else(|e| if is_not_found(&e) { Ok(()) } else { Err(e) })
                .map_err(|e| from_api(&format!("removing vif {}", a.vif), e))?;
        }
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(from_api(&format!("reading vif {}", a.vif), e)),
    }
    if let Some(host) = &a.host_veth {
        netif::delete_veth(host)?;
    }
    if let (Some(dir), Some(file)) = (&a.socket_dir, &a.socket_file) {
        // The pod's own socket (client mode) is left once the pod is gone; vrouterd removed
        // its own (server mode) with the vif.
        let sock = dir.join(file);
        if std::fs::symlink_metadata(&sock)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false)
        {
            let _ = std::fs::remove_file(&sock);
        }
        // What a plugin killed while writing the facts file left.
        let stale = format!("{file}.json.tmp.");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&stale) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Shared by the pod's other interfaces: removed with the last one.
        let _ = std::fs::remove_dir(dir);
    }
    if !others(None) {
        if let Some(rid) = state.receive_nexthop {
            let mut gone = true;
            match api.run(|c| async move { c.nexthop(rid).await }) {
                Ok(nh) if matches!(nh.nexthop, Nexthop::Receive) => {
                    match api.run(|c| async move { c.nexthop_del(rid).await }) {
                        Ok(()) => {}
                        Err(e) if is_not_found(&e) => {}
                        // Still routed to by a gateway this plugin did not record (it cannot
                        // happen unless the store was edited): kept, and so is its id.
                        Err(control_api::Error::Api { status: 409, .. }) => gone = false,
                        Err(e) => return Err(from_api(&format!("removing nexthop {rid}"), e)),
                    }
                }
                Err(e) if !is_not_found(&e) => {
                    return Err(from_api(&format!("reading nexthop {rid}"), e))
                }
                _ => {}
            }
            if gone {
                state.receive_nexthop = None;
            }
        }
    }
    if let Some(users) = state.vrfs.get_mut(&vrf) {
        users.remove(&key);
        if users.is_empty() {
            state.vrfs.remove(&vrf);
            // Refused (409) if something else was put in it meanwhile: then it stays.
            let _ = api.run(|c| async move { c.vrf_del(vrf).await });
        }
    }
    Ok(())
}

fn del(env: &Env, conf: &NetConf) -> Result<()> {
    env.check_attachment()?;
    let store = Store::lock(&conf.data_dir)?;
    let mut state = store.load()?;
    let key = attachment_key(&env.container_id, &env.ifname);
    let api = client(&conf.control_socket)?;
    let a = match state.attachments.get(&key) {
        Some(a) => a.clone(),
        // Not in the store (a crash before the plan was recorded, or DEL again): whatever
        // carries this attachment's derived names and MAC.
        None => {
            let n = names(&env.container_id, &env.ifname);
            let socket_dir = match conf.interface_type {
                InterfaceType::VhostUser => env.pod_uid().ok().map(|u| conf.socket_base.join(u)),
                InterfaceType::Veth => None,
            };
            Attachment {
                container_id: env.container_id.clone(),
                ifname: env.ifname.clone(),
                network: conf.name.clone(),
                kind: conf.interface_type,
                control_socket: conf.control_socket.clone(),
                vrf: conf.vrf,
                vif: n.socket_file.clone(),
                mac: n.mac.to_string(),
                mtu: conf.mtu,
                // No nexthop of ours is known: none is touched.
                nexthop: NO_NEXTHOP,
                routes: Vec::new(),
                gateways: Vec::new(),
                ips: Vec::new(),
                info_file: socket_dir
                    .as_ref()
                    .map(|d| d.join(format!("{}.json", n.socket_file))),
                socket_dir,
                socket_file: Some(n.socket_file),
                mode: Some(conf.mode),
                host_veth: (conf.interface_type == InterfaceType::Veth).then_some(n.host_veth),
                netns: env.netns.clone(),
                delegate: None,
                created_vrf: false,
                complete: false,
                result: None,
            }
        }
    };
    match teardown(&api, &a, &mut state) {
        Ok(()) => {}
        // vrouterd gone with nothing recorded: nothing of ours can be on it.
        Err(e) if e.code == code::TRY_AGAIN_LATER && !state.attachments.contains_key(&key) => {
            if let Some(host) = &a.host_veth {
                netif::delete_veth(host)?;
            }
        }
        Err(e) => return Err(e),
    }
    release_ipam(env, conf, &mut state)?;
    state.attachments.remove(&key);
    store.save(&state)
}

// ------------------------------------------------------------------------------------------
// STATUS and GC (CNI 1.1)

/// Whether ADD can work now: vrouterd answers on its control socket.
fn status(conf: &NetConf) -> Result<()> {
    client(&conf.control_socket)?
        .run(|c| async move { c.health().await })
        .map(|_| ())
        .map_err(|e| {
            let why = from_api("asking vrouterd for its health", e);
            CniError::new(code::PLUGIN_NOT_AVAILABLE, why.msg)
        })
}

/// Takes away every attachment of this network the runtime no longer lists in
/// `cni.dev/valid-attachments`, and frees addresses of the network's pools that no listed
/// attachment holds.
fn gc(env: &Env, conf: &NetConf) -> Result<()> {
    let obj: Value = serde_json::from_slice(&conf.raw).unwrap_or_default();
    let Some(valid) = obj["cni.dev/valid-attachments"].as_array() else {
        return Err(CniError::config(
            "cni.dev/valid-attachments",
            "is required for GC: the attachments still in use, [{\"containerID\", \"ifname\"}]",
        ));
    };
    let valid: std::collections::BTreeSet<String> = valid
        .iter()
        .filter_map(|v| {
            Some(attachment_key(
                v["containerID"].as_str()?,
                v["ifname"].as_str()?,
            ))
        })
        .collect();
    let store = Store::lock(&conf.data_dir)?;
    let mut state = store.load()?;
    let api = client(&conf.control_socket)?;
    let stale: Vec<(String, Attachment)> = state
        .attachments
        .iter()
        .filter(|(k, a)| a.network == conf.name && !valid.contains(*k))
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    for (key, a) in stale {
        teardown(&api, &a, &mut state)?;
        let theirs = Env {
            command: "DEL".into(),
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
            netns: a.netns.clone(),
            args: Vec::new(),
            path: env.path.clone(),
        };
        release_ipam(&theirs, conf, &mut state)?;
        state.attachments.remove(&key);
        // Saved one by one: a GC that fails half-way has still done that much.
        store.save(&state)?;
    }
    if let IpamConf::Builtin { .. } = conf.ipam {
        let orphans: std::collections::BTreeSet<(String, String)> = state
            .allocations
            .values()
            .filter(|a| a.network == conf.name)
            .filter(|a| !valid.contains(&attachment_key(&a.container_id, &a.ifname)))
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        for (cid, ifname) in orphans {
            ipam::release(&mut state, &conf.name, &cid, &ifname);
        }
        store.save(&state)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// CHECK

fn check_failed(what: String) -> CniError {
    CniError::new(code::CHECK_FAILED, what)
}

/// Whether what ADD made is all still there (vrouterd's objects, socket, kernel interface).
fn verify(api: &BlockingClient, a: &Attachment) -> Result<()> {
    let name = a.vif.clone();
    let v = api
        .run(|c| async move { c.vif(&name).await })
        .map_err(|e| match e {
            e if is_not_found(&e) => {
                check_failed(format!("vif {} is missing from vrouterd", a.vif))
            }
            e => from_api(&format!("reading vif {}", a.vif), e),
        })?;
    if v.config.mac.to_string() != a.mac || v.config.vrf != a.vrf {
        return Err(check_failed(format!(
            "vif {} is in VRF {} with MAC {}, not VRF {} with MAC {}",
            a.vif, v.config.vrf, v.config.mac, a.vrf, a.mac
        )));
    }
    let id = a.nexthop;
    match api.run(|c| async move { c.nexthop(id).await }) {
        Ok(nh) if matches!(&nh.nexthop, Nexthop::Encap { vif, .. } if *vif == a.vif) => {}
        Ok(nh) => {
            return Err(check_failed(format!(
                "nexthop {id} no longer leads to vif {}: {:?}",
                a.vif, nh.nexthop
            )))
        }
        Err(e) => return Err(from_api(&format!("reading nexthop {id}"), e)),
    }
    let vrf = a.vrf;
    let routes = api
        .run(|c| async move { c.routes(vrf).await })
        .map_err(|e| from_api(&format!("listing routes of VRF {vrf}"), e))?;
    for p in &a.routes {
        if !routes
            .iter()
            .any(|r| r.prefix.to_string() == *p && r.nexthop == id)
        {
            return Err(check_failed(format!(
                "route {p} in VRF {vrf} to nexthop {id} is missing"
            )));
        }
    }
    match a.kind {
        InterfaceType::VhostUser => {
            if a.mode == Some(Mode::Server) {
                let sock = v.socket.clone().unwrap_or_default();
                if !sock.exists() {
                    return Err(check_failed(format!(
                        "the vhost-user socket {} is missing",
                        sock.display()
                    )));
                }
            }
            if let Some(f) = &a.info_file {
                if !f.exists() {
                    return Err(check_failed(format!("{} is missing", f.display())));
                }
            }
        }
        InterfaceType::Veth => {
            let host = a.host_veth.as_deref().unwrap_or_default();
            if !netif::host_link_exists(host) {
                return Err(check_failed(format!(
                    "the pod's host-side veth {host} is missing"
                )));
            }
            let netns = a.netns.as_deref().unwrap_or(Path::new(""));
            let (addrs, mac) =
                netif::pod_addresses(netns, &a.ifname).map_err(|e| check_failed(e.msg))?;
            for (cidr, _) in &a.ips {
                if !addrs.contains(cidr) {
                    return Err(check_failed(format!(
                        "{} in {} lacks address {cidr} (has {addrs:?})",
                        a.ifname,
                        netns.display()
                    )));
                }
            }
            if mac != a.mac {
                return Err(check_failed(format!(
                    "{} has MAC {mac}, vif {} expects {}",
                    a.ifname, a.vif, a.mac
                )));
            }
            let gws = netif::pod_default_gateways(netns)?;
            for (_, gw) in &a.ips {
                if !gws.contains(gw) {
                    return Err(check_failed(format!(
                        "the pod has no default route via {gw} (has {gws:?})"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn check(env: &Env, conf: &NetConf) -> Result<()> {
    env.check_attachment()?;
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::config(
            "prevResult",
            "is required for CHECK: the result ADD returned",
        ));
    };
    let store = Store::lock(&conf.data_dir)?;
    let state = store.load()?;
    let key = attachment_key(&env.container_id, &env.ifname);
    let Some(a) = state.attachments.get(&key) else {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {} interface {} is not attached by this plugin on this node",
                env.container_id, env.ifname
            ),
        ));
    };
    if !a.complete {
        return Err(check_failed(format!(
            "the ADD of container {} interface {} did not finish; DEL it and ADD again",
            env.container_id, env.ifname
        )));
    }
    let listed: Vec<&str> = prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .collect();
    for (cidr, _) in &a.ips {
        if !listed.contains(&cidr.as_str()) {
            return Err(check_failed(format!(
                "prevResult does not list {cidr}, which ADD gave this interface"
            )));
        }
    }
    verify(&client(&conf.control_socket)?, a)?;
    if let IpamConf::Delegate { plugin } = &conf.ipam {
        delegate(env, conf, plugin, "CHECK", &conf.raw)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_their_limits_and_differ_per_interface() {
        let a = names("0123456789abcdef0123", "net1");
        let b = names("0123456789abcdef0123", "net2");
        assert_eq!(a.socket_file, "0123456789ab-net1");
        assert!(a.host_veth.len() <= 15, "{}", a.host_veth);
        assert_ne!(a.host_veth, b.host_veth);
        assert_ne!(a.mac, b.mac);
        assert_eq!(a.mac.0[0], 0x02, "locally administered unicast");
        // Stable: DEL in another process finds the same names.
        assert_eq!(a.host_veth, names("0123456789abcdef0123", "net1").host_veth);
    }

    #[test]
    fn delegated_results_without_a_gateway_get_the_subnets_first_address() {
        let v = json!({"ips": [{"address": "198.18.9.7/24"}, {"address": "2001:db8:9::5/64", "gateway": "2001:db8:9::fe"}]});
        let l = leases_from_result("x", &v).expect("leases");
        assert_eq!(l[0].gateway.to_string(), "198.18.9.1");
        assert_eq!(l[1].gateway.to_string(), "2001:db8:9::fe");
        // A host route from the plugin: no overflow past the last address.
        let l = leases_from_result(
            "x",
            &json!({"ips": [{"address": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"}]}),
        )
        .expect("lease");
        assert_eq!(l[0].prefix_len, 128);
        assert!(leases_from_result("x", &json!({"ips": []})).is_err());
        assert!(leases_from_result("x", &json!({"ips": [{"address": "198.18.0.1/40"}]})).is_err());
        assert!(leases_from_result("x", &json!({"ips": [{"address": "nonsense"}]})).is_err());
    }

    #[test]
    fn old_versions_get_address_families() {
        let r = versioned(
            json!({"ips": [{"address": "198.18.0.2/24"}, {"address": "2001:db8::2/64"}]}),
            "0.4.0",
        );
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][1]["version"], "6");
        let r = versioned(json!({"ips": [{"address": "198.18.0.2/24"}]}), "1.0.0");
        assert!(r["ips"][0].get("version").is_none());
    }
}
