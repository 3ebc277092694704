//! The network configuration on stdin and the `CNI_*` environment, validated with errors that
//! name the field to fix.

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use control_api::api::IpPrefix;
use serde_json::{Map, Value};

use crate::error::{code, CniError, Result};

/// CNI versions whose result format this plugin writes.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
pub const DEFAULT_CONTROL_SOCKET: &str = "/var/run/vrouter/vrouter.sock";
pub const DEFAULT_SOCKET_BASE: &str = "/var/run/vrouter";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/vrouter";
/// Nexthop ids the plugin takes by default: the top quarter of vrouterd's 16-bit id space, so
/// an agent on the same node can keep the rest.
pub const DEFAULT_NEXTHOP_RANGE: (u32, u32) = (49152, 65535);
/// The built-in IPAM's plugin type.
pub const BUILTIN_IPAM: &str = "vrouter-ipam";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InterfaceType {
    #[serde(rename = "vhost-user")]
    VhostUser,
    #[serde(rename = "veth")]
    Veth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Server,
    Client,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
        }
    }
}

/// One named address pool of the built-in IPAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConf {
    pub name: String,
    pub subnet: IpPrefix,
    pub gateway: IpAddr,
    /// First and last address handed out (inclusive).
    pub first: IpAddr,
    pub last: IpAddr,
}

impl PoolConf {
    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// How many addresses the pool hands out.
    pub fn size(&self) -> u128 {
        to_u128(self.last) - to_u128(self.first) + 1 - u128::from(self.contains(self.gateway))
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let v = to_u128(ip);
        ip.is_ipv4() == self.first.is_ipv4() && v >= to_u128(self.first) && v <= to_u128(self.last)
    }
}

/// How addresses are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpamConf {
    /// The built-in pools (`"type": "vrouter-ipam"`).
    Builtin { pools: Vec<PoolConf> },
    /// Another IPAM plugin, run from `CNI_PATH` with the whole configuration.
    Delegate { plugin: String },
}

/// The validated network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub interface_type: InterfaceType,
    pub control_socket: PathBuf,
    pub vrf: u32,
    pub mtu: u32,
    pub socket_base: PathBuf,
    pub mode: Mode,
    pub data_dir: PathBuf,
    pub nexthop_range: (u32, u32),
    pub ipam: IpamConf,
    pub prev_result: Option<Value>,
    /// The configuration as it came, for a delegated IPAM plugin.
    pub raw: Vec<u8>,
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn req_str(obj: &Map<String, Value>, path: &str, name: &str) -> Result<String> {
    match field(obj, name) {
        None => Err(CniError::config(path, "is required")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(v) => Err(CniError::config(
            path,
            format!("must be a non-empty string, not {v}"),
        )),
    }
}

fn opt_str(obj: &Map<String, Value>, path: &str, name: &str) -> Result<Option<String>> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(v) => Err(CniError::config(
            path,
            format!("must be a non-empty string, not {v}"),
        )),
    }
}

fn opt_u32(obj: &Map<String, Value>, path: &str, name: &str) -> Result<Option<u32>> {
    match field(obj, name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| CniError::config(path, format!("must be an unsigned integer, not {v}"))),
    }
}

fn abs_path(path: &str, s: String) -> Result<PathBuf> {
    let p = PathBuf::from(&s);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(CniError::config(
            path,
            format!("{s:?} must be an absolute path without `..`"),
        ));
    }
    Ok(p)
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(v))
    }
}

/// The last address of `p`.
pub fn prefix_last(p: &IpPrefix) -> u128 {
    let bits = if p.is_ipv4() { 32 } else { 128 };
    let host = bits - u32::from(p.prefix_len());
    let span = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    to_u128(p.addr()) | span
}

/// Whether two prefixes share an address.
pub fn overlaps(a: &IpPrefix, b: &IpPrefix) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && to_u128(a.addr()) <= prefix_last(b)
        && to_u128(b.addr()) <= prefix_last(a)
}

fn parse_ip(path: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| CniError::config(path, format!("{s:?} is not an IP address")))
}

fn parse_pool(path: &str, v: &Value) -> Result<PoolConf> {
    let Some(obj) = v.as_object() else {
        return Err(CniError::config(path, "must be an object"));
    };
    let name = req_str(obj, &format!("{path}.name"), "name")?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(CniError::config(
            &format!("{path}.name"),
            format!("{name:?} may hold only A-Z a-z 0-9 - _ ."),
        ));
    }
    let spath = format!("{path}.subnet");
    let subnet_text = req_str(obj, &spath, "subnet")?;
    let subnet: IpPrefix = subnet_text
        .parse()
        .map_err(|e| CniError::config(&spath, format!("{subnet_text:?}: {e}")))?;
    let v4 = subnet.is_ipv4();
    let (host_bits, max_len) = if v4 { (32u8, 30u8) } else { (128u8, 126u8) };
    if subnet.prefix_len() > max_len {
        return Err(CniError::config(
            &spath,
            format!("{subnet} leaves no room for a gateway and a pod: use /{max_len} or shorter"),
        ));
    }
    let _ = host_bits;
    let net = to_u128(subnet.addr());
    let bcast = prefix_last(&subnet);
    let gateway = match opt_str(obj, &format!("{path}.gateway"), "gateway")? {
        Some(g) => parse_ip(&format!("{path}.gateway"), &g)?,
        None => from_u128(net + 1, v4),
    };
    let inside =
        |ip: IpAddr| subnet.contains(ip) && to_u128(ip) != net && (!v4 || to_u128(ip) != bcast);
    if !inside(gateway) {
        return Err(CniError::config(
            &format!("{path}.gateway"),
            format!("{gateway} is not a host address of {subnet}"),
        ));
    }
    let first = match opt_str(obj, &format!("{path}.rangeStart"), "rangeStart")? {
        Some(s) => parse_ip(&format!("{path}.rangeStart"), &s)?,
        None => from_u128(net + 1, v4),
    };
    let last = match opt_str(obj, &format!("{path}.rangeEnd"), "rangeEnd")? {
        Some(s) => parse_ip(&format!("{path}.rangeEnd"), &s)?,
        None => from_u128(if v4 { bcast - 1 } else { bcast }, v4),
    };
    for (f, ip) in [("rangeStart", first), ("rangeEnd", last)] {
        if !inside(ip) {
            return Err(CniError::config(
                &format!("{path}.{f}"),
                format!("{ip} is not a host address of {subnet}"),
            ));
        }
    }
    if to_u128(first) > to_u128(last) {
        return Err(CniError::config(
            &format!("{path}.rangeEnd"),
            format!("{last} comes before rangeStart {first}"),
        ));
    }
    let pool = PoolConf {
        name,
        subnet,
        gateway,
        first,
        last,
    };
    if pool.size() == 0 {
        return Err(CniError::config(
            &format!("{path}.rangeStart"),
            "the range holds only the gateway",
        ));
    }
    Ok(pool)
}

/// Parses the built-in IPAM's pools from `ipam` (shared by the plugin and `vrouter-ipam`).
pub fn parse_pools(ipam: &Map<String, Value>) -> Result<Vec<PoolConf>> {
    let Some(list) = field(ipam, "pools") else {
        return Err(CniError::config(
            "ipam.pools",
            "is required: a list of {\"name\", \"subnet\"} pools",
        ));
    };
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        return Err(CniError::config("ipam.pools", "must be a non-empty list"));
    };
    let mut pools: Vec<PoolConf> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let path = format!("ipam.pools[{i}]");
        let p = parse_pool(&path, v)?;
        if let Some(o) = pools.iter().find(|o| o.name == p.name) {
            return Err(CniError::config(
                &format!("{path}.name"),
                format!(
                    "{:?} names two pools ({} and {})",
                    p.name, o.subnet, p.subnet
                ),
            ));
        }
        if let Some(o) = pools.iter().find(|o| overlaps(&o.subnet, &p.subnet)) {
            return Err(CniError::config(
                &format!("{path}.subnet"),
                format!("{} overlaps pool {:?} ({})", p.subnet, o.name, o.subnet),
            ));
        }
        pools.push(p);
    }
    Ok(pools)
}

/// The store directory: `ipam.dataDir`, else `dataDir`, else the default.
pub fn data_dir(top: &Map<String, Value>) -> Result<PathBuf> {
    let ipam = field(top, "ipam").and_then(Value::as_object);
    if let Some(d) = ipam
        .map(|i| opt_str(i, "ipam.dataDir", "dataDir"))
        .transpose()?
        .flatten()
    {
        return abs_path("ipam.dataDir", d);
    }
    match opt_str(top, "dataDir", "dataDir")? {
        Some(d) => abs_path("dataDir", d),
        None => Ok(PathBuf::from(DEFAULT_DATA_DIR)),
    }
}

/// The top-level object, with `cniVersion` checked.
pub fn parse_object(raw: &[u8]) -> Result<Map<String, Value>> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            format!("the network configuration on stdin is not JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = v else {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "the network configuration on stdin must be a JSON object",
        ));
    };
    let version = req_str(&obj, "cniVersion", "cniVersion")?;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "field `cniVersion`: {version:?} is not supported; use one of {SUPPORTED_VERSIONS:?}"
            ),
        ));
    }
    Ok(obj)
}

impl NetConf {
    pub fn parse(raw: &[u8]) -> Result<NetConf> {
        let obj = parse_object(raw)?;
        let cni_version = req_str(&obj, "cniVersion", "cniVersion")?;
        let name = req_str(&obj, "name", "name")?;
        let _ = req_str(&obj, "type", "type")?;
        let it = req_str(&obj, "interfaceType", "interfaceType")?;
        let interface_type = match it.as_str() {
            "vhost-user" => InterfaceType::VhostUser,
            "veth" => InterfaceType::Veth,
            other => {
                return Err(CniError::config(
                    "interfaceType",
                    format!("{other:?} is not an interface type: use \"vhost-user\" (DPDK pods) or \"veth\" (kernel pods)"),
                ))
            }
        };
        let control_socket = match opt_str(&obj, "controlSocket", "controlSocket")? {
            Some(s) => abs_path("controlSocket", s)?,
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        };
        let vrf = opt_u32(&obj, "vrf", "vrf")?.ok_or_else(|| {
            CniError::config("vrf", "is required: the VRF the pods join (1 or more)")
        })?;
        if vrf == 0 {
            return Err(CniError::config(
                "vrf",
                "0 is the fabric VRF; pods belong in a VRF of their own (1 or more)",
            ));
        }
        let mtu = opt_u32(&obj, "mtu", "mtu")?.unwrap_or(1500);
        if !(1280..=9216).contains(&mtu) {
            return Err(CniError::config(
                "mtu",
                format!("{mtu} is outside 1280..=9216"),
            ));
        }
        let socket_base = match opt_str(&obj, "socketBase", "socketBase")? {
            Some(s) => abs_path("socketBase", s)?,
            None => PathBuf::from(DEFAULT_SOCKET_BASE),
        };
        let mode = match opt_str(&obj, "vhostuserMode", "vhostuserMode")?.as_deref() {
            None | Some("server") => Mode::Server,
            Some("client") => Mode::Client,
            Some(other) => {
                return Err(CniError::config(
                    "vhostuserMode",
                    format!("{other:?} is not a mode: use \"server\" (vrouterd creates the socket) or \"client\" (the pod does)"),
                ))
            }
        };
        if interface_type == InterfaceType::Veth {
            for f in ["socketBase", "vhostuserMode"] {
                if field(&obj, f).is_some() {
                    return Err(CniError::new(
                        code::UNSUPPORTED_FIELD,
                        format!("field `{f}`: only for \"interfaceType\": \"vhost-user\"; remove it for veth pods"),
                    ));
                }
            }
        }
        let nexthop_range = match field(&obj, "nexthopRange") {
            None => DEFAULT_NEXTHOP_RANGE,
            Some(v) => {
                let pair = v
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)));
                match pair {
                    Some((a, b)) if a <= b && b <= 65535 => (a as u32, b as u32),
                    _ => {
                        return Err(CniError::config(
                            "nexthopRange",
                            format!("{v} must be [first, last] with first <= last <= 65535"),
                        ))
                    }
                }
            }
        };
        let Some(ipam) = field(&obj, "ipam") else {
            return Err(CniError::config(
                "ipam",
                "is required: {\"type\": \"vrouter-ipam\", \"pools\": [...]} or another IPAM plugin",
            ));
        };
        let Some(ipam) = ipam.as_object() else {
            return Err(CniError::config("ipam", "must be an object"));
        };
        let ipam_type = req_str(ipam, "ipam.type", "type")?;
        let ipam = if ipam_type == BUILTIN_IPAM {
            IpamConf::Builtin {
                pools: parse_pools(ipam)?,
            }
        } else {
            if ipam_type.contains('/') || ipam_type.starts_with('.') {
                return Err(CniError::config(
                    "ipam.type",
                    format!("{ipam_type:?} must be a plugin name found on CNI_PATH"),
                ));
            }
            IpamConf::Delegate { plugin: ipam_type }
        };
        let data_dir = data_dir(&obj)?;
        Ok(NetConf {
            cni_version,
            name,
            interface_type,
            control_socket,
            vrf,
            mtu,
            socket_base,
            mode,
            data_dir,
            nexthop_range,
            ipam,
            prev_result: field(&obj, "prevResult").cloned(),
            raw: raw.to_vec(),
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the environment through `get` (the process environment in the binaries).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let command = get("CNI_COMMAND").unwrap_or_default();
        if command.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND is not set: ADD, DEL, CHECK or VERSION",
            ));
        }
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Ok(Env {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args,
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Checks what every attachment command needs: a container id and an interface name
    /// within the spec's rules.
    pub fn check_attachment(&self) -> Result<()> {
        let id_ok = !self.container_id.is_empty()
            && self
                .container_id
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !id_ok {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_CONTAINERID {:?} must be set: letters, digits, _ . -, starting with a letter or digit",
                    self.container_id
                ),
            ));
        }
        let name_ok = !self.ifname.is_empty()
            && self.ifname.len() <= 15
            && self.ifname != "."
            && self.ifname != ".."
            && self
                .ifname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME {:?} must be an interface name: 1..=15 of letters, digits, _ . -",
                    self.ifname
                ),
            ));
        }
        Ok(())
    }

    /// The pod's identity for its socket directory: `K8S_POD_UID` from `CNI_ARGS`, or the
    /// container id when the runtime is not Kubernetes.
    pub fn pod_uid(&self) -> Result<String> {
        let uid = self
            .arg("K8S_POD_UID")
            .unwrap_or(&self.container_id)
            .to_string();
        let ok = !uid.is_empty()
            && uid != "."
            && uid != ".."
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS K8S_POD_UID {uid:?} must be one path component of letters, digits, _ . -"),
            ));
        }
        Ok(uid)
    }
}

/// Whether `p` lies within `base` (both absolute, no `..`).
pub fn under(p: &Path, base: &Path) -> bool {
    p.starts_with(base) && p != base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: serde_json::Value) -> Result<NetConf> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "net1", "type": "vrouter-cni",
            "interfaceType": "vhost-user", "vrf": 1,
            "ipam": {"type": "vrouter-ipam", "pools": [
                {"name": "v4", "subnet": "198.18.1.0/24"},
                {"name": "v6", "subnet": "2001:db8:18:1::/64"}]}
        })
    }

    #[test]
    fn defaults_fill_in_and_pools_get_gateway_and_range() {
        let c = conf(base()).expect("valid");
        assert_eq!(c.mode, Mode::Server);
        assert_eq!(c.socket_base, PathBuf::from(DEFAULT_SOCKET_BASE));
        let IpamConf::Builtin { pools } = c.ipam else {
            panic!("builtin")
        };
        assert_eq!(pools[0].gateway.to_string(), "198.18.1.1");
        assert_eq!(pools[0].first.to_string(), "198.18.1.1");
        assert_eq!(pools[0].last.to_string(), "198.18.1.254");
        assert_eq!(pools[0].size(), 253);
        assert_eq!(pools[1].gateway.to_string(), "2001:db8:18:1::1");
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: &[(&str, serde_json::Value)] = &[
            (
                "`interfaceType`",
                serde_json::json!({"interfaceType": "macvtap"}),
            ),
            (
                "`interfaceType`",
                serde_json::json!({"interfaceType": null}),
            ),
            ("`vrf`", serde_json::json!({"vrf": null})),
            ("`vrf`", serde_json::json!({"vrf": 0})),
            ("`name`", serde_json::json!({"name": ""})),
            ("`socketBase`", serde_json::json!({"socketBase": "run/x"})),
            (
                "`vhostuserMode`",
                serde_json::json!({"vhostuserMode": "both"}),
            ),
            ("`mtu`", serde_json::json!({"mtu": 100})),
            ("`ipam`", serde_json::json!({"ipam": null})),
            (
                "`ipam.pools`",
                serde_json::json!({"ipam": {"type": "vrouter-ipam"}}),
            ),
            (
                "`ipam.pools[1].subnet`",
                serde_json::json!({"ipam": {"type": "vrouter-ipam", "pools": [
                    {"name": "a", "subnet": "198.18.0.0/16"}, {"name": "b", "subnet": "198.18.4.0/24"}]}}),
            ),
            (
                "`ipam.pools[0].subnet`",
                serde_json::json!({"ipam": {"type": "vrouter-ipam", "pools": [
                    {"name": "a", "subnet": "198.18.0.1/16"}]}}),
            ),
            (
                "`ipam.pools[0].gateway`",
                serde_json::json!({"ipam": {"type": "vrouter-ipam", "pools": [
                    {"name": "a", "subnet": "198.18.0.0/24", "gateway": "198.18.1.1"}]}}),
            ),
        ];
        for (name, patch) in cases {
            let mut v = base();
            for (k, val) in patch.as_object().expect("object") {
                v[k] = val.clone();
            }
            let e = conf(v).expect_err(name);
            assert_eq!(e.code, code::INVALID_CONFIG, "{name}: {e}");
            assert!(e.msg.contains(name), "{name} not in {e}");
        }
        let mut v = base();
        v["cniVersion"] = "0.2.0".into();
        assert_eq!(
            conf(v).expect_err("version").code,
            code::INCOMPATIBLE_VERSION
        );
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let p = |s: &str| s.parse::<IpPrefix>().expect("prefix");
        assert!(overlaps(&p("198.18.0.0/16"), &p("198.18.255.0/24")));
        assert!(overlaps(&p("198.18.255.0/24"), &p("198.18.0.0/16")));
        assert!(!overlaps(&p("198.18.0.0/24"), &p("198.18.1.0/24")));
        assert!(!overlaps(&p("198.18.0.0/24"), &p("2001:db8::/32")));
        assert!(overlaps(&p("::/0"), &p("2001:db8::/32")));
    }

    #[test]
    fn env_parses_cni_args_and_checks_names() {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "net1"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_UID=1234-5678;K8S_POD_NAME=x",
            ),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let env = Env::read(get).expect("env");
        env.check_attachment().expect("valid");
        assert_eq!(env.pod_uid().expect("uid"), "1234-5678");
        let bad = Env {
            ifname: "much-too-long-name".into(),
            ..env.clone()
        };
        assert_eq!(
            bad.check_attachment().expect_err("long").code,
            code::INVALID_ENV
        );
        let bad = Env {
            args: vec![("K8S_POD_UID".into(), "../etc".into())],
            ..env
        };
        assert!(bad.pod_uid().is_err());
    }
}
