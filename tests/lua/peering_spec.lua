-- peer_vpcs against the emulator: within a region, across regions and across
-- accounts (the runner's skiff.toml declares `other`, whose region is
-- eu-west-1); routes to the peer's CIDR on both sides; idempotency; and the
-- refusals (overlap, self-peering, a route already leading elsewhere) that
-- happen before anything is created.
--
-- CIDRs are 10.15x.0.0/16 and 10.16x.0.0/16, distinct per test.

local function vpc(octet, opts)
  opts = opts or {}
  opts.name = spec.unique("peer")
  opts.cidr = opts.cidr or string.format("10.%d.0.0/16", octet)
  return ec2.vpc(opts)
end

local function route_of(p, side)
  for _, r in ipairs(p.routes) do
    if r.side == side then return r end
  end
end

describe("peer_vpcs", function()
  it("peers two VPCs of one region and routes each to the other", function()
    local a, b = vpc(150), vpc(151)
    local p = peer_vpcs{ requester = a, accepter = b }
    expect(p.kind):to_equal("peering")
    expect(p.id):to_match("^pcx%-%x+$")
    expect(p.status):to_equal("active")
    expect(p.created):to_be(true)
    expect(p.requester):to_equal({
      vpc_id = a.id, cidr = a.cidr, region = "us-east-1", account = "default", account_id = a.account_id,
    })
    expect(p.accepter):to_equal({
      vpc_id = b.id, cidr = b.cidr, region = "us-east-1", account = "default", account_id = b.account_id,
    })
    expect(p.routes):to_have_length(2)
    local there, back = route_of(p, "requester"), route_of(p, "accepter")
    expect(there.destination):to_equal("10.151.0.0/16")
    expect(there.route_table):to_match("^rtb%-%x+$")
    expect(there.added):to_be(true)
    expect(back.destination):to_equal("10.150.0.0/16")
    expect(back.added):to_be(true)
    expect(back.route_table ~= there.route_table):to_be(true)
  end)

  it("is idempotent: a second call finds the peering and its routes", function()
    local a, b = vpc(152), vpc(153)
    local first = peer_vpcs{ requester = a, accepter = b }
    local second = peer_vpcs{ requester = a, accepter = b }
    expect(second.id):to_equal(first.id)
    expect(second.created):to_be(false)
    expect(second.status):to_equal("active")
    expect(second.routes):to_have_length(2)
    for _, r in ipairs(first.routes) do
      r.added = false
      expect(second.routes):to_contain(r)
    end
    -- Named the other way round, it is still the same connection.
    local reverse = peer_vpcs{ requester = b.id, accepter = a.id }
    expect(reverse.id):to_equal(first.id)
    expect(reverse.created):to_be(false)
    expect(reverse.routes):to_have_length(2)
    for _, r in ipairs(reverse.routes) do expect(r.added):to_be(false) end
  end)

  it("peers across regions", function()
    local a, b = vpc(154), vpc(155, { region = "us-west-2" })
    local p = peer_vpcs{ requester = a, accepter = b }
    expect(p.status):to_equal("active")
    expect(p.requester.region):to_equal("us-east-1")
    expect(p.accepter.region):to_equal("us-west-2")
    expect(route_of(p, "accepter").destination):to_equal(a.cidr)
    expect(peer_vpcs{ requester = a, accepter = b }.id):to_equal(p.id)
  end)

  it("peers across accounts: requested in the requester's, accepted in the accepter's", function()
    local a = vpc(156)
    local b = vpc(157, { account = "other" })
    local p = peer_vpcs{ requester = a, accepter = b }
    expect(p.status):to_equal("active")
    expect(p.created):to_be(true)
    expect(p.requester.account):to_equal("default")
    expect(p.requester.account_id):to_equal(a.account_id)
    expect(p.accepter.account):to_equal("other")
    expect(p.accepter.region):to_equal("eu-west-1")
    expect(p.accepter.account_id):to_equal(b.account_id)
    expect(p.accepter.account_id ~= p.requester.account_id):to_be(true)
    expect(route_of(p, "requester").destination):to_equal("10.157.0.0/16")
    expect(route_of(p, "accepter").destination):to_equal("10.156.0.0/16")
    local again = peer_vpcs{ requester = a, accepter = b }
    expect(again.id):to_equal(p.id)
    expect(again.created):to_be(false)
    -- An id with account = … names the accepter in that account.
    local by_id = peer_vpcs{ requester = a, accepter = { id = b.id, account = "other", region = "eu-west-1" } }
    expect(by_id.id):to_equal(p.id)
  end)

  it("adds no routes with routes = false, and adds them on a later call", function()
    local a, b = vpc(158), vpc(159)
    local p = peer_vpcs{ requester = a, accepter = b, routes = false, name = spec.unique("link") }
    expect(p.status):to_equal("active")
    expect(p.routes):to_equal({})
    local routed = peer_vpcs{ requester = a, accepter = b }
    expect(routed.id):to_equal(p.id)
    expect(routed.created):to_be(false)
    expect(routed.routes):to_have_length(2)
    for _, r in ipairs(routed.routes) do expect(r.added):to_be(true) end
  end)

  it("refuses overlapping CIDRs before any call", function()
    local a = vpc(160)
    local b = vpc(nil, { cidr = "10.160.128.0/17", region = "us-west-2" })
    expect(function() peer_vpcs{ requester = a, accepter = b } end)
      :to_fail(string.format("peer_vpcs: opts.accepter: CIDR 10.160.128.0/17 of %s overlaps CIDR 10.160.0.0/16 of %s; peered VPCs need disjoint CIDRs", b.id, a.id))
  end)

  it("refuses to peer a VPC with itself", function()
    local a = vpc(161)
    expect(function() peer_vpcs{ requester = a, accepter = a.id } end)
      :to_fail(string.format("peer_vpcs: opts.accepter: %s cannot be peered with itself", a.id))
  end)

  it("refuses a route that already leads elsewhere, as a conflict that creates nothing", function()
    local a, b = vpc(162), vpc(163)
    local c = vpc(163, { region = "us-west-2" })
    local ab = peer_vpcs{ requester = a, accepter = b }
    local rtb = route_of(ab, "requester").route_table
    local err = expect(function() peer_vpcs{ requester = a, accepter = c } end)
      :to_fail(string.format("peer_vpcs: opts.requester: route table %s of %s already sends 10.163.0.0/16 to %s; remove that route or peer a different VPC", rtb, a.id, ab.id))
    expect(err.kind):to_equal("conflict")
    expect(err.op):to_equal("peer_vpcs")
    -- Nothing was created: without routes, the peering is new.
    local ac = peer_vpcs{ requester = a, accepter = c, routes = false }
    expect(ac.created):to_be(true)
    expect(ac.id ~= ab.id):to_be(true)
  end)

  it("refuses arguments that are not VPCs, naming the field", function()
    local a = vpc(164)
    local s = ec2.subnet{ vpc = a, cidr = "10.164.1.0/24" }
    expect(function() peer_vpcs{ requester = a, accepter = s } end)
      :to_fail(string.format("peer_vpcs: opts.accepter: expected a VPC, got a subnet (%s)", s.id))
    expect(function() peer_vpcs{ requester = s.id, accepter = a } end)
      :to_fail(string.format('peer_vpcs: opts.requester: expected a VPC (a table from ec2.vpc or a "vpc-…" id), got %q', s.id))
    expect(function() peer_vpcs{ requester = a, accepter = "vpc-00000000000000000" } end)
      :to_fail("peer_vpcs: opts.accepter: no VPC vpc-00000000000000000 in account default, region us-east-1")
    expect(function() peer_vpcs{ requester = a } end):to_fail("peer_vpcs: opts.accepter: required")
    expect(function() peer_vpcs{ requester = a, accepter = a, routes = "no" } end)
      :to_fail("peer_vpcs: opts.routes: expected boolean, got string")
    expect(function() peer_vpcs{ requester = a, accepter = { id = "vpc-1", account = "nobody" } } end)
      :to_fail('peer_vpcs: opts.accepter.account: unknown account "nobody": skiff.toml declares "other"')
    expect(function() peer_vpcs{ requester = a, peer = a } end)
      :to_fail("peer_vpcs: opts.peer: unknown option; expected one of requester, accepter, routes, name, account, region")
  end)
end)
