"""Interface VPC endpoints that carry traffic, on top of moto 5.2.5.

moto's interface endpoints are records: nothing travels through them, so a
test cannot tell a private worker that uses its subnet's endpoints from one
that reaches the emulator any other way. This patch gives each endpoint an
address of its own, `{EMULATOR}/skiff/vpce/<vpce-id>`, which the local
launcher hands a private worker's agent per service (AWS_ENDPOINT_URL_<SERVICE>;
a repository's S3 endpoint is such a URL too, path-style:
`/skiff/vpce/<vpce-id>/<bucket>/<key>`). A request there is served as the
request without the prefix (query string kept) only while AWS would deliver
it:

- The endpoint exists in some account and region, is `available`, and is of
  type Interface. AWS: an interface endpoint is reached through its network
  interfaces, which exist only while it does; a gateway endpoint has no
  address. moto keeps a deleted endpoint with state "deleted"; any state but
  available counts as gone.
- When the caller is a worker (its User-Agent or x-amz-user-agent names
  `app/skiff-agent-<worker-id>` and an instance tagged `skiff:worker` =
  <worker-id> exists, not terminated, in any account and region), the
  network lets its packets through, as the VPC user guide's rules for
  security groups, peering and route tables say:
  - the endpoint's security groups (the VPC's default group when it names
    none, as AWS assigns) admit TCP 443 (a tcp rule whose port range holds
    443, or protocol -1) from a CIDR containing the worker subnet's CIDR, or
    from a group the worker's interface is in;
  - the worker's groups allow TCP 443 out to a CIDR containing one of the
    endpoint's subnets' CIDRs, or to one of the endpoint's groups;
  - when the endpoint's VPC is not the worker's, an active VPC peering joins
    the two VPCs (either direction, any account), the worker subnet's route
    table (its explicit association, else the VPC's main table) sends that
    endpoint subnet's CIDR through it (the most specific route containing
    it), and the endpoint subnet's table sends the worker subnet's CIDR back
    through it.
  Packets reach one endpoint subnet: a request passes when some endpoint
  subnet passes the last two rules.
- A gateway endpoint (S3, DynamoDB) has no address on AWS: a subnet whose
  route table the endpoint is attached to reaches the service's regional
  name through it. Here the local launcher hands a worker in such a subnet
  the gateway's address instead, which carries its requests only when the
  worker is in the endpoint's VPC and its subnet's route table is one of the
  endpoint's.
- A caller that is not a worker (the operator's own skiff process, which in
  the reference scenario reaches the endpoint over its own VPN link that the
  emulator cannot model) needs only the first rule.

Refused requests are answered at once with HTTP 403 and the error code
`SkiffEndpointUnreachable`, whose message names the endpoint and the exact
reason. The body has the shape the caller's protocol parses, so the SDK shows
the message: S3's `<Error>` document, EC2's `<Response><Errors>`, the query
protocols' `<ErrorResponse>`, or JSON with X-Amzn-ErrorType; the message is
also in the `x-skiff-refusal` header, for HEAD requests, whose answers have
no body.

Deviations from AWS, all on the side of a clearer test:
- On AWS a deleted endpoint's name stops resolving and a blocked packet is
  dropped: the client sees connection failures that the SDK retries for a
  while. The gate answers at once, so tests need not wait out the retries.
- The rules ask for the worker subnet's whole CIDR, where AWS matches the
  instance's own address: skiff's preflight checks a subnet before the
  worker exists, and so does the gate. Prefix-list rules, network ACLs and
  endpoint policies are not modelled.

Every request that names a worker in its User-Agent is counted by (worker,
endpoint id or null when it did not come through the gate, service from the
SigV4 credential scope, allowed). `GET /skiff/vpce` answers
`{"calls": [{"worker", "endpoint", "service", "allowed", "count"}, ...]}`;
`DELETE /skiff/vpce` clears the counts. Tests use it to prove that every
request of a private worker went through the endpoints it was given.
"""

import ipaddress
import json
import re
import threading
import uuid
from urllib.parse import parse_qs

PREFIX = "/skiff/vpce"
WORKER_TAG = "skiff:worker"
_GATE = re.compile(r"^/skiff/vpce/([^/?]+)")
_WORKER_UA = re.compile(r"(?:^|\s)app/skiff-agent-([^\s/]+)")
_SCOPE = re.compile(r"^[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_CREDENTIAL = re.compile(r"Credential=([^,\s]+)")

_lock = threading.Lock()
_calls = {}  # (worker, endpoint, service, allowed) -> count


class Refused(Exception):
    """Why a request may not pass an endpoint."""


# ---------------------------------------------------------------- moto's state


def _ec2_backends():
    """Every EC2 backend moto has created, without creating new ones."""
    from moto.ec2.models import ec2_backends

    for _account, regions in list(dict.items(ec2_backends)):
        for _region, backend in list(dict.items(regions)):
            yield backend


def _endpoint(vpce_id):
    """(backend, endpoint) of an available interface endpoint, or Refused."""
    for backend in _ec2_backends():
        endpoint = backend.vpc_end_points.get(vpce_id)
        if endpoint is None:
            continue
        state = str(endpoint.state or "").lower()
        if state != "available":
            if state in ("pending", "pendingacceptance"):
                raise Refused(f"{vpce_id} is not available yet (state {endpoint.state})")
            raise Refused(f"{vpce_id} does not exist (state {endpoint.state})")
        return backend, endpoint
    raise Refused(f"{vpce_id} does not exist")


_found = {}  # worker id -> (backend, instance id) last seen, checked again on every use


def _live(backend, instance_id, worker_id):
    if backend.tags.get(instance_id, {}).get(WORKER_TAG) != worker_id:
        return None
    for reservation in list(backend.reservations.values()):
        for instance in reservation.instances:
            if instance.id == instance_id and instance.state != "terminated":
                return instance
    return None


def _worker(worker_id):
    """(backend, instance) of the live instance tagged skiff:worker=<worker_id>, or None."""
    seen = _found.get(worker_id)
    if seen is not None:
        instance = _live(seen[0], seen[1], worker_id)
        if instance is not None:
            return seen[0], instance
    for backend in _ec2_backends():
        for resource_id, tags in list(backend.tags.items()):
            if resource_id.startswith("i-") and tags.get(WORKER_TAG) == worker_id:
                instance = _live(backend, resource_id, worker_id)
                if instance is not None:
                    _found[worker_id] = (backend, resource_id)
                    return backend, instance
    return None


def _subnet(backend, subnet_id):
    for per_zone in backend.subnets.values():
        if subnet_id in per_zone:
            return per_zone[subnet_id]
    return None


def _groups_of(backend, instance):
    """The security groups of the worker's primary interface."""
    groups = list(instance.nics[0].group_set) if instance.nics else list(instance.security_groups or [])
    if not groups:
        default = backend.get_default_security_group(instance.vpc_id)
        groups = [default] if default else []
    return groups


def _endpoint_groups(backend, endpoint):
    # AWS: "If you do not specify a security group, we associate the default
    # security group for the VPC."
    ids = list(endpoint.security_group_ids or [])
    if not ids:
        default = backend.get_default_security_group(endpoint.vpc_id)
        return [default] if default else []
    return [g for g in (backend.get_security_group_from_id(i) for i in ids) if g is not None]


def _contains(outer, inner):
    try:
        return ipaddress.ip_network(inner, strict=False).subnet_of(ipaddress.ip_network(outer, strict=False))
    except (TypeError, ValueError):
        return False


def _admits_443(rules, cidr, group_ids):
    """Whether a rule lets TCP 443 through for a CIDR or one of the groups."""
    for rule in rules:
        if rule.ip_protocol != "-1" and not (rule.ip_protocol == "tcp" and rule.from_port <= 443 <= rule.to_port):
            continue
        if rule.ip_range.get("CidrIp") and _contains(rule.ip_range["CidrIp"], cidr):
            return True
        if (rule.source_group or {}).get("GroupId") in group_ids:
            return True
    return False


def _route_table(backend, subnet):
    """The subnet's route table: its explicit association, else its VPC's main table."""
    tables = [t for t in list(backend.route_tables.values()) if t.vpc_id == subnet.vpc_id]
    for table in tables:
        if subnet.id in list(table._associations.values()):
            return table
    for table in tables:
        if table.main_association_id is not None:
            return table
    return None


def _route_to(table, cidr):
    """The most specific route whose destination contains the CIDR, or None."""
    best = None
    for route in list(table.routes):
        dest = route.destination_cidr_block
        if dest and _contains(dest, cidr):
            if best is None or ipaddress.ip_network(dest).prefixlen > ipaddress.ip_network(best.destination_cidr_block).prefixlen:
                best = route
    return best


def _peerings(backends, vpc_a, vpc_b):
    found = {}
    for backend in backends:
        for pcx in list(backend.vpc_pcxs.values()):
            if pcx._status.code == "active" and {pcx.vpc.id, pcx.peer_vpc.id} == {vpc_a, vpc_b}:
                found[pcx.id] = pcx
    return found


def _target(route):
    if route.local:
        return "local"
    for attr in ("vpc_pcx", "gateway", "nat_gateway", "transit_gateway", "interface", "instance"):
        value = getattr(route, attr, None)
        if value is not None:
            return getattr(value, "id", str(value))
    return route.vpc_endpoint_id or "nowhere"


def _routed(table, where, cidr, what, pcxs):
    """None when the table sends the CIDR through one of the peerings, else why not."""
    names = ", ".join(sorted(pcxs))
    if table is None:
        return f"{where} has no route table, so no route to {what} through {names}"
    route = _route_to(table, cidr)
    if route is None:
        return f"route table {table.id} of {where} has no route to {what} through {names}"
    if route.vpc_pcx is None or route.vpc_pcx.id not in pcxs:
        return (f"route table {table.id} of {where} sends {what} through {_target(route)} "
                f"({route.destination_cidr_block}), not through {names}")
    return None


def _and(ids):
    return ", ".join(ids) if ids else "no group"


def _is_gateway(endpoint):
    return (endpoint.vpc_endpoint_type or "Gateway").lower() == "gateway"


def check_gateway_path(vpce_id, endpoint, worker_id, wb, wsubnet):
    """Raises Refused unless the worker's subnet routes through the gateway endpoint."""
    if endpoint.vpc_id != wsubnet.vpc_id:
        raise Refused(f"{vpce_id} is a gateway endpoint of {endpoint.vpc_id}; worker {worker_id} is in "
                      f"{wsubnet.vpc_id}, and a gateway endpoint is not reached across a peering")
    table = _route_table(wb, wsubnet)
    tables = set(endpoint.route_table_ids or [])
    if table is None or table.id not in tables:
        raise Refused(f"the route table {getattr(table, 'id', 'none')} of {wsubnet.id} is not one of gateway "
                      f"endpoint {vpce_id}'s ({_and(sorted(tables))})")


def check_worker_path(vpce_id, eb, endpoint, worker_id, wb, instance):
    """Raises Refused unless the worker's packets reach the endpoint on 443 and come back."""
    wsubnet = _subnet(wb, instance.subnet_id)
    if wsubnet is None:
        raise Refused(f"worker {worker_id} ({instance.id}) has no subnet, so no path to {vpce_id}")
    if _is_gateway(endpoint):
        return check_gateway_path(vpce_id, endpoint, worker_id, wb, wsubnet)
    wgroups = _groups_of(wb, instance)
    wgroup_ids = {g.id for g in wgroups}
    egroups = _endpoint_groups(eb, endpoint)
    egroup_ids = {g.id for g in egroups}

    ingress = [rule for g in egroups for rule in g.ingress_rules]
    if not _admits_443(ingress, wsubnet.cidr_block, wgroup_ids):
        names = sorted(egroup_ids)
        verb = "admits" if len(names) == 1 else "admit"
        raise Refused(f"{_and(names)} of {vpce_id} {verb} no TCP 443 from {wsubnet.id} ({wsubnet.cidr_block}) "
                      f"nor from the worker's groups ({_and(sorted(wgroup_ids))})")

    esubnets = [s for s in (_subnet(eb, i) for i in endpoint.subnet_ids or []) if s is not None]
    if not esubnets:
        raise Refused(f"{vpce_id} has no subnets, so no network interface to reach")

    pcxs = {}
    if endpoint.vpc_id != wsubnet.vpc_id:
        pcxs = _peerings([wb, eb], wsubnet.vpc_id, endpoint.vpc_id)
        if not pcxs:
            raise Refused(f"no active VPC peering joins {wsubnet.vpc_id} (worker {worker_id}, account {wb.account_id}) "
                          f"and {endpoint.vpc_id} ({vpce_id}, account {eb.account_id})")

    egress = [rule for g in wgroups for rule in g.egress_rules]
    reasons = []
    for esubnet in esubnets:
        what = f"{esubnet.id} ({esubnet.cidr_block}) of {vpce_id}"
        if not _admits_443(egress, esubnet.cidr_block, egroup_ids):
            reasons.append(f"the worker's groups ({_and(sorted(wgroup_ids))}) allow no TCP 443 out to {what}")
            continue
        if pcxs:
            reason = _routed(_route_table(wb, wsubnet), wsubnet.id, esubnet.cidr_block, what, pcxs)
            if reason is None:
                back = f"{wsubnet.id} ({wsubnet.cidr_block}) of worker {worker_id}"
                reason = _routed(_route_table(eb, esubnet), f"{esubnet.id} ({vpce_id})", wsubnet.cidr_block, back, pcxs)
                if reason is not None:
                    reason = f"no route back: {reason}"
            if reason is not None:
                reasons.append(reason)
                continue
        return
    raise Refused(reasons[0] if len(reasons) == 1 else "; ".join(reasons))


# ---------------------------------------------------------------- requests


def _worker_of(environ):
    for key in ("HTTP_USER_AGENT", "HTTP_X_AMZ_USER_AGENT"):
        m = _WORKER_UA.search(environ.get(key, ""))
        if m:
            return m.group(1)
    return None


def _service_of(environ):
    """The service of the SigV4 credential scope (header or presigned query), or None."""
    m = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    credential = m.group(1) if m else None
    if credential is None:
        values = parse_qs(environ.get("QUERY_STRING", "")).get("X-Amz-Credential")
        credential = values[0] if values else None
    m = _SCOPE.match(credential or "")
    return m.group(1) if m else None


def _count(worker, endpoint, service, allowed):
    with _lock:
        key = (worker, endpoint, service, allowed)
        _calls[key] = _calls.get(key, 0) + 1


def _strip(uri, vpce_id):
    """The URI (a path or a full URL, with its query) without /skiff/vpce/<id>."""
    prefix = f"{PREFIX}/{vpce_id}"
    start = uri.find(prefix)
    if start < 0:
        return uri
    rest = uri[start + len(prefix):]
    if not rest.startswith("/"):
        rest = "/" + rest
    return uri[:start] + rest


def _drain(environ):
    """Reads a refused request's body so the connection stays in step."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    length = environ.get("CONTENT_LENGTH")
    if length:
        stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        while stream.read(65536):
            pass


_QUERY_PROTOCOL = {"sts", "iam", "sns", "sqs", "autoscaling", "cloudformation", "elasticloadbalancing", "rds"}


def _refuse(environ, start_response, service, message):
    _drain(environ)
    code = "SkiffEndpointUnreachable"
    request_id = uuid.uuid4().hex
    text = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    headers = []
    if environ.get("HTTP_X_AMZ_TARGET") or (service not in _QUERY_PROTOCOL | {"s3", "ec2", None}):
        body = json.dumps({"__type": code, "message": message}).encode()
        headers += [("Content-Type", "application/x-amz-json-1.0"), ("X-Amzn-ErrorType", code)]
    elif service == "ec2":
        body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{text}</Message></Error></Errors>"
                f"<RequestID>{request_id}</RequestID></Response>").encode()
        headers.append(("Content-Type", "text/xml"))
    elif service in _QUERY_PROTOCOL:
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{text}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        headers.append(("Content-Type", "text/xml"))
    else:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{text}</Message>'
                f"<RequestId>{request_id}</RequestId></Error>").encode()
        headers.append(("Content-Type", "application/xml"))
    # A HEAD answer has no body: the reason also travels in a header.
    headers += [("Content-Length", str(len(body))), ("x-amz-request-id", request_id),
                ("x-skiff-refusal", message.encode("ascii", "replace").decode())]
    start_response("403 Forbidden", headers)
    return [body]


def gate(environ, start_response, serve):
    """Serves a request to /skiff/vpce/<id>/… as /… when the endpoint would carry it."""
    vpce_id = _GATE.match(environ["PATH_INFO"]).group(1)
    worker_id = _worker_of(environ)
    service = _service_of(environ)
    try:
        eb, endpoint = _endpoint(vpce_id)
        found = _worker(worker_id) if worker_id else None
        if found is not None:
            check_worker_path(vpce_id, eb, endpoint, worker_id, *found)
    except Refused as refused:
        if worker_id:
            _count(worker_id, vpce_id, service, False)
        return _refuse(environ, start_response, service, str(refused))
    if worker_id:
        _count(worker_id, vpce_id, service, True)
    environ["PATH_INFO"] = _strip(environ["PATH_INFO"], vpce_id)
    for key in ("RAW_URI", "REQUEST_URI"):
        if key in environ:
            environ[key] = _strip(environ[key], vpce_id)
    return serve(environ, start_response)


def control(environ, start_response):
    """The /skiff/vpce log: GET answers it, DELETE clears it."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "DELETE"):
        return _json(start_response, "405 Method Not Allowed", {"error": "GET or DELETE"})
    with _lock:
        if method == "DELETE":
            _calls.clear()
        calls = [
            {"worker": w, "endpoint": e, "service": s, "allowed": a, "count": n}
            for (w, e, s, a), n in sorted(_calls.items(), key=lambda kv: tuple(str(x) for x in kv[0]))
        ]
    return _json(start_response, "200 OK", {"calls": calls})


def _json(start_response, status, value):
    body = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def apply():
    """Wraps the dispatcher outermost, so every other handler sees the stripped path."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        path = environ.get("PATH_INFO", "")

        def serve(env, respond):
            return original(self, env, respond)

        if path.rstrip("/") == PREFIX:
            return control(environ, start_response)
        if _GATE.match(path):
            return gate(environ, start_response, serve)
        worker_id = _worker_of(environ)
        if worker_id:
            _count(worker_id, None, _service_of(environ), True)
        return serve(environ, start_response)

    DomainDispatcherApplication.__call__ = call
