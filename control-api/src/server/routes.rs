//! What the server answers: every (method, path), its handler, and how answers and errors
//! become responses.

use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use serde::Serialize;

use super::extract::{parse_json, read_body, Body, Params};
use super::lane::Lanes;
use crate::api::{
    BridgeEntry, FloatingIp, FlowQuery, LinkLocalService, MacAddr, Mirror, MplsRequest, NatPool,
    Nexthop, Policy, QueuePin, Route, RouteBatch, Service, SnatAttachment, TraceRequest,
    VifRequest, VrfRouting, VxlanRequest,
};
use crate::controller::{Controller, Outcome, NEXTHOP_ID_RANGE};
use crate::error::Error;
use crate::metrics;
use crate::model::{MPLS_LABEL_MAX, MPLS_LABEL_MIN, VNI_MAX};

/// Every (method, path) the server answers; the OpenAPI document must list exactly these.
/// `{*prefix}` matches a prefix with its `/` unescaped (`/vrfs/1/routes/198.18.2.0/24`); a
/// percent-encoded `%2F` works too.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/vrfs"),
    ("PUT", "/vrfs/{vrf}"),
    ("DELETE", "/vrfs/{vrf}"),
    ("GET", "/vrfs/{vrf}/routes"),
    ("PUT", "/vrfs/{vrf}/routes"),
    ("PATCH", "/vrfs/{vrf}/routes"),
    ("DELETE", "/vrfs/{vrf}/routes/{*prefix}"),
    ("GET", "/vrfs/{vrf}/bridge"),
    ("PUT", "/vrfs/{vrf}/bridge"),
    ("DELETE", "/vrfs/{vrf}/bridge/{mac}"),
    ("GET", "/vrfs/{vrf}/snat"),
    ("PUT", "/vrfs/{vrf}/snat"),
    ("DELETE", "/vrfs/{vrf}/snat"),
    ("GET", "/vrfs/{vrf}/routing"),
    ("PUT", "/vrfs/{vrf}/routing"),
    ("DELETE", "/vrfs/{vrf}/routing"),
    ("GET", "/nat/pools"),
    ("GET", "/nat/pools/{name}"),
    ("PUT", "/nat/pools/{name}"),
    ("DELETE", "/nat/pools/{name}"),
    ("GET", "/nat/floating-ips"),
    ("GET", "/nat/floating-ips/{address}"),
    ("PUT", "/nat/floating-ips/{address}"),
    ("DELETE", "/nat/floating-ips/{address}"),
    ("GET", "/nat/services"),
    ("GET", "/nat/services/{name}"),
    ("PUT", "/nat/services/{name}"),
    ("DELETE", "/nat/services/{name}"),
    ("GET", "/link-local-services"),
    ("GET", "/link-local-services/{name}"),
    ("PUT", "/link-local-services/{name}"),
    ("DELETE", "/link-local-services/{name}"),
    ("GET", "/vifs"),
    ("POST", "/vifs"),
    ("GET", "/vifs/{name}"),
    ("DELETE", "/vifs/{name}"),
    ("GET", "/vifs/{name}/policy"),
    ("PUT", "/vifs/{name}/policy"),
    ("DELETE", "/vifs/{name}/policy"),
    ("PUT", "/vifs/{name}/queues/{queue}"),
    ("PUT", "/vifs/{name}/mirror"),
    ("GET", "/vifs/{name}/mirror"),
    ("DELETE", "/vifs/{name}/mirror"),
    ("PUT", "/vifs/{name}/trace"),
    ("GET", "/vifs/{name}/trace"),
    ("DELETE", "/vifs/{name}/trace"),
    ("GET", "/nexthops"),
    ("GET", "/nexthops/{id}"),
    ("PUT", "/nexthops/{id}"),
    ("DELETE", "/nexthops/{id}"),
    ("GET", "/mpls"),
    ("PUT", "/mpls/{label}"),
    ("DELETE", "/mpls/{label}"),
    ("GET", "/vxlan"),
    ("PUT", "/vxlan/{vni}"),
    ("DELETE", "/vxlan/{vni}"),
    ("GET", "/flows"),
    ("DELETE", "/flows"),
    ("GET", "/flows/stats"),
    ("GET", "/health"),
    ("GET", "/stats"),
    ("GET", "/dropstats"),
    ("GET", "/neighbours"),
    ("GET", "/agent"),
    ("GET", "/metrics"),
    ("GET", "/events"),
];

#[derive(Clone)]
pub(super) struct AppState {
    lanes: Arc<Lanes>,
    /// For what needs no lane: waiting on the change stream.
    ctrl: Arc<Controller>,
    pub(super) body_limit: usize,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, "control request failed");
        } else {
            tracing::debug!(error = %self, "control request refused");
        }
        (status, axum::Json(self.body())).into_response()
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

fn put_status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Created => StatusCode::CREATED,
        Outcome::Replaced => StatusCode::OK,
    }
}

type St = State<AppState>;
type Res = Result<Response, Error>;

async fn vrfs_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.vrfs())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn vrf_put(State(s): St, p: Params, req: Request) -> Res {
    let vrf = p.vrf()?;
    // The body is optional; if given it must be an empty object.
    let bytes = read_body(req, s.body_limit).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let _: EmptyObject = parse_json(&bytes)?;
    }
    let out = s.lanes.change(move |c| c.vrf_add(vrf)).await?;
    let v = s
        .lanes
        .read(move |c| Ok(c.vrfs().into_iter().find(|v| v.vrf == vrf)))
        .await?;
    Ok(json(put_status(out), &v))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyObject {}

async fn vrf_del(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    s.lanes.change(move |c| c.vrf_del(vrf)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn routes_list(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let v = s.lanes.read(move |c| c.routes(vrf)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn route_put(State(s): St, p: Params, Body(route): Body<Route>) -> Res {
    let vrf = p.vrf()?;
    let r = route.clone();
    let out = s.lanes.change(move |c| c.route_set(vrf, &r)).await?;
    Ok(json(put_status(out), &route))
}

async fn route_batch(State(s): St, p: Params, Body(batch): Body<RouteBatch>) -> Res {
    let vrf = p.vrf()?;
    let out = s.lanes.change(move |c| c.route_batch(vrf, &batch)).await?;
    Ok(json(StatusCode::OK, &out))
}

async fn route_del(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let raw = p.get("prefix")?;
    let prefix = raw
        .parse()
        .map_err(|e: crate::api::SyntaxError| Error::InvalidPathParam {
            param: "prefix",
            reason: format!(
                "{}; write it as /vrfs/{vrf}/routes/198.18.2.0/24 or with %2F",
                e.0
            ),
        })?;
    s.lanes.change(move |c| c.route_del(vrf, &prefix)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn bridge_list(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let v = s.lanes.read(move |c| c.bridge(vrf)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn bridge_put(State(s): St, p: Params, Body(entry): Body<BridgeEntry>) -> Res {
    let vrf = p.vrf()?;
    let e = entry.clone();
    let out = s.lanes.change(move |c| c.bridge_set(vrf, &e)).await?;
    Ok(json(put_status(out), &entry))
}

async fn bridge_del(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let mac: MacAddr =
        p.get("mac")?
            .parse()
            .map_err(|e: vrouter::Error| Error::InvalidPathParam {
                param: "mac",
                reason: e.to_string(),
            })?;
    s.lanes.change(move |c| c.bridge_del(vrf, mac)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn vifs_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.vifs())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn vif_post(State(s): St, Body(req): Body<VifRequest>) -> Res {
    let v = s.lanes.change(move |c| c.vif_add(&req)).await?;
    Ok(json(StatusCode::CREATED, &v))
}

async fn vif_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.vif(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn vif_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.change(move |c| c.vif_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn queue_pin_put(State(s): St, p: Params, Body(pin): Body<QueuePin>) -> Res {
    let name = p.get("name")?.to_string();
    let queue = p.number("queue", 0, crate::model::QUEUES_MAX - 1)?;
    let out = s
        .lanes
        .change(move |c| c.queue_pin(&name, queue, pin))
        .await?;
    Ok(json(
        put_status(out),
        &serde_json::json!({ "queue": queue, "lcore": pin.lcore }),
    ))
}

async fn mirror_put(State(s): St, p: Params, Body(m): Body<Mirror>) -> Res {
    let name = p.get("name")?.to_string();
    let body = m.clone();
    let out = s.lanes.read(move |c| c.mirror_set(&name, &m)).await?;
    Ok(json(put_status(out), &body))
}

async fn mirror_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.mirror(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn mirror_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.read(move |c| c.mirror_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn trace_put(State(s): St, p: Params, Body(req): Body<TraceRequest>) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.trace_start(&name, req)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn trace_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.trace_read(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn trace_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.read(move |c| c.trace_stop(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn policy_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.policy(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn policy_put(State(s): St, p: Params, Body(policy): Body<Policy>) -> Res {
    let name = p.get("name")?.to_string();
    let pol = policy.clone();
    let out = s.lanes.change(move |c| c.policy_set(&name, &pol)).await?;
    Ok(json(put_status(out), &policy))
}

async fn policy_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.change(move |c| c.policy_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn routing_get(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let v = s.lanes.read(move |c| c.routing(vrf)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn routing_put(State(s): St, p: Params, Body(r): Body<VrfRouting>) -> Res {
    let vrf = p.vrf()?;
    let req = r.clone();
    let out = s.lanes.change(move |c| c.routing_set(vrf, &req)).await?;
    Ok(json(put_status(out), &r))
}

async fn routing_del(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    s.lanes.change(move |c| c.routing_del(vrf)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn snat_get(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    let v = s.lanes.read(move |c| c.snat(vrf)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn snat_put(State(s): St, p: Params, Body(a): Body<SnatAttachment>) -> Res {
    let vrf = p.vrf()?;
    let att = a.clone();
    let out = s.lanes.change(move |c| c.snat_set(vrf, &att)).await?;
    Ok(json(put_status(out), &a))
}

async fn snat_del(State(s): St, p: Params) -> Res {
    let vrf = p.vrf()?;
    s.lanes.change(move |c| c.snat_del(vrf)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn nat_pools_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.nat_pools()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn nat_pool_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.nat_pool(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn nat_pool_put(State(s): St, p: Params, Body(pool): Body<NatPool>) -> Res {
    let name = p.get("name")?.to_string();
    let n = name.clone();
    let out = s.lanes.change(move |c| c.nat_pool_set(&n, &pool)).await?;
    let v = s.lanes.read(move |c| c.nat_pool(&name)).await?;
    Ok(json(put_status(out), &v))
}

async fn nat_pool_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.change(move |c| c.nat_pool_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn floating_address(p: &Params) -> Result<std::net::IpAddr, Error> {
    let raw = p.get("address")?;
    raw.parse().map_err(|_| Error::InvalidPathParam {
        param: "address",
        reason: format!("{raw:?} is not an IPv4 or IPv6 address"),
    })
}

async fn floating_ips_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.floating_ips())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn floating_ip_get(State(s): St, p: Params) -> Res {
    let address = floating_address(&p)?;
    let v = s.lanes.read(move |c| c.floating_ip(address)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn floating_ip_put(State(s): St, p: Params, Body(f): Body<FloatingIp>) -> Res {
    let address = floating_address(&p)?;
    let out = s
        .lanes
        .change(move |c| c.floating_ip_set(address, &f))
        .await?;
    let v = s.lanes.read(move |c| c.floating_ip(address)).await?;
    Ok(json(put_status(out), &v))
}

async fn floating_ip_del(State(s): St, p: Params) -> Res {
    let address = floating_address(&p)?;
    s.lanes.change(move |c| c.floating_ip_del(address)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn services_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.services()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn service_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.service(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn service_put(State(s): St, p: Params, Body(svc): Body<Service>) -> Res {
    let name = p.get("name")?.to_string();
    let n = name.clone();
    let out = s.lanes.change(move |c| c.service_set(&n, &svc)).await?;
    let v = s.lanes.read(move |c| c.service(&name)).await?;
    Ok(json(put_status(out), &v))
}

async fn service_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.change(move |c| c.service_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn link_locals_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.link_locals())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn link_local_get(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    let v = s.lanes.read(move |c| c.link_local(&name)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn link_local_put(State(s): St, p: Params, Body(svc): Body<LinkLocalService>) -> Res {
    let name = p.get("name")?.to_string();
    let n = name.clone();
    let out = s.lanes.change(move |c| c.link_local_set(&n, &svc)).await?;
    let v = s.lanes.read(move |c| c.link_local(&name)).await?;
    Ok(json(put_status(out), &v))
}

async fn link_local_del(State(s): St, p: Params) -> Res {
    let name = p.get("name")?.to_string();
    s.lanes.change(move |c| c.link_local_del(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn nexthop_id(p: &Params) -> Result<u32, Error> {
    p.number("id", NEXTHOP_ID_RANGE.0, NEXTHOP_ID_RANGE.1)
}

async fn nexthops_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.nexthops())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn nexthop_get(State(s): St, p: Params) -> Res {
    let id = nexthop_id(&p)?;
    let v = s.lanes.read(move |c| c.nexthop(id)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn nexthop_put(State(s): St, p: Params, Body(nh): Body<Nexthop>) -> Res {
    let id = nexthop_id(&p)?;
    let out = s.lanes.change(move |c| c.nexthop_set(id, &nh)).await?;
    let v = s.lanes.read(move |c| c.nexthop(id)).await?;
    Ok(json(put_status(out), &v))
}

async fn nexthop_del(State(s): St, p: Params) -> Res {
    let id = nexthop_id(&p)?;
    s.lanes.change(move |c| c.nexthop_del(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn mpls_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.mpls())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn mpls_put(State(s): St, p: Params, Body(req): Body<MplsRequest>) -> Res {
    let label = p.number("label", MPLS_LABEL_MIN, MPLS_LABEL_MAX)?;
    let Some(target) = req.target() else {
        return Err(Error::field(
            if req.nexthop.is_some() {
                "vrf"
            } else {
                "nexthop"
            },
            "give exactly one of `nexthop` (the label leads to that nexthop) and `vrf` \
             (the inner packet is routed in that VRF)",
        ));
    };
    let out = s
        .lanes
        .change(move |c| c.mpls_set_target(label, target))
        .await?;
    Ok(json(
        put_status(out),
        &crate::api::MplsEntry::new(label, target),
    ))
}

async fn mpls_del(State(s): St, p: Params) -> Res {
    let label = p.number("label", MPLS_LABEL_MIN, MPLS_LABEL_MAX)?;
    s.lanes.change(move |c| c.mpls_del(label)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn vxlan_list(State(s): St) -> Res {
    let v = s.lanes.read(|c| Ok(c.vxlan())).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn vxlan_put(State(s): St, p: Params, Body(req): Body<VxlanRequest>) -> Res {
    let vni = p.number("vni", 0, VNI_MAX)?;
    let out = s.lanes.change(move |c| c.vxlan_set(vni, req.vrf)).await?;
    Ok(json(
        put_status(out),
        &crate::api::VxlanEntry { vni, vrf: req.vrf },
    ))
}

async fn vxlan_del(State(s): St, p: Params) -> Res {
    let vni = p.number("vni", 0, VNI_MAX)?;
    s.lanes.change(move |c| c.vxlan_del(vni)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `vrf`, `limit` and `cursor`, each named in its error.
fn parse_flow_query(raw: Option<&str>) -> Result<FlowQuery, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::InvalidQuery(format!("cannot parse the query string: {e}")))?;
    let mut q = FlowQuery::default();
    let number = |k: &str, v: &str| {
        v.parse::<u32>()
            .map_err(|_| Error::InvalidQuery(format!("`{k}`: {v:?} is not a number")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "vrf" => q.vrf = Some(number(&k, &v)?),
            "limit" => q.limit = Some(number(&k, &v)?),
            "cursor" => q.cursor = Some(v),
            other => {
                return Err(Error::InvalidQuery(format!(
                    "unknown parameter `{other}`; /flows takes vrf, limit and cursor"
                )))
            }
        }
    }
    Ok(q)
}

/// `GET /events` parameters.
struct EventsQuery {
    since: u64,
    epoch: Option<String>,
    limit: usize,
    wait: std::time::Duration,
}

/// Longest a `GET /events` waits for a change.
const EVENTS_WAIT_MAX_MS: u64 = 60_000;

fn parse_events_query(raw: Option<&str>) -> Result<EventsQuery, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::InvalidQuery(format!("cannot parse the query string: {e}")))?;
    let mut q = EventsQuery {
        since: 0,
        epoch: None,
        limit: crate::events::PAGE_MAX,
        wait: std::time::Duration::ZERO,
    };
    let number = |k: &str, v: &str, max: u64| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| Error::InvalidQuery(format!("`{k}`: {v:?} is not a number up to {max}")))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "since" => q.since = number(&k, &v, u64::MAX)?,
            "epoch" => q.epoch = Some(v),
            "limit" => match number(&k, &v, crate::events::PAGE_MAX as u64)? {
                0 => {
                    return Err(Error::InvalidQuery(
                        "`limit`: 0 asks for nothing; 1..=1000".into(),
                    ))
                }
                n => q.limit = n as usize,
            },
            "wait_ms" => {
                q.wait = std::time::Duration::from_millis(number(&k, &v, EVENTS_WAIT_MAX_MS)?)
            }
            other => {
                return Err(Error::InvalidQuery(format!(
                    "unknown parameter `{other}`; /events takes since, epoch, limit and wait_ms"
                )))
            }
        }
    }
    Ok(q)
}

/// The changes after `since`; with `wait_ms`, waits that long for one when there is none yet
/// (a long poll, on no lane: waiting readers hold up nothing).
async fn events_get(State(s): St, RawQuery(raw): RawQuery) -> Res {
    let q = parse_events_query(raw.as_deref())?;
    let events = s.ctrl.events();
    // Subscribed before reading: a change published after the read wakes the wait below.
    let mut woken = events.subscribe();
    let deadline = tokio::time::Instant::now() + q.wait;
    loop {
        let page = events.since(q.epoch.as_deref(), q.since, q.limit);
        if !page.events.is_empty() || page.reset || q.wait.is_zero() {
            return Ok(json(StatusCode::OK, &page));
        }
        match tokio::time::timeout_at(deadline, woken.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(json(StatusCode::OK, &page)),
        }
    }
}

async fn flows_list(State(s): St, RawQuery(raw): RawQuery) -> Res {
    let q = parse_flow_query(raw.as_deref())?;
    let v = s.lanes.read(move |c| c.flows(q)).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn flows_flush(State(s): St) -> Res {
    let v = s.lanes.change(|c| c.flush_flows()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn flow_stats(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.flow_stats()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn health(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.health()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn stats(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.stats()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn dropstats(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.dropstats()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn neighbours(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.neighbours()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn agent_stats(State(s): St) -> Res {
    let v = s.lanes.read(|c| c.agent_stats()).await?;
    Ok(json(StatusCode::OK, &v))
}

async fn metrics_text(State(s): St) -> Res {
    let text = s.lanes.read(metrics::render).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn unknown_path(uri: Uri) -> Error {
    Error::UnknownPath(uri.path().to_string())
}

async fn wrong_method(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// The router over a controller's lanes; `body_limit` bounds request bodies (413 beyond it).
pub(super) fn router(lanes: Arc<Lanes>, ctrl: Arc<Controller>, body_limit: usize) -> Router {
    let mut r: Router<AppState> = Router::new();
    for &(method, path) in ROUTES {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "PUT" => MethodFilter::PUT,
            "POST" => MethodFilter::POST,
            "PATCH" => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        let handler = match (method, path) {
            ("GET", "/vrfs") => on(filter, vrfs_list),
            ("PUT", "/vrfs/{vrf}") => on(filter, vrf_put),
            ("DELETE", "/vrfs/{vrf}") => on(filter, vrf_del),
            ("GET", "/vrfs/{vrf}/routes") => on(filter, routes_list),
            ("PUT", "/vrfs/{vrf}/routes") => on(filter, route_put),
            ("PATCH", "/vrfs/{vrf}/routes") => on(filter, route_batch),
            ("DELETE", "/vrfs/{vrf}/routes/{*prefix}") => on(filter, route_del),
            ("GET", "/vrfs/{vrf}/bridge") => on(filter, bridge_list),
            ("PUT", "/vrfs/{vrf}/bridge") => on(filter, bridge_put),
            ("DELETE", "/vrfs/{vrf}/bridge/{mac}") => on(filter, bridge_del),
            ("GET", "/vrfs/{vrf}/snat") => on(filter, snat_get),
            ("PUT", "/vrfs/{vrf}/snat") => on(filter, snat_put),
            ("DELETE", "/vrfs/{vrf}/snat") => on(filter, snat_del),
            ("GET", "/vrfs/{vrf}/routing") => on(filter, routing_get),
            ("PUT", "/vrfs/{vrf}/routing") => on(filter, routing_put),
            ("DELETE", "/vrfs/{vrf}/routing") => on(filter, routing_del),
            ("GET", "/nat/pools") => on(filter, nat_pools_list),
            ("GET", "/nat/pools/{name}") => on(filter, nat_pool_get),
            ("PUT", "/nat/pools/{name}") => on(filter, nat_pool_put),
            ("DELETE", "/nat/pools/{name}") => on(filter, nat_pool_del),
            ("GET", "/nat/floating-ips") => on(filter, floating_ips_list),
            ("GET", "/nat/floating-ips/{address}") => on(filter, floating_ip_get),
            ("PUT", "/nat/floating-ips/{address}") => on(filter, floating_ip_put),
            ("DELETE", "/nat/floating-ips/{address}") => on(filter, floating_ip_del),
            ("GET", "/nat/services") => on(filter, services_list),
            ("GET", "/nat/services/{name}") => on(filter, service_get),
            ("PUT", "/nat/services/{name}") => on(filter, service_put),
            ("DELETE", "/nat/services/{name}") => on(filter, service_del),
            ("GET", "/link-local-services") => on(filter, link_locals_list),
            ("GET", "/link-local-services/{name}") => on(filter, link_local_get),
            ("PUT", "/link-local-services/{name}") => on(filter, link_local_put),
            ("DELETE", "/link-local-services/{name}") => on(filter, link_local_del),
            ("GET", "/vifs") => on(filter, vifs_list),
            ("POST", "/vifs") => on(filter, vif_post),
            ("GET", "/vifs/{name}") => on(filter, vif_get),
            ("DELETE", "/vifs/{name}") => on(filter, vif_del),
            ("GET", "/vifs/{name}/policy") => on(filter, policy_get),
            ("PUT", "/vifs/{name}/queues/{queue}") => on(filter, queue_pin_put),
            ("PUT", "/vifs/{name}/mirror") => on(filter, mirror_put),
            ("GET", "/vifs/{name}/mirror") => on(filter, mirror_get),
            ("DELETE", "/vifs/{name}/mirror") => on(filter, mirror_del),
            ("PUT", "/vifs/{name}/trace") => on(filter, trace_put),
            ("GET", "/vifs/{name}/trace") => on(filter, trace_get),
            ("DELETE", "/vifs/{name}/trace") => on(filter, trace_del),
            ("PUT", "/vifs/{name}/policy") => on(filter, policy_put),
            ("DELETE", "/vifs/{name}/policy") => on(filter, policy_del),
            ("GET", "/nexthops") => on(filter, nexthops_list),
            ("GET", "/nexthops/{id}") => on(filter, nexthop_get),
            ("PUT", "/nexthops/{id}") => on(filter, nexthop_put),
            ("DELETE", "/nexthops/{id}") => on(filter, nexthop_del),
            ("GET", "/mpls") => on(filter, mpls_list),
            ("PUT", "/mpls/{label}") => on(filter, mpls_put),
            ("DELETE", "/mpls/{label}") => on(filter, mpls_del),
            ("GET", "/vxlan") => on(filter, vxlan_list),
            ("PUT", "/vxlan/{vni}") => on(filter, vxlan_put),
            ("DELETE", "/vxlan/{vni}") => on(filter, vxlan_del),
            ("GET", "/flows") => on(filter, flows_list),
            ("DELETE", "/flows") => on(filter, flows_flush),
            ("GET", "/flows/stats") => on(filter, flow_stats),
            ("GET", "/health") => on(filter, health),
            ("GET", "/stats") => on(filter, stats),
            ("GET", "/dropstats") => on(filter, dropstats),
            ("GET", "/neighbours") => on(filter, neighbours),
            ("GET", "/agent") => on(filter, agent_stats),
            ("GET", "/metrics") => on(filter, metrics_text),
            ("GET", "/events") => on(filter, events_get),
            // ROUTES and this table are one list; a test checks every entry answers.
            _ => continue,
        };
        r = r.route(path, handler);
    }
    r.fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn(access_log))
        .layer(axum::middleware::from_fn_with_state(body_limit, whole_body))
        .with_state(AppState {
            lanes,
            ctrl,
            body_limit,
        })
}

/// Reads the request body whole (up to `limit`: 413 beyond it) before the request is routed,
/// so that every answer leaves the connection ready for the client's next request, those given
/// before a handler would read the body included (an unknown path or method, a refused path
/// parameter, a request that takes no body). hyper closes a keep-alive connection whose request
/// body was left unread, without saying so in the answer: a client that sent its next request
/// meanwhile (as soon as it had the answer, the body's last bytes still on their way) sees the
/// connection drop with no response.
async fn whole_body(
    State(limit): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    match read_body(Request::from_parts(parts.clone(), body), limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// One debug line per request: method, path, status and how long it took.
async fn access_log(req: Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "control request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_queries_name_the_bad_parameter() {
        let q = parse_flow_query(Some("vrf=1&limit=50&cursor=a%2Fb")).unwrap();
        assert_eq!(
            (q.vrf, q.limit, q.cursor.as_deref()),
            (Some(1), Some(50), Some("a/b"))
        );
        assert!(parse_flow_query(Some("vrf=-1"))
            .unwrap_err()
            .to_string()
            .contains("`vrf`"));
        assert!(parse_flow_query(None).unwrap() == FlowQuery::default());
    }
}
