--- @meta
-- LuaLS annotations for the endpoint and peering primitives (globals
-- `create_endpoint`, `peer_vpcs`) and the `net` namespace (`net.verify`,
-- `net.services`), from src/api/net.rs. Resource argument types
-- (`skiff.VpcRef`, …) are in ec2.lua.

-- ─── create_endpoint ────────────────────────────────────────────────────────

--- @alias skiff.EndpointType "Interface"|"Gateway"

--- @class skiff.EndpointOpts
---
--- The VPC the endpoint belongs to.
--- @field vpc skiff.VpcRef
---
--- Short service name, one of `net.services` (`"ssm"`, `"ssmmessages"`,
--- `"ec2messages"`, `"sqs"`, `"ebs"`, `"s3"`, `"kinesis-streams"`, …),
--- expanded to `com.amazonaws.<region>.<service>`. An unknown name is
--- refused before any call, with the closest known one suggested.
--- @field service string
---
--- Subnets the interface endpoint is reachable in: at least one for
--- `"Interface"`, one per availability zone, all in `vpc`; none for
--- `"Gateway"`. An existing endpoint gains those it lacks (a second subnet in
--- a zone it already uses is a `conflict`).
--- (default: `{}`)
--- @field subnets? skiff.SubnetRef[]
---
--- Security groups of an interface endpoint, all in `vpc`; none for
--- `"Gateway"`. An existing endpoint gains those it lacks.
--- (default: `{}`)
--- @field security_groups? skiff.SecurityGroupRef[]
---
--- Private DNS, so the service's public name resolves to the endpoint; needs
--- a VPC with DNS support and hostnames (`ec2.vpc{…, dns = true}`). Given
--- explicitly, it is also changed on an existing endpoint. A Gateway endpoint
--- has none (`true` is refused).
--- (default: `true` for Interface endpoints except s3, whose private DNS needs
--- a Gateway endpoint beside it; `false` for Gateway endpoints)
--- @field private_dns? boolean
---
--- `"Interface"` or `"Gateway"` (case-insensitive). Gateway endpoints exist
--- only for s3 and dynamodb and are attached to every route table of the VPC.
--- (default: `"Interface"`)
--- @field type? skiff.EndpointType|string
---
--- `Name` tag of an endpoint this call creates.
--- (default: `"<VPC name, else VPC id>-<service>"`)
--- @field name? string
---
--- Extra tags of an endpoint this call creates (besides `Name` and `skiff:managed`).
--- (default: `{}`)
--- @field tags? table<string, string>
---
--- Account in which id strings are looked up (a table carries its own). The
--- subnets and security groups must be in the VPC's account and region.
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which id strings are looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- @class skiff.Endpoint
--- @field kind "endpoint"
--- @field id string `vpce-…`
--- @field service string Short name, e.g. `"ssm"`.
--- @field service_name string Full name, e.g. `"com.amazonaws.us-east-1.ssm"`.
--- @field type skiff.EndpointType
--- @field vpc_id string
--- @field subnets string[] Subnet ids (Interface endpoints).
--- @field security_groups string[] Security group ids (Interface endpoints).
--- @field route_tables string[] Route table ids (Gateway endpoints).
--- @field private_dns boolean
--- @field state string As AWS reports it, e.g. `"available"`.
--- @field dns_names string[] The endpoint's own DNS names.
--- @field region string
--- @field account string
--- @field created boolean Whether this call created it.

--- Finds the endpoint for `opts.service` of `opts.type` in `opts.vpc`, else
--- creates it and waits until it is available (up to 10 minutes). An
--- existing endpoint gains the subnets and security groups it lacks.
---
--- ```lua
--- create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { sg } }
--- create_endpoint{ vpc = vpc, service = "s3", type = "Gateway" }
--- ```
--- @param opts skiff.EndpointOpts
--- @return skiff.Endpoint
function create_endpoint(opts) end

-- ─── peer_vpcs ──────────────────────────────────────────────────────────────

--- @class skiff.PeeringOpts
---
--- The VPC that requests the peering; it is created in this VPC's account
--- and region.
--- @field requester skiff.VpcRef
---
--- The VPC that accepts it, in any account and region; accepted in its
--- account. Its blocks must not overlap the requester's.
--- @field accepter skiff.VpcRef
---
--- Add a route to the peer's blocks through the connection in every route
--- table of both VPCs. A table that already sends such a block elsewhere is a
--- `conflict`, detected before anything is created.
--- (default: `true`)
--- @field routes? boolean
---
--- `Name` tag of a connection this call creates.
--- (default: `"<requester name, else id>-<accepter name, else id>"`)
--- @field name? string
---
--- Account in which id strings are looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which id strings are looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- One end of a peering.
--- @class skiff.PeeringSide
--- @field vpc_id string
--- @field cidr string The VPC's primary block.
--- @field region string
--- @field account string Account name.
--- @field account_id string 12-digit AWS account id.

--- A route `peer_vpcs` made sure of.
--- @class skiff.PeeringRoute
--- @field side "requester"|"accepter" Whose VPC the route table belongs to.
--- @field route_table string `rtb-…`
--- @field destination string The peer's block.
--- @field added boolean Whether this call added it (false: it was there).

--- @class skiff.Peering
--- @field kind "peering"
--- @field id string `pcx-…`
--- @field status string `"active"` once `peer_vpcs` returns.
--- @field requester skiff.PeeringSide
--- @field accepter skiff.PeeringSide
--- @field routes skiff.PeeringRoute[] Empty with `routes = false`.
--- @field created boolean Whether this call created the connection.

--- Finds the live peering between the two VPCs (either direction), else
--- requests it in the requester's account and region; accepts it in the
--- accepter's account, waits until it is active (up to 2 minutes for each
--- step), then adds the routes.
---
--- ```lua
--- peer_vpcs{ requester = workers, accepter = repository }
--- ```
--- @param opts skiff.PeeringOpts
--- @return skiff.Peering
function peer_vpcs(opts) end

-- ─── net ────────────────────────────────────────────────────────────────────

net = {}

--- Every short service name `create_endpoint` and `net.verify` accept, sorted.
--- @type string[]
net.services = {}

--- @class skiff.VerifyOpts
---
--- The worker subnets to check from; at least one.
--- @field subnets skiff.SubnetRef[]
---
--- Short names of the services workers reach through interface endpoints in
--- their own VPC (see `net.services`).
--- (default: `{}`)
--- @field services? string[]
---
--- The VPC holding the repository's S3 interface endpoint, when workers
--- reach it through peering (or the workers' own VPC).
--- (default: none; S3 and peering are not checked)
--- @field repository_vpc? skiff.VpcRef
---
--- The block the traffic comes from, inside every subnet, e.g. an
--- appliance's `"10.1.1.10/32"`.
--- (default: each subnet's own block)
--- @field from? string
---
--- Raise a `skiff.error` of kind `"preflight"` (its `details` the report)
--- when anything is found, instead of returning the report.
--- (default: `false`)
--- @field strict? boolean
---
--- Account in which id strings are looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which id strings are looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- One gap in the private network.
--- @class skiff.Finding
--- @field resource string The resource at fault: `vpce-…`, `vpc-…`, `rtb-…`, `pcx-…`, `acl-…`, `subnet-…`.
--- @field service? string The service concerned, when there is one.
--- @field problem string What is missing or wrong, e.g. `"has no route to 10.30.1.0/24 through pcx-…"`.
--- @field message string `"<resource>: <problem>"`.

--- @class skiff.VerifyReport
--- @field ok boolean True when there are no findings.
--- @field findings skiff.Finding[]

--- The private-network preflight. For each worker subnet: every service has
--- an available Interface endpoint in the subnet's VPC, with private DNS
--- (except s3), whose security groups allow inbound TCP 443 from the subnet
--- (or `from`). With `repository_vpc`: an S3 Interface endpoint there (a
--- Gateway endpoint is reported as unsupported) admitting the subnet, CIDRs
--- that do not overlap, an active peering, and routes through it both ways.
--- On every path, the network ACLs of both ends must let TCP 443 through and
--- the replies back on ephemeral ports (1024–65535), since ACLs are stateless.
---
--- ```lua
--- local report = net.verify{ subnets = { a }, services = { "ssm", "sqs" }, repository_vpc = repo }
--- for _, f in ipairs(report.findings) do print(f.message) end
--- ```
--- @param opts skiff.VerifyOpts
--- @return skiff.VerifyReport
function net.verify(opts) end
