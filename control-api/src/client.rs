//! A client of the control API over its unix socket: one HTTP/1.1 connection per request.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    BridgeEntry, DropStats, ErrorBody, FloatingIp, FloatingIpInfo, FlowPage, FlowQuery, FlowStats,
    FlushResult, Health, IpPrefix, MacAddr, Mirror, MirrorInfo, MplsEntry, MplsRequest, MplsTarget,
    NatPool, NatPoolInfo, Nexthop, NexthopInfo, Policy, Route, SnatAttachment, Stats, TraceRequest,
    TraceResult, VifInfo, VifRequest, VrfInfo, VxlanEntry, VxlanRequest,
};
use crate::error::Error;

/// A raw answer: status and body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send one request with an optional raw body and return whatever came back.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, Error> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "vrouter");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Http(e.to_string()))?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    /// Send `body` as JSON; a 2xx answer is returned, anything else becomes [`Error::Api`].
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<RawResponse, Error> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| Error::Decode(format!("cannot encode request: {e}")))?;
        let resp = self.raw(method, path, body).await?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        match serde_json::from_slice::<ErrorBody>(&resp.body) {
            Ok(e) => Err(Error::Api {
                status: resp.status,
                code: e.error,
                message: e.message,
            }),
            Err(_) => Err(Error::Api {
                status: resp.status,
                code: "unknown".to_string(),
                message: String::from_utf8_lossy(&resp.body).into_owned(),
            }),
        }
    }

    /// JSON in, JSON out.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let resp = self.send(method, path, body).await?;
        serde_json::from_slice(&resp.body).map_err(|e| Error::Decode(format!("{path}: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> Result<(), Error> {
        self.send::<()>(Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    pub async fn vrf_add(&self, vrf: u32) -> Result<Option<VrfInfo>, Error> {
        self.call::<(), _>(Method::PUT, &format!("/vrfs/{vrf}"), None)
            .await
    }
    pub async fn vrf_del(&self, vrf: u32) -> Result<(), Error> {
        self.delete(&format!("/vrfs/{vrf}")).await
    }
    pub async fn vrfs(&self) -> Result<Vec<VrfInfo>, Error> {
        self.get("/vrfs").await
    }

    pub async fn vrf_routing_set(
        &self,
        vrf: u32,
        r: &crate::api::VrfRouting,
    ) -> Result<crate::api::VrfRouting, Error> {
        self.call(Method::PUT, &format!("/vrfs/{vrf}/routing"), Some(r))
            .await
    }
    pub async fn vrf_routing(&self, vrf: u32) -> Result<crate::api::VrfRouting, Error> {
        self.get(&format!("/vrfs/{vrf}/routing")).await
    }
    pub async fn vrf_routing_del(&self, vrf: u32) -> Result<(), Error> {
        self.delete(&format!("/vrfs/{vrf}/routing")).await
    }

    pub async fn vif_add(&self, req: &VifRequest) -> Result<VifInfo, Error> {
        self.call(Method::POST, "/vifs", Some(req)).await
    }
    pub async fn vif_del(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/vifs/{name}")).await
    }
    pub async fn vifs(&self) -> Result<Vec<VifInfo>, Error> {
        self.get("/vifs").await
    }
    pub async fn vif(&self, name: &str) -> Result<VifInfo, Error> {
        self.get(&format!("/vifs/{name}")).await
    }

    pub async fn nexthop_set(&self, id: u32, nh: &Nexthop) -> Result<NexthopInfo, Error> {
        self.call(Method::PUT, &format!("/nexthops/{id}"), Some(nh))
            .await
    }
    pub async fn nexthop_del(&self, id: u32) -> Result<(), Error> {
        self.delete(&format!("/nexthops/{id}")).await
    }
    pub async fn nexthops(&self) -> Result<Vec<NexthopInfo>, Error> {
        self.get("/nexthops").await
    }
    pub async fn nexthop(&self, id: u32) -> Result<NexthopInfo, Error> {
        self.get(&format!("/nexthops/{id}")).await
    }

    pub async fn route_set(&self, vrf: u32, route: &Route) -> Result<Route, Error> {
        self.call(Method::PUT, &format!("/vrfs/{vrf}/routes"), Some(route))
            .await
    }
    /// `PATCH /vrfs/{vrf}/routes`: many routes set and removed as one change.
    pub async fn routes_batch(
        &self,
        vrf: u32,
        batch: &crate::api::RouteBatch,
    ) -> Result<crate::api::RouteBatchResult, Error> {
        self.call(Method::PATCH, &format!("/vrfs/{vrf}/routes"), Some(batch))
            .await
    }
    pub async fn route_del(&self, vrf: u32, prefix: &IpPrefix) -> Result<(), Error> {
        self.delete(&format!("/vrfs/{vrf}/routes/{prefix}")).await
    }
    pub async fn routes(&self, vrf: u32) -> Result<Vec<Route>, Error> {
        self.get(&format!("/vrfs/{vrf}/routes")).await
    }

    pub async fn bridge_set(&self, vrf: u32, entry: &BridgeEntry) -> Result<BridgeEntry, Error> {
        self.call(Method::PUT, &format!("/vrfs/{vrf}/bridge"), Some(entry))
            .await
    }
    pub async fn bridge_del(&self, vrf: u32, mac: MacAddr) -> Result<(), Error> {
        self.delete(&format!("/vrfs/{vrf}/bridge/{mac}")).await
    }
    pub async fn bridge(&self, vrf: u32) -> Result<Vec<BridgeEntry>, Error> {
        self.get(&format!("/vrfs/{vrf}/bridge")).await
    }

    /// `PUT /mpls/{label}` to a nexthop.
    pub async fn mpls_set(&self, label: u32, nexthop: u32) -> Result<MplsEntry, Error> {
        self.mpls_set_target(label, MplsTarget::Nexthop(nexthop))
            .await
    }
    /// `PUT /mpls/{label}` to a VRF (a per-VRF label).
    pub async fn mpls_set_vrf(&self, label: u32, vrf: u32) -> Result<MplsEntry, Error> {
        self.mpls_set_target(label, MplsTarget::Vrf(vrf)).await
    }
    pub async fn mpls_set_target(
        &self,
        label: u32,
        target: MplsTarget,
    ) -> Result<MplsEntry, Error> {
        self.call(
            Method::PUT,
            &format!("/mpls/{label}"),
            Some(&MplsRequest::from(target)),
        )
        .await
    }
    pub async fn mpls_del(&self, label: u32) -> Result<(), Error> {
        self.delete(&format!("/mpls/{label}")).await
    }
    pub async fn mpls(&self) -> Result<Vec<MplsEntry>, Error> {
        self.get("/mpls").await
    }

    pub async fn vxlan_set(&self, vni: u32, vrf: u32) -> Result<VxlanEntry, Error> {
        self.call(
            Method::PUT,
            &format!("/vxlan/{vni}"),
            Some(&VxlanRequest { vrf }),
        )
        .await
    }
    pub async fn vxlan_del(&self, vni: u32) -> Result<(), Error> {
        self.delete(&format!("/vxlan/{vni}")).await
    }
    pub async fn vxlan(&self) -> Result<Vec<VxlanEntry>, Error> {
        self.get("/vxlan").await
    }

    pub async fn policy_set(&self, vif: &str, policy: &Policy) -> Result<Policy, Error> {
        self.call(Method::PUT, &format!("/vifs/{vif}/policy"), Some(policy))
            .await
    }
    pub async fn policy_del(&self, vif: &str) -> Result<(), Error> {
        self.delete(&format!("/vifs/{vif}/policy")).await
    }
    pub async fn policy(&self, vif: &str) -> Result<Policy, Error> {
        self.get(&format!("/vifs/{vif}/policy")).await
    }

    /// Pins queue pair `queue` of vhost-user vif `vif` to forwarding lcore `lcore`.
    pub async fn queue_pin(&self, vif: &str, queue: u32, lcore: u32) -> Result<(), Error> {
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                &format!("/vifs/{vif}/queues/{queue}"),
                Some(&crate::api::QueuePin { lcore }),
            )
            .await?;
        Ok(())
    }

    pub async fn mirror_set(&self, vif: &str, m: &Mirror) -> Result<Mirror, Error> {
        self.call(Method::PUT, &format!("/vifs/{vif}/mirror"), Some(m))
            .await
    }
    pub async fn mirror(&self, vif: &str) -> Result<MirrorInfo, Error> {
        self.get(&format!("/vifs/{vif}/mirror")).await
    }
    pub async fn mirror_del(&self, vif: &str) -> Result<(), Error> {
        self.delete(&format!("/vifs/{vif}/mirror")).await
    }

    /// Starts tracing the next `count` packets received on `vif`.
    pub async fn trace_start(&self, vif: &str, count: u32) -> Result<TraceRequest, Error> {
        let req = TraceRequest { count };
        self.call(Method::PUT, &format!("/vifs/{vif}/trace"), Some(&req))
            .await
    }
    /// The packets traced on `vif` since the last read.
    pub async fn trace_read(&self, vif: &str) -> Result<TraceResult, Error> {
        self.get(&format!("/vifs/{vif}/trace")).await
    }
    pub async fn trace_stop(&self, vif: &str) -> Result<(), Error> {
        self.delete(&format!("/vifs/{vif}/trace")).await
    }

    pub async fn nat_pool_set(&self, name: &str, pool: &NatPool) -> Result<NatPoolInfo, Error> {
        self.call(Method::PUT, &format!("/nat/pools/{name}"), Some(pool))
            .await
    }
    pub async fn nat_pool_del(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/nat/pools/{name}")).await
    }
    pub async fn nat_pools(&self) -> Result<Vec<NatPoolInfo>, Error> {
        self.get("/nat/pools").await
    }
    pub async fn snat_set(&self, vrf: u32, pool: &str) -> Result<SnatAttachment, Error> {
        let body = SnatAttachment {
            pool: pool.to_string(),
        };
        self.call(Method::PUT, &format!("/vrfs/{vrf}/snat"), Some(&body))
            .await
    }
    pub async fn snat_del(&self, vrf: u32) -> Result<(), Error> {
        self.delete(&format!("/vrfs/{vrf}/snat")).await
    }

    /// `address`: an IPv4 or IPv6 address (of `f.ip`'s family).
    pub async fn floating_ip_set(
        &self,
        address: impl Into<std::net::IpAddr>,
        f: &FloatingIp,
    ) -> Result<FloatingIpInfo, Error> {
        let address = address.into();
        self.call(
            Method::PUT,
            &format!("/nat/floating-ips/{address}"),
            Some(f),
        )
        .await
    }
    pub async fn floating_ip_del(&self, address: impl Into<std::net::IpAddr>) -> Result<(), Error> {
        let address = address.into();
        self.delete(&format!("/nat/floating-ips/{address}")).await
    }
    pub async fn floating_ips(&self) -> Result<Vec<FloatingIpInfo>, Error> {
        self.get("/nat/floating-ips").await
    }

    pub async fn service_set(
        &self,
        name: &str,
        s: &crate::api::Service,
    ) -> Result<crate::api::ServiceInfo, Error> {
        self.call(Method::PUT, &format!("/nat/services/{name}"), Some(s))
            .await
    }
    pub async fn service_del(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/nat/services/{name}")).await
    }
    pub async fn services(&self) -> Result<Vec<crate::api::ServiceInfo>, Error> {
        self.get("/nat/services").await
    }

    pub async fn link_local_set(
        &self,
        name: &str,
        s: &crate::api::LinkLocalService,
    ) -> Result<crate::api::LinkLocalServiceInfo, Error> {
        self.call(
            Method::PUT,
            &format!("/link-local-services/{name}"),
            Some(s),
        )
        .await
    }
    pub async fn link_local_del(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/link-local-services/{name}")).await
    }
    pub async fn link_locals(&self) -> Result<Vec<crate::api::LinkLocalServiceInfo>, Error> {
        self.get("/link-local-services").await
    }

    pub async fn flows(&self, query: &FlowQuery) -> Result<FlowPage, Error> {
        let q = serde_urlencoded::to_string(query).map_err(|e| Error::Decode(e.to_string()))?;
        let path = if q.is_empty() {
            "/flows".to_string()
        } else {
            format!("/flows?{q}")
        };
        self.get(&path).await
    }
    pub async fn flush_flows(&self) -> Result<FlushResult, Error> {
        self.call::<(), _>(Method::DELETE, "/flows", None).await
    }
    pub async fn flow_stats(&self) -> Result<FlowStats, Error> {
        self.get("/flows/stats").await
    }
    /// The changes after revision `since` of `epoch`, waiting up to `wait_ms` for one.
    pub async fn events(
        &self,
        since: u64,
        epoch: Option<&str>,
        wait_ms: u64,
    ) -> Result<crate::events::EventPage, Error> {
        let mut q = vec![
            ("since", since.to_string()),
            ("wait_ms", wait_ms.to_string()),
        ];
        if let Some(e) = epoch {
            q.push(("epoch", e.to_string()));
        }
        let q = serde_urlencoded::to_string(&q).map_err(|e| Error::Decode(e.to_string()))?;
        self.get(&format!("/events?{q}")).await
    }

    pub async fn stats(&self) -> Result<Stats, Error> {
        self.get("/stats").await
    }
    pub async fn dropstats(&self) -> Result<DropStats, Error> {
        self.get("/dropstats").await
    }
    pub async fn neighbours(&self) -> Result<Vec<crate::api::Neighbour>, Error> {
        self.get("/neighbours").await
    }
    /// The agent channel's counters (pkt0).
    pub async fn agent_stats(&self) -> Result<crate::api::AgentStats, Error> {
        self.get("/agent").await
    }
    pub async fn health(&self) -> Result<Health, Error> {
        self.get("/health").await
    }
    pub async fn metrics(&self) -> Result<String, Error> {
        let resp = self.send::<()>(Method::GET, "/metrics", None).await?;
        String::from_utf8(resp.body.to_vec()).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// A blocking wrapper for callers without an async runtime (tests, scripts): runs each call on
/// its own current-thread runtime.
pub struct BlockingClient {
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl BlockingClient {
    pub fn new(socket: impl AsRef<Path>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start a runtime: {e}")))?;
        Ok(BlockingClient {
            client: Client::new(socket),
            runtime,
        })
    }

    /// Run one or more client calls: `c.run(|c| async move { c.vifs().await })`.
    pub fn run<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.runtime.block_on(f(self.client.clone()))
    }
}
