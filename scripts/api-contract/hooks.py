"""Schemathesis hooks for vrouterd's API contract test (scripts/api-contract.sh).

Two kinds of knowledge the OpenAPI document states in words but a generator cannot read:
- value formats with a rule a regular expression cannot say (prefixes with their host bits
  zero, port ranges in order, NAT pools' address and port ranges in order, a vif's DHCP
  gateway and routes inside its subnet, link-local services off the vifs' own sources, a
  service's backends of its VIP's family, a floating IP's pod address of its family, a pool's
  two ends of one family, a tunnel's own label in its encapsulation's range):
  generators for them, or positive cases put in order;
- facts of the machine under test (the socket base, which interfaces and devices exist, which
  groups, which lcores forward): schema-valid vif requests and queue pins are pointed at them;
- time: a valid GET /events may wait a minute for a change; positive cases wait 20 ms at most. Only positive cases are touched, so
  every negative case still goes out exactly as generated;
- and one generator slip: a "negative" case that is valid (below, `filter_case`) is not sent.
"""

import hashlib
import ipaddress
import os
import urllib.parse

import schemathesis
from hypothesis import strategies as st

SOCKET_BASE = os.environ["CONTRACT_SOCKET_BASE"]
AF_PACKET_IFACE = os.environ["CONTRACT_AF_PACKET_IFACE"]
TAP_IFACE = os.environ["CONTRACT_TAP_IFACE"]
# One null device: further physical vifs are refused as taking a device already in use (409)
# rather than piling up DPDK ports.
NULL_DEVICE = "net_null0"
# vrouterd's forwarding lcore under test (its default --fwd-lcores).
FWD_LCORE = int(os.environ.get("CONTRACT_FWD_LCORE", "1"))


def _prefix(version, max_len):
    def build(args):
        addr, length = args
        net = ipaddress.ip_network((addr, length), strict=False)
        return f"{net.network_address}/{length}"

    bits = st.integers(min_value=0, max_value=2**max_len - 1)
    return st.tuples(bits, st.integers(min_value=0, max_value=max_len)).map(
        lambda a: build(((ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address)(a[0]), a[1]))
    )


schemathesis.openapi.format("ipv4-prefix", _prefix(4, 32))
schemathesis.openapi.format("ipv6-prefix", _prefix(6, 128))
schemathesis.openapi.format(
    "port-range",
    st.one_of(
        st.integers(0, 65535).map(str),
        st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
            lambda p: f"{min(p)}-{max(p)}"
        ),
    ),
)


def _positive(case):
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _unicast(a):
    """`a`, or a documentation address of its family if the rules in words refuse it (an IPv6
    loopback: the schema's pattern cannot tell every spelling of ::1)."""
    if a.version == 6 and a.is_loopback:
        return ipaddress.IPv6Address("2001:db8:ff::1")
    return a


def _nat_pool(body):
    """A schema-valid NAT pool made one the rules in words accept: both addresses of one
    family (IPv4, or IPv6 for NAT66), first not above last, at most 256 addresses, the port
    range in order."""
    try:
        a = _unicast(ipaddress.ip_address(body["first"]))
        z = _unicast(ipaddress.ip_address(body["last"]))
    except (KeyError, ValueError, TypeError):
        return body
    if a.version != z.version:
        z = a
    a, z = min(a, z), max(a, z)
    if int(z) - int(a) >= 256:
        z = a
    body["first"], body["last"] = str(a), str(z)
    ports = body.get("ports")
    if isinstance(ports, dict) and isinstance(ports.get("first"), int) and isinstance(ports.get("last"), int):
        ports["first"], ports["last"] = sorted((ports["first"], ports["last"]))
    return body


def _floating_ip(address, body):
    """A schema-valid floating IP made one the rules in words accept: the pod address of the
    floating address's family."""
    try:
        a = ipaddress.ip_address(address)
        ip = _unicast(ipaddress.ip_address(body["ip"]))
    except (KeyError, ValueError, TypeError):
        return body
    if ip.version != a.version:
        ip = ipaddress.ip_address("198.18.0.1" if a.version == 4 else "2001:db8::1")
    body["ip"] = str(ip)
    return body


def _dhcp(body):
    """A schema-valid vif request's DHCP fields made ones the rules in words accept: the
    address a host of its subnet, the gateway and every route's via other hosts of it, no
    default route among the static routes."""
    try:
        length = int(body["prefix-len"])
        ip = ipaddress.IPv4Address(body["ip"])
    except (KeyError, ValueError, TypeError):
        return body
    net = ipaddress.ip_network((ip, length), strict=False)
    first, last = int(net.network_address) + 1, int(net.broadcast_address) - 1
    host = min(max(int(ip), first + 1), last)
    body["ip"] = str(ipaddress.IPv4Address(host))
    gateway = str(ipaddress.IPv4Address(first))
    if "gateway" in body:
        body["gateway"] = gateway
    routes = body.get("static-routes")
    if isinstance(routes, list):
        body["static-routes"] = [
            {**r, "via": gateway}
            for r in routes
            if isinstance(r, dict) and not str(r.get("prefix", "")).endswith("/0")
        ]
    return body


def _link_local(body):
    """A schema-valid link-local service made one the rules in words accept: its address
    outside 169.254.1.0-169.254.4.255, the vifs' own sources."""
    try:
        a = ipaddress.IPv4Address(body["address"])
    except (KeyError, ValueError):
        return body
    if a.packed[2] in (1, 2, 3, 4):
        body["address"] = "169.254.169.254"
    return body


def _service(body):
    """A schema-valid service made one the rules in words accept: its backends of the VIP's
    address family (those of the other family dropped; one of its family if none is left)."""
    try:
        vip = ipaddress.ip_address(body["address"])
        backends = list(body["backends"])
    except (KeyError, ValueError, TypeError):
        return body
    kept, seen = [], set()
    for b in backends:
        try:
            a = ipaddress.ip_address(b["address"])
        except (KeyError, ValueError, TypeError):
            kept.append(b)
            continue
        key = (a, b.get("port"))
        if a.version == vip.version and key not in seen:
            seen.add(key)
            kept.append(b)
    if not kept:
        port = backends[0].get("port", 80) if backends and isinstance(backends[0], dict) else 80
        other = "198.18.0.1" if vip.version == 4 else "2001:db8::1"
        if ipaddress.ip_address(other) == vip:
            other = "198.18.0.2" if vip.version == 4 else "2001:db8::2"
        kept = [{"address": other, "port": port}]
    body["backends"] = kept
    return body


# An MPLS label is 20 bits with 0..=15 reserved; the schema's Label is any VNI (24 bits).
MPLS_LABEL_MIN, MPLS_LABEL_MAX = 16, (1 << 20) - 1


def _tunnel_label(body):
    """A tunnel nexthop's own label within its encapsulation's range (a VNI for vxlan
    already is: the schema's range)."""
    label = body.get("label")
    if body.get("type") == "tunnel" and body.get("encap") != "vxlan" and isinstance(label, int):
        span = MPLS_LABEL_MAX - MPLS_LABEL_MIN + 1
        body["label"] = MPLS_LABEL_MIN + (label - MPLS_LABEL_MIN) % span
    return body


@schemathesis.hook
def map_case(context, case):
    if _positive(case) and case.operation.path == "/events" and isinstance(case.query, dict):
        # A valid wait can be a minute with no change coming: a few milliseconds tell the same.
        if isinstance(case.query.get("wait_ms"), int):
            case.query["wait_ms"] = min(case.query["wait_ms"], 20)
        return case
    if (
        _positive(case)
        and case.operation.path == "/link-local-services/{name}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
    ):
        case.body = _link_local(case.body)
        return case
    if (
        _positive(case)
        and case.operation.path == "/nat/pools/{name}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
    ):
        case.body = _nat_pool(case.body)
        return case
    if (
        _positive(case)
        and case.operation.path == "/nat/services/{name}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
    ):
        case.body = _service(case.body)
        return case
    if (
        _positive(case)
        and case.operation.path == "/nexthops/{id}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
    ):
        case.body = _tunnel_label(case.body)
        return case
    if (
        _positive(case)
        and case.operation.path == "/vifs/{name}/queues/{queue}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
    ):
        # A fact of the machine under test: which lcores forward.
        case.body["lcore"] = FWD_LCORE
        return case
    if not _positive(case) or case.operation.path != "/vifs" or case.method.upper() != "POST":
        return case
    body = case.body
    if not isinstance(body, dict):
        return case
    body = _dhcp(body)
    kind = body.get("type")
    if kind == "vhost-user":
        tag = hashlib.sha256(str(body.get("vhostsocket-dir")).encode()).hexdigest()[:8]
        body["vhostsocket-dir"] = f"{SOCKET_BASE}/pod-{tag}"
        # The whole path must fit sun_path: a short, plain name keeps it there.
        name = hashlib.sha256(str(body.get("vhostsocket-filename")).encode()).hexdigest()[:12]
        body["vhostsocket-filename"] = f"s-{name}"
        if "vhostsocket-group" in body:
            body["vhostsocket-group"] = "root"
    elif kind == "physical":
        body["device"] = NULL_DEVICE
    elif kind == "af-packet":
        body["iface"] = AF_PACKET_IFACE
    elif kind == "tap":
        body["iface"] = TAP_IFACE
    case.body = body
    return case


@schemathesis.hook
def filter_case(context, case):
    # Schemathesis negates one branch of a oneOf at a time and can land on another branch's
    # valid value: a nexthop body that is only {"type": "discard"} (or "receive") is a valid
    # plain nexthop, never a negative case.
    return not (
        not _positive(case)
        and case.operation.path == "/nexthops/{id}"
        and case.method.upper() == "PUT"
        and isinstance(case.body, dict)
        and set(case.body) == {"type"}
        and case.body["type"] in ("discard", "receive")
    )


@schemathesis.hook
def before_call(context, case, **kwargs):
    # A floating address the rules in words accept (not an IPv6 loopback, for every method)
    # and, for PUT, a pod address of its family. Path parameters are kept percent-encoded (an
    # IPv6 address's colons included).
    if (
        _positive(case)
        and case.operation.path == "/nat/floating-ips/{address}"
        and isinstance(case.path_parameters, dict)
    ):
        address = urllib.parse.unquote(str(case.path_parameters.get("address")))
        try:
            a = ipaddress.ip_address(address)
            if a.version == 6 and a.is_loopback:
                address = "2001:db8:ff::2"
                case.path_parameters["address"] = urllib.parse.quote(address, safe="")
        except ValueError:
            pass
        if case.method.upper() == "PUT" and isinstance(case.body, dict):
            case.body = _floating_ip(address, case.body)
