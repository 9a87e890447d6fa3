-- net.verify against the emulator: a ready private network passes; each gap
-- (a missing endpoint, route or security group rule, private DNS off, no
-- peering, a Gateway S3 endpoint) becomes one exact finding; strict = true
-- raises a structured "preflight" error carrying the report.
--
-- CIDRs are 10.17x–10.19x, distinct per test; every name is unique.

-- A worker VPC with one subnet and a group admitting HTTPS from `admit`
-- (default: the whole VPC), plus interface endpoints for `services`.
local function worker(octet, services, admit)
  local vpc = ec2.vpc{ name = spec.unique("verify-w"), cidr = string.format("10.%d.0.0/16", octet) }
  local subnet = ec2.subnet{ vpc = vpc, cidr = string.format("10.%d.1.0/24", octet) }
  local sg = ec2.security_group{ vpc = vpc, name = spec.unique("endpoints"), ingress = { { port = 443, cidr = admit or vpc.cidr } } }
  local endpoints = {}
  for _, svc in ipairs(services or {}) do
    endpoints[svc] = create_endpoint{ vpc = vpc, service = svc, subnets = { subnet }, security_groups = { sg } }
  end
  return { vpc = vpc, subnet = subnet, sg = sg, endpoints = endpoints }
end

-- A repository VPC in account `other` (eu-west-1) with an S3 interface endpoint admitting `admit`.
local function repository(octet, admit)
  local vpc = ec2.vpc{ name = spec.unique("verify-r"), cidr = string.format("10.%d.0.0/16", octet), account = "other" }
  local subnet = ec2.subnet{ vpc = vpc, cidr = string.format("10.%d.1.0/24", octet) }
  local sg = ec2.security_group{ vpc = vpc, name = spec.unique("s3"), ingress = { { port = 443, cidr = admit } } }
  local s3 = create_endpoint{ vpc = vpc, service = "s3", subnets = { subnet }, security_groups = { sg } }
  return { vpc = vpc, subnet = subnet, sg = sg, s3 = s3 }
end

local function finding(resource, service, problem)
  return { resource = resource, service = service, problem = problem, message = resource .. ": " .. problem }
end

describe("net.verify", function()
  it("passes a ready private network across accounts and regions", function()
    local w = worker(170, { "ssm", "sqs" })
    local r = repository(171, w.vpc.cidr)
    peer_vpcs{ requester = w.vpc, accepter = r.vpc }
    local report = net.verify{ subnets = { w.subnet }, services = { "ssm", "sqs" }, repository_vpc = r.vpc }
    expect(report):to_equal({ ok = true, findings = {} })
    -- strict = true returns the same report when there is nothing to say.
    expect(net.verify{ subnets = { w.subnet.id }, services = { "ssm" }, repository_vpc = r.vpc, strict = true })
      :to_equal({ ok = true, findings = {} })
  end)

  it("names the worker VPC when an interface endpoint is missing", function()
    local w = worker(172, { "ssm" })
    local report = net.verify{ subnets = { w.subnet }, services = { "ssm", "ebs" } }
    expect(report.ok):to_be(false)
    expect(report.findings):to_equal({
      finding(w.vpc.id, "ebs", "worker VPC has no interface endpoint for ebs (com.amazonaws.us-east-1.ebs)"),
    })
    create_endpoint{ vpc = w.vpc, service = "ebs", subnets = { w.subnet }, security_groups = { w.sg } }
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm", "ebs" } }):to_equal({ ok = true, findings = {} })
  end)

  it("names the repository VPC when it has no S3 endpoint", function()
    local w = worker(173)
    local r = ec2.vpc{ name = spec.unique("verify-r"), cidr = "10.174.0.0/16", region = "us-west-2" }
    peer_vpcs{ requester = w.vpc, accepter = r }
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = r }
    expect(report.findings):to_equal({
      finding(r.id, "s3", "repository VPC has no interface endpoint for s3 (com.amazonaws.us-west-2.s3)"),
    })
  end)

  it("names the route tables that lack a route through the peering", function()
    local w = worker(175)
    local r = repository(176, w.vpc.cidr)
    local bare = peer_vpcs{ requester = w.vpc, accepter = r.vpc, routes = false }
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = r.vpc }
    expect(report.ok):to_be(false)
    expect(report.findings):to_have_length(2)
    -- Adding the routes shows which tables those were.
    local routed = peer_vpcs{ requester = w.vpc, accepter = r.vpc }
    expect(routed.id):to_equal(bare.id)
    local tables = {}
    for _, route in ipairs(routed.routes) do tables[route.side] = route.route_table end
    expect(report.findings):to_equal({
      finding(tables.requester, nil, "has no route to 10.176.1.0/24 through " .. bare.id),
      finding(tables.accepter, nil, "has no route to 10.175.1.0/24 through " .. bare.id),
    })
    expect(net.verify{ subnets = { w.subnet }, repository_vpc = r.vpc }):to_equal({ ok = true, findings = {} })
  end)

  it("names the worker VPC when it is not peered with the repository", function()
    local w = worker(177)
    local r = repository(178, w.vpc.cidr)
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = r.vpc }
    expect(report.findings):to_equal({
      finding(w.vpc.id, nil, string.format("is not peered with the repository VPC %s (account other, region eu-west-1)", r.vpc.id)),
    })
  end)

  it("names the endpoint whose security group does not admit the workers", function()
    local w = worker(179, { "ssm" }, "192.168.0.0/24")
    local e = w.endpoints.ssm
    local report = net.verify{ subnets = { w.subnet }, services = { "ssm" } }
    expect(report.findings):to_equal({
      finding(e.id, "ssm", string.format("security group %s does not allow inbound TCP 443 from the worker subnet %s (10.179.1.0/24)", w.sg.id, w.subnet.id)),
    })
    -- The group is reconciled by running the same primitive with the rule added.
    ec2.security_group{ vpc = w.vpc, name = w.sg.name, ingress = { { port = 443, cidr = w.subnet.cidr } } }
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm" } }.ok):to_be(true)
  end)

  it("checks the repository's S3 group against the worker subnet", function()
    local w = worker(180)
    local r = repository(181, "10.99.0.0/16")
    peer_vpcs{ requester = w.vpc, accepter = r.vpc }
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = r.vpc }
    expect(report.findings):to_equal({
      finding(r.s3.id, "s3", string.format("security group %s does not allow inbound TCP 443 from the worker subnet %s (10.180.1.0/24)", r.sg.id, w.subnet.id)),
    })
  end)

  it("checks one address with from = …", function()
    local w = worker(182, { "ssm" }, "10.182.1.10/32")
    local e = w.endpoints.ssm
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm" } }.findings):to_equal({
      finding(e.id, "ssm", string.format("security group %s does not allow inbound TCP 443 from the worker subnet %s (10.182.1.0/24)", w.sg.id, w.subnet.id)),
    })
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm" }, from = "10.182.1.10/32" })
      :to_equal({ ok = true, findings = {} })
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm" }, from = "10.182.1.11/32" }.findings):to_equal({
      finding(e.id, "ssm", string.format("security group %s does not allow inbound TCP 443 from the address in subnet %s (10.182.1.11/32)", w.sg.id, w.subnet.id)),
    })
    expect(function() net.verify{ subnets = { w.subnet }, from = "10.9.9.9/32" } end)
      :to_fail(string.format("net.verify: opts.from: 10.9.9.9/32 is not inside subnet %s (10.182.1.0/24)", w.subnet.id))
  end)

  it("names an endpoint with private DNS off", function()
    local w = worker(183)
    local e = create_endpoint{ vpc = w.vpc, service = "ssmmessages", subnets = { w.subnet }, security_groups = { w.sg }, private_dns = false }
    expect(net.verify{ subnets = { w.subnet }, services = { "ssmmessages" } }.findings):to_equal({
      finding(e.id, "ssmmessages", "has private DNS turned off, so ssmmessages's public name does not resolve to it"),
    })
  end)

  it("reports a Gateway S3 endpoint as unsupported for private deployment", function()
    local w = worker(185)
    local gw = create_endpoint{ vpc = w.vpc, service = "s3", type = "Gateway" }
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = w.vpc }
    expect(report.ok):to_be(false)
    expect(report.findings):to_equal({
      finding(gw.id, "s3", "is a Gateway endpoint for s3, which private deployment does not support; create an Interface endpoint for s3 in " .. w.vpc.id),
    })
  end)

  it("reports overlapping worker and repository CIDRs", function()
    local w = worker(186)
    local r = ec2.vpc{ name = spec.unique("verify-r"), cidr = "10.186.0.0/20", region = "us-west-2" }
    local report = net.verify{ subnets = { w.subnet }, repository_vpc = r }
    expect(report.findings[1]):to_equal(
      finding(r.id, nil, string.format("CIDR 10.186.0.0/20 overlaps the worker VPC %s (10.186.0.0/16); peered VPCs need disjoint CIDRs", w.vpc.id)))
  end)

  it("checks the given worker groups, each in the VPC of a subnet", function()
    local w = worker(189, { "ssm" })
    local app = ec2.security_group{ vpc = w.vpc, name = spec.unique("app") }
    -- A new group allows everything out (the gaps are in tests/it/verify_groups.rs).
    expect(net.verify{ subnets = { w.subnet }, services = { "ssm" }, groups = { app } })
      :to_equal({ ok = true, findings = {} })
    local elsewhere = worker(184)
    expect(function() net.verify{ subnets = { w.subnet }, groups = { app.id, elsewhere.sg } } end)
      :to_fail(string.format("net.verify: opts.groups[2]: %s is in %s, which holds none of the subnets (%s)",
        elsewhere.sg.id, elsewhere.vpc.id, w.subnet.id))
    expect(function() net.verify{ subnets = { w.subnet }, groups = { w.subnet } } end)
      :to_fail(string.format("net.verify: opts.groups[1]: expected a security group, got a subnet (%s)", w.subnet.id))
    expect(function() net.verify{ subnets = { w.subnet }, groups = { w.vpc.id } } end)
      :to_fail(string.format('net.verify: opts.groups[1]: expected a security group (a table from ec2.security_group or an "sg-…" id), got %q', w.vpc.id))
    expect(function() net.verify{ subnets = { w.subnet }, groups = { "sg-0123456789abcdef0" } } end)
      :to_fail("net.verify: opts.groups[1]: no security group sg-0123456789abcdef0 in account default, region us-east-1")
  end)

  it("with strict = true raises a structured preflight error carrying the report", function()
    local w = worker(187, { "ssm" })
    local expected = finding(w.vpc.id, "sqs", "worker VPC has no interface endpoint for sqs (com.amazonaws.us-east-1.sqs)")
    local message = "the private network is not ready (1 findings):\n  - " .. expected.message
    local err = expect(function()
      net.verify{ subnets = { w.subnet }, services = { "ssm", "sqs" }, strict = true }
    end):to_fail("net.verify: " .. message)
    expect(getmetatable(err).__name):to_equal("skiff.error")
    expect(err.kind):to_equal("preflight")
    expect(err.op):to_equal("net.verify")
    expect(err.message):to_equal(message)
    expect(err.retryable):to_be(false)
    expect(err.code):to_be_nil()
    expect(err.where):to_match("verify_spec%.lua:%d+$")
    expect(err.details):to_equal({ ok = false, findings = { expected } })
    expect(tostring(err)):to_equal(err.where .. ": net.verify: " .. message)
  end)

  it("refuses bad options before looking at anything", function()
    local w = worker(188)
    expect(function() net.verify{ subnets = {} } end)
      :to_fail("net.verify: opts.subnets: name at least one worker subnet")
    expect(function() net.verify{ services = { "ssm" } } end):to_fail("net.verify: opts.subnets: required")
    expect(function() net.verify{ subnets = { w.subnet }, services = { "sqq" } } end)
      :to_fail('net.verify: opts.services[1]: unknown service "sqq" (did you mean "sqs"?); known services: ' .. table.concat(net.services, ", "))
    expect(function() net.verify{ subnets = { w.vpc } } end)
      :to_fail(string.format("net.verify: opts.subnets[1]: expected a subnet, got a VPC (%s)", w.vpc.id))
    expect(function() net.verify{ subnets = { w.vpc.id } } end)
      :to_fail(string.format('net.verify: opts.subnets[1]: expected a subnet (a table from ec2.subnet or a "subnet-…" id), got %q', w.vpc.id))
    expect(function() net.verify{ subnets = { w.subnet }, repository_vpc = w.subnet } end)
      :to_fail(string.format("net.verify: opts.repository_vpc: expected a VPC, got a subnet (%s)", w.subnet.id))
    expect(function() net.verify{ subnets = { w.subnet }, from = "10.188.1.1" } end)
      :to_fail('net.verify: opts.from: invalid CIDR "10.188.1.1": expected address/prefix such as 10.0.0.0/16')
    expect(function() net.verify{ subnets = { w.subnet }, services = "ssm" } end)
      :to_fail("net.verify: opts.services: expected list, got string")
    expect(function() net.verify{ subnets = { w.subnet }, strict = 1 } end)
      :to_fail("net.verify: opts.strict: expected boolean, got number")
    expect(function() net.verify{ subnets = { w.subnet }, service = { "ssm" } } end)
      :to_fail("net.verify: opts.service: unknown option; expected one of subnets, services, repository_vpc, from, groups, strict, account, region")
  end)
end)

describe("net.services", function()
  it("lists the short names create_endpoint and net.verify accept, sorted", function()
    for _, s in ipairs({ "ssm", "ssmmessages", "ec2messages", "sqs", "ebs", "s3", "kinesis-streams", "sts", "kms", "logs" }) do
      expect(net.services):to_contain(s)
    end
    expect(net.services):to_have_length(29)
    local sorted = { table.unpack(net.services) }
    table.sort(sorted)
    expect(net.services):to_equal(sorted)
  end)
end)
