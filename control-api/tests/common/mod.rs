//! Test harness of control-api: an honest in-memory dataplane and a real server on a real unix
//! socket in a temporary directory.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use control_api::api::{
    BridgeEntry, DropStats, FlowEntry, FlowPage, FlowQuery, FlowStats, Health, HealthStatus,
    IpPrefix, LcoreHealth, LcoreStats, MacAddr, MempoolHealth, MplsTarget, Nexthop, Policy,
    PollGaps, RingHealth, Route, Stats, VhostUserMode, VifCounters, VifHealth, VifState, VifStatus,
};
use control_api::{
    Change, ControlSocket, Controller, ControllerConfig, Dataplane, DataplaneError,
    DataplaneErrorKind, ServeOptions, TableChange, VifKind, VifSpec,
};

/// What the in-memory dataplane holds: the same tables vrouterd would program.
#[derive(Default)]
pub struct MemState {
    pub log: Vec<String>,
    pub vrfs: BTreeSet<u32>,
    pub vifs: BTreeMap<u32, VifSpec>,
    /// Server-mode vhost-user vifs really listen, as vrouterd's vhost core would.
    pub listeners: BTreeMap<u32, UnixListener>,
    pub nexthops: BTreeMap<u32, Nexthop>,
    pub routes: BTreeMap<(u32, IpPrefix), Route>,
    pub bridge: BTreeMap<(u32, MacAddr), BridgeEntry>,
    pub mpls: BTreeMap<u32, MplsTarget>,
    pub vxlan: BTreeMap<u32, u32>,
    pub policies: BTreeMap<u32, Policy>,
    pub counters: BTreeMap<String, VifCounters>,
    pub drops: BTreeMap<String, u64>,
    pub flows: Vec<FlowEntry>,
}

#[derive(Default)]
pub struct MemDataplane {
    pub state: Mutex<MemState>,
    /// The next `apply` fails with this error (and changes nothing).
    pub fail_next: Mutex<Option<DataplaneError>>,
    /// After this many more `apply`s succeed, the next fails with this error.
    pub fail_after: Mutex<Option<(usize, DataplaneError)>>,
    /// Vif adds wait here while it is armed, as vrouterd's wait for its vhost core.
    pub hold: Hold,
}

/// A gate in the dataplane's `apply` of vif adds.
#[derive(Default)]
pub struct Hold {
    state: Mutex<HoldState>,
    changed: Condvar,
}

#[derive(Default)]
struct HoldState {
    armed: bool,
    waiting: usize,
}

impl Hold {
    pub fn arm(&self) {
        self.state.lock().unwrap().armed = true;
    }

    /// Open the gate (for the adds waiting and those to come).
    pub fn release(&self) {
        self.state.lock().unwrap().armed = false;
        self.changed.notify_all();
    }

    /// Whether an add is waiting at the gate, after waiting up to `timeout` for one.
    pub fn wait_for_waiter(&self, timeout: Duration) -> bool {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| s.waiting == 0)
            .unwrap();
        st.waiting > 0
    }

    fn pass(&self) {
        let mut st = self.state.lock().unwrap();
        st.waiting += 1;
        self.changed.notify_all();
        while st.armed {
            st = self.changed.wait(st).unwrap();
        }
        st.waiting -= 1;
    }
}

impl MemDataplane {
    pub fn fail_next(&self, kind: DataplaneErrorKind, message: &str) {
        *self.fail_next.lock().unwrap() = Some(DataplaneError::new(kind, message));
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MemState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

impl Dataplane for MemDataplane {
    fn apply(&self, change: &Change) -> Result<(), DataplaneError> {
        if let Some(e) = self.fail_next.lock().unwrap().take() {
            return Err(e);
        }
        {
            let mut after = self.fail_after.lock().unwrap();
            match after.as_mut() {
                Some((0, _)) => return Err(after.take().expect("armed").1),
                Some((n, _)) => *n -= 1,
                None => {}
            }
        }
        if matches!(change, Change::VifAdd { .. }) {
            self.hold.pass();
        }
        let mut s = self.state.lock().unwrap();
        s.log.push(change.op().to_string());
        match change.clone() {
            Change::Table(TableChange::VrfAdd { vrf }) => {
                s.vrfs.insert(vrf);
            }
            Change::Table(TableChange::VrfDel { vrf }) => {
                s.vrfs.remove(&vrf);
            }
            Change::VifAdd { vif } => {
                if let VifKind::VhostUser {
                    socket,
                    mode: VhostUserMode::Server,
                    ..
                } = &vif.kind
                {
                    let _ = std::fs::remove_file(socket);
                    let l = UnixListener::bind(socket).map_err(|e| {
                        DataplaneError::new(
                            DataplaneErrorKind::Internal,
                            format!("bind {}: {e}", socket.display()),
                        )
                    })?;
                    s.listeners.insert(vif.index, l);
                }
                s.vifs.insert(vif.index, vif);
            }
            Change::VifDel { vif } => {
                s.listeners.remove(&vif.index);
                s.vifs.remove(&vif.index);
                s.policies.remove(&vif.index);
            }
            Change::Table(TableChange::NexthopSet { id, nexthop }) => {
                s.nexthops.insert(id, nexthop);
            }
            Change::Table(TableChange::NexthopDel { id }) => {
                s.nexthops.remove(&id);
            }
            Change::Table(TableChange::RouteSet { vrf, route }) => {
                s.routes.insert((vrf, route.prefix), route);
            }
            Change::Table(TableChange::RouteDel { vrf, prefix }) => {
                s.routes.remove(&(vrf, prefix));
            }
            Change::Table(TableChange::BridgeSet { vrf, entry }) => {
                s.bridge.insert((vrf, entry.mac), entry);
            }
            Change::Table(TableChange::BridgeDel { vrf, mac }) => {
                s.bridge.remove(&(vrf, mac));
            }
            Change::Table(TableChange::MplsSet { label, nexthop }) => {
                s.mpls.insert(label, MplsTarget::Nexthop(nexthop));
            }
            Change::Table(TableChange::MplsVrfSet { label, vrf }) => {
                s.mpls.insert(label, MplsTarget::Vrf(vrf));
            }
            Change::Table(TableChange::MplsDel { label }) => {
                s.mpls.remove(&label);
            }
            Change::Table(TableChange::VxlanSet { vni, vrf }) => {
                s.vxlan.insert(vni, vrf);
            }
            Change::Table(TableChange::VxlanDel { vni }) => {
                s.vxlan.remove(&vni);
            }
            Change::PolicySet { vif, policy, .. } => {
                s.policies.insert(vif, policy);
            }
            Change::PolicyDel { vif, .. } => {
                s.policies.remove(&vif);
            }
            // Recorded in the log only: the model keeps what tests read back.
            Change::NatPoolSet { .. }
            | Change::NatPoolDel { .. }
            | Change::SnatSet { .. }
            | Change::SnatDel { .. }
            | Change::FloatingIpSet { .. }
            | Change::FloatingIpDel { .. }
            | Change::ServiceSet { .. }
            | Change::ServiceDel { .. }
            | Change::LinkLocalSet { .. }
            | Change::LinkLocalDel { .. } => {}
        }
        Ok(())
    }

    fn vif_status(&self, vif: &VifSpec) -> VifStatus {
        let s = self.state.lock().unwrap();
        let state = match &vif.kind {
            VifKind::VhostUser {
                mode: VhostUserMode::Server,
                ..
            } => VifState::Listening,
            VifKind::VhostUser { .. } => VifState::Connecting,
            _ => VifState::Up,
        };
        VifStatus {
            state,
            features: None,
            queues_enabled: 0,
            lcore: Some(1),
            broken: None,
            counters: s.counters.get(&vif.name).copied().unwrap_or_default(),
            queue_pairs: Vec::new(),
        }
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        let s = self.state.lock().unwrap();
        let mut l = LcoreStats {
            lcore: 1,
            busy_ratio: 0.25,
            poll_gaps: PollGaps {
                over_10us: 7,
                over_100us: 2,
                over_1ms: 1,
            },
            ..Default::default()
        };
        for c in s.counters.values() {
            l.rx_packets += c.rx_packets;
            l.rx_bytes += c.rx_bytes;
            l.tx_packets += c.tx_packets;
            l.tx_bytes += c.tx_bytes;
            l.drops += c.drops;
        }
        Ok(Stats {
            rx_packets: l.rx_packets,
            rx_bytes: l.rx_bytes,
            tx_packets: l.tx_packets,
            tx_bytes: l.tx_bytes,
            drops: l.drops,
            nat_translated: 0,
            lcores: vec![l],
        })
    }

    fn dropstats(&self) -> Result<DropStats, DataplaneError> {
        let s = self.state.lock().unwrap();
        Ok(DropStats {
            total: s.drops.values().sum(),
            reasons: s.drops.clone(),
        })
    }

    fn health(&self) -> Result<Health, DataplaneError> {
        let s = self.state.lock().unwrap();
        Ok(Health {
            status: HealthStatus::Ok,
            mempools: vec![MempoolHealth {
                name: "mbuf_pool_0".into(),
                in_use: 512,
                size: 8192,
            }],
            rings: vec![RingHealth {
                name: "lcore1_in".into(),
                used: 0,
                size: 1024,
            }],
            lcores: vec![LcoreHealth {
                lcore: 1,
                role: "forwarding".into(),
                busy_ratio: 0.25,
            }],
            vifs: s
                .vifs
                .values()
                .map(|v| VifHealth {
                    name: v.name.clone(),
                    state: VifState::Up,
                })
                .collect(),
            problems: vec![],
        })
    }

    fn flows(&self, q: &FlowQuery) -> Result<FlowPage, DataplaneError> {
        let s = self.state.lock().unwrap();
        let start: u64 = match &q.cursor {
            Some(c) => c.parse().map_err(|_| {
                DataplaneError::new(
                    DataplaneErrorKind::Rejected,
                    format!("cursor {c:?} is not one this vrouter gave out"),
                )
            })?,
            None => 0,
        };
        let limit = q.limit.unwrap_or(100) as usize;
        let mut matching = s
            .flows
            .iter()
            .filter(|f| f.index >= start && q.vrf.is_none_or(|v| f.vrf == v));
        let flows: Vec<FlowEntry> = matching.by_ref().take(limit).cloned().collect();
        let next_cursor = matching.next().map(|f| f.index.to_string());
        Ok(FlowPage { flows, next_cursor })
    }

    fn flush_flows(&self) -> Result<u64, DataplaneError> {
        let mut s = self.state.lock().unwrap();
        let n = s.flows.len() as u64;
        s.flows.clear();
        Ok(n)
    }

    fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let s = self.state.lock().unwrap();
        Ok(FlowStats {
            capacity: 524_288,
            active: s.flows.len() as u64,
            created: 10,
            aged: 2,
            evicted: 1,
            table_full_drops: 0,
            export: None,
        })
    }
}

/// A real server on a real unix socket in a temp dir; stopped (and checked to have removed its
/// socket) on drop.
pub struct TestServer {
    pub tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub socket: PathBuf,
    pub dp: Arc<MemDataplane>,
    pub ctrl: Arc<Controller>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), control_api::Error>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(ServeOptions::default())
    }

    pub fn start_with(options: ServeOptions) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let base = root.join("run");
        let socket = root.join("ctl/vrouter.sock");
        let dp = Arc::new(MemDataplane::default());
        let ctrl = Arc::new(
            Controller::new(
                ControllerConfig {
                    socket_base: base.clone(),
                    vrouter_mac: MacAddr::VROUTER_DEFAULT,
                },
                dp.clone(),
            )
            .unwrap(),
        );
        let bound = ControlSocket::bind(&socket).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = ctrl.clone();
        let thread = std::thread::spawn(move || {
            // The runtime vrouterd serves on: one thread, at most one blocking thread.
            let rt = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(control_api::serve(bound, c, options, async {
                let _ = rx.await;
            }))
        });
        TestServer {
            tmp,
            base,
            socket,
            dp,
            ctrl,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> control_api::Client {
        control_api::Client::new(&self.socket)
    }

    /// Stop the server and return what `serve` returned.
    pub fn stop(&mut self) -> Result<(), control_api::Error> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap(),
            None => Ok(()),
        }
    }

    /// Every path below the temp dir (sorted), to show a refusal changed nothing on disk.
    pub fn snapshot(&self) -> Vec<PathBuf> {
        snapshot(self.tmp.path())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failed test may leave a change waiting at the gate; the server waits for it.
        self.dp.hold.release();
        let _ = self.stop();
    }
}

pub fn snapshot(root: &Path) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        out.push(p.to_path_buf());
        if std::fs::symlink_metadata(p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

/// One request with a JSON body (or none): the status and the JSON answer (`null` if none).
pub async fn call(
    s: &TestServer,
    method: hyper::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    raw(s, method, path, body).await
}

/// One request with a body as bytes: the status and the JSON answer (`null` if none).
pub async fn raw(
    s: &TestServer,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    let control_api::client::RawResponse { status, body, .. } =
        s.client().raw(method, path, body).await.unwrap();
    let v = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
    };
    (status, v)
}

/// Asserts an error answer: its status, its code, and a message mentioning every needle.
#[track_caller]
pub fn refused_naming(got: (u16, serde_json::Value), status: u16, code: &str, needles: &[&str]) {
    let (st, v) = got;
    assert_eq!(st, status, "{v}");
    assert_eq!(v["error"], code, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} should mention {n:?}");
    }
}

/// [`refused_naming`] with one needle.
#[track_caller]
pub fn refused(got: (u16, serde_json::Value), status: u16, code: &str, needle: &str) {
    refused_naming(got, status, code, &[needle]);
}
