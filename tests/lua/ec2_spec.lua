-- ec2.vpc, ec2.subnet and ec2.security_group against the emulator: the tables
-- they return, idempotency (a second call finds what the first created), and
-- the exact message of every kind of bad input.
--
-- Every VPC gets a fresh name from spec.unique, so the file can run again and
-- again against the same emulator; CIDRs are 10.1xx.0.0/16, distinct per test.

local function vpc(octet, opts)
  opts = opts or {}
  opts.name = opts.name or spec.unique("ec2")
  opts.cidr = opts.cidr or string.format("10.%d.0.0/16", octet)
  return ec2.vpc(opts)
end

describe("ec2.vpc", function()
  it("creates a VPC and returns its description", function()
    local name = spec.unique("vpc")
    local v = ec2.vpc{ name = name, cidr = "10.100.0.0/16" }
    expect(v.kind):to_equal("vpc")
    expect(v.id):to_match("^vpc%-%x+$")
    expect(v.name):to_equal(name)
    expect(v.cidr):to_equal("10.100.0.0/16")
    expect(v.cidrs):to_equal({ "10.100.0.0/16" })
    expect(v.region):to_equal("us-east-1")
    expect(v.account):to_equal("default")
    expect(v.account_id):to_match("^%d%d%d%d%d%d%d%d%d%d%d%d$")
    expect(v.default):to_be(false)
    expect(v.created):to_be(true)
  end)

  it("is idempotent: a second call returns the same VPC, not created", function()
    local name = spec.unique("vpc")
    local first = ec2.vpc{ name = name, cidr = "10.101.0.0/16", tags = { team = "storage" } }
    local second = ec2.vpc{ name = name, cidr = "10.101.0.0/16", tags = { team = "storage" } }
    expect(second.id):to_equal(first.id)
    expect(first.created):to_be(true)
    expect(second.created):to_be(false)
    second.created = true
    expect(second):to_equal(first)
  end)

  it("accepts dns = false and every /16 to /28 block", function()
    local v = ec2.vpc{ name = spec.unique("vpc"), cidr = "10.102.0.0/28", dns = false }
    expect(v.cidr):to_equal("10.102.0.0/28")
    expect(v.created):to_be(true)
  end)

  it("creates in another region with region = …", function()
    local v = vpc(103, { region = "us-west-2" })
    expect(v.region):to_equal("us-west-2")
    expect(v.account):to_equal("default")
    local again = vpc(103, { name = v.name, region = "us-west-2" })
    expect(again.id):to_equal(v.id)
  end)

  it("creates in another account with account = …, in that account's region", function()
    local mine = vpc(104)
    local theirs = vpc(105, { account = "other" })
    expect(theirs.account):to_equal("other")
    expect(theirs.region):to_equal("eu-west-1")
    expect(theirs.account_id):to_match("^%d+$")
    expect(theirs.account_id ~= mine.account_id):to_be(true)
  end)

  it("refuses a name that exists with another CIDR, as a conflict", function()
    local v = vpc(106)
    local err = expect(function()
      ec2.vpc{ name = v.name, cidr = "10.107.0.0/16" }
    end):to_fail(string.format(
      'ec2.vpc: opts.cidr: VPC %q (%s) already exists in account default, region us-east-1 with CIDR 10.106.0.0/16, not 10.107.0.0/16',
      v.name, v.id))
    expect(err.kind):to_equal("conflict")
    expect(err.op):to_equal("ec2.vpc")
    expect(err.retryable):to_be(false)
    expect(err.code):to_be_nil()
  end)

  it("refuses malformed CIDRs, naming the field", function()
    local cases = {
      ["10.0.0.0/33"] = 'prefix length /33 is larger than /32',
      ["10.0.0.1/16"] = 'host bits are set; the network is 10.0.0.0/16',
      ["not-a-cidr"] = 'expected address/prefix such as 10.0.0.0/16',
      ["10.0.0/16"] = '"10.0.0" is not an IPv4 address',
      ["10.0.0.256/24"] = '"10.0.0.256" is not an IPv4 address',
      ["10.0.0.0/"] = '"" is not a prefix length',
      ["10.0.0.0/-1"] = '"-1" is not a prefix length',
    }
    for cidr, why in pairs(cases) do
      expect(function() ec2.vpc{ name = "x", cidr = cidr } end)
        :to_fail(string.format("ec2.vpc: opts.cidr: invalid CIDR %q: %s", cidr, why))
    end
  end)

  it("refuses blocks larger than /16 or smaller than /28", function()
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/8" } end)
      :to_fail("ec2.vpc: opts.cidr: 10.0.0.0/8: a VPC's block must be between /16 and /28")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/29" } end)
      :to_fail("ec2.vpc: opts.cidr: 10.0.0.0/29: a VPC's block must be between /16 and /28")
  end)

  it("refuses bad options, naming the field", function()
    expect(function() ec2.vpc("x") end)
      :to_fail("ec2.vpc: expected an options table ec2.vpc{…}, got string")
    expect(function() ec2.vpc() end)
      :to_fail("ec2.vpc: expected an options table ec2.vpc{…}, got nil")
    expect(function() ec2.vpc{ cidr = "10.0.0.0/16" } end):to_fail("ec2.vpc: opts.name: required")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", tags = { ["skiff:managed"] = "no" } } end)
      :to_fail('ec2.vpc: opts.tags.skiff:managed: tags starting with "skiff:" are skiff\'s own (it reads them back to find its work); give the tag another name')
    expect(function() ec2.vpc{ name = "x" } end):to_fail("ec2.vpc: opts.cidr: required")
    expect(function() ec2.vpc{ name = "  ", cidr = "10.0.0.0/16" } end)
      :to_fail("ec2.vpc: opts.name: must not be empty")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", cdir = "y" } end)
      :to_fail("ec2.vpc: opts.cdir: unknown option; expected one of name, cidr, dns, tags, account, region")
    expect(function() ec2.vpc{ name = "x", cidr = 10 } end)
      :to_fail("ec2.vpc: opts.cidr: expected string, got number")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", dns = "yes" } end)
      :to_fail("ec2.vpc: opts.dns: expected boolean, got string")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", tags = { team = 1 } } end)
      :to_fail("ec2.vpc: opts.tags.team: expected string, got number")
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", account = "nobody" } end)
      :to_fail('ec2.vpc: opts.account: unknown account "nobody": skiff.toml declares "other"')
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", region = "mars-1" } end)
      :to_fail('ec2.vpc: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() ec2.vpc{ name = "x", cidr = "10.0.0.0/16", region = 1 } end)
      :to_fail("ec2.vpc: opts.region: expected string, got number")
  end)
end)

describe("ec2.subnet", function()
  it("creates a subnet in the region's first zone and returns its description", function()
    local v = vpc(110)
    local name = spec.unique("subnet")
    local s = ec2.subnet{ vpc = v, cidr = "10.110.1.0/24", name = name }
    expect(s.kind):to_equal("subnet")
    expect(s.id):to_match("^subnet%-%x+$")
    expect(s.name):to_equal(name)
    expect(s.cidr):to_equal("10.110.1.0/24")
    expect(s.az):to_equal("us-east-1a")
    expect(s.vpc_id):to_equal(v.id)
    expect(s.region):to_equal("us-east-1")
    expect(s.account):to_equal("default")
    expect(s.created):to_be(true)
  end)

  it("is idempotent, found by VPC and CIDR; a new name is applied", function()
    local v = vpc(111)
    local first = ec2.subnet{ vpc = v, cidr = "10.111.1.0/24", az = "us-east-1b" }
    expect(first.name):to_be_nil()
    expect(first.az):to_equal("us-east-1b")
    local second = ec2.subnet{ vpc = v, cidr = "10.111.1.0/24", az = "us-east-1b" }
    expect(second.id):to_equal(first.id)
    expect(second.created):to_be(false)
    second.created = true
    expect(second):to_equal(first)
    local renamed = ec2.subnet{ vpc = v.id, cidr = "10.111.1.0/24", name = "workers" }
    expect(renamed.id):to_equal(first.id)
    expect(renamed.name):to_equal("workers")
    expect(ec2.subnet{ vpc = v, cidr = "10.111.1.0/24" }.name):to_equal("workers")
  end)

  it("follows the VPC table into its account and region", function()
    local v = vpc(112, { account = "other" })
    local s = ec2.subnet{ vpc = v, cidr = "10.112.1.0/24" }
    expect(s.account):to_equal("other")
    expect(s.region):to_equal("eu-west-1")
    expect(s.az):to_equal("eu-west-1a")
    -- An id string is looked up in the scope the options name.
    local again = ec2.subnet{ vpc = v.id, cidr = "10.112.1.0/24", account = "other" }
    expect(again.id):to_equal(s.id)
  end)

  it("refuses a block outside the VPC, overlapping a sibling, or of the wrong size", function()
    local v = vpc(113)
    local s = ec2.subnet{ vpc = v, cidr = "10.113.1.0/24" }
    expect(function() ec2.subnet{ vpc = v, cidr = "10.114.1.0/24" } end)
      :to_fail(string.format("ec2.subnet: opts.cidr: 10.114.1.0/24 is outside %s's CIDR 10.113.0.0/16", v.id))
    expect(function() ec2.subnet{ vpc = v, cidr = "10.113.1.0/25" } end)
      :to_fail(string.format("ec2.subnet: opts.cidr: 10.113.1.0/25 overlaps subnet %s (10.113.1.0/24) in %s", s.id, v.id))
    expect(function() ec2.subnet{ vpc = v, cidr = "10.113.2.0/29" } end)
      :to_fail("ec2.subnet: opts.cidr: 10.113.2.0/29: a subnet's block must be between /16 and /28")
    expect(function() ec2.subnet{ vpc = v, cidr = "10.113.2.1/24" } end)
      :to_fail('ec2.subnet: opts.cidr: invalid CIDR "10.113.2.1/24": host bits are set; the network is 10.113.2.0/24')
  end)

  it("refuses a zone of another region, and a zone that differs from the existing subnet's", function()
    local v = vpc(115)
    local s = ec2.subnet{ vpc = v, cidr = "10.115.1.0/24" }
    expect(function() ec2.subnet{ vpc = v, cidr = "10.115.2.0/24", az = "eu-west-1a" } end)
      :to_fail('ec2.subnet: opts.az: "eu-west-1a" is not an availability zone of us-east-1')
    local err = expect(function() ec2.subnet{ vpc = v, cidr = "10.115.1.0/24", az = "us-east-1b" } end)
      :to_fail(string.format("ec2.subnet: opts.az: subnet %s (10.115.1.0/24) already exists in us-east-1a, not us-east-1b", s.id))
    expect(err.kind):to_equal("conflict")
  end)

  it("refuses a vpc argument that is not a VPC", function()
    local v = vpc(116)
    local s = ec2.subnet{ vpc = v, cidr = "10.116.1.0/24" }
    expect(function() ec2.subnet{ vpc = s, cidr = "10.116.2.0/24" } end)
      :to_fail(string.format("ec2.subnet: opts.vpc: expected a VPC, got a subnet (%s)", s.id))
    expect(function() ec2.subnet{ vpc = s.id, cidr = "10.116.2.0/24" } end)
      :to_fail(string.format('ec2.subnet: opts.vpc: expected a VPC (a table from ec2.vpc or a "vpc-…" id), got %q', s.id))
    expect(function() ec2.subnet{ vpc = "vpc-00000000000000000", cidr = "10.116.2.0/24" } end)
      :to_fail("ec2.subnet: opts.vpc: no VPC vpc-00000000000000000 in account default, region us-east-1")
    expect(function() ec2.subnet{ vpc = {}, cidr = "10.116.2.0/24" } end)
      :to_fail("ec2.subnet: opts.vpc: this table has no `id`; pass a table returned by a skiff primitive or an id string")
    expect(function() ec2.subnet{ vpc = 7, cidr = "10.116.2.0/24" } end)
      :to_fail("ec2.subnet: opts.vpc: expected resource id or table, got number")
    expect(function() ec2.subnet{ cidr = "10.116.2.0/24" } end):to_fail("ec2.subnet: opts.vpc: required")
    expect(function() ec2.subnet{ vpc = v, cidr = "10.116.2.0/24", zone = "a" } end)
      :to_fail("ec2.subnet: opts.zone: unknown option; expected one of vpc, cidr, az, name, tags, account, region")
  end)
end)

describe("ec2.security_group", function()
  it("creates a group with its rules, filling in defaults", function()
    local v = vpc(120)
    local name = spec.unique("group")
    local g = ec2.security_group{
      vpc = v,
      name = name,
      description = "endpoints of the worker VPC",
      ingress = {
        { proto = "tcp", port = 443, cidr = v.cidr },
        { proto = "udp", port = "5000-5010", cidr = "10.9.0.0/16" },
        { proto = "icmp", cidr = "10.0.0.0/8" },
        { proto = "all", port = 22, cidr = "192.168.0.0/24" },
        { cidr = "172.16.0.0/12" },
      },
    }
    expect(g.kind):to_equal("security_group")
    expect(g.id):to_match("^sg%-%x+$")
    expect(g.name):to_equal(name)
    expect(g.vpc_id):to_equal(v.id)
    expect(g.region):to_equal("us-east-1")
    expect(g.account):to_equal("default")
    expect(g.created):to_be(true)
    -- Sorted by protocol (tcp, udp, icmp, all), then ports, then source.
    local rules = {
      { proto = "tcp", port = "0-65535", cidr = "172.16.0.0/12" },
      { proto = "tcp", port = "443", cidr = "10.120.0.0/16" },
      { proto = "udp", port = "5000-5010", cidr = "10.9.0.0/16" },
      { proto = "icmp", port = "-1", cidr = "10.0.0.0/8" },
      { proto = "all", cidr = "192.168.0.0/24" },
    }
    expect(g.ingress):to_equal(rules)
    expect(g.added):to_equal(rules)
  end)

  it("is idempotent: a second call finds the group and adds nothing", function()
    local v = vpc(121)
    local opts = { vpc = v, name = spec.unique("group"), ingress = { { port = 443, cidr = v.cidr } } }
    local first = ec2.security_group(opts)
    local second = ec2.security_group(opts)
    expect(second.id):to_equal(first.id)
    expect(second.created):to_be(false)
    expect(second.added):to_equal({})
    expect(second.ingress):to_equal(first.ingress)
  end)

  it("reconciles rules: adds the missing ones and keeps those already there", function()
    local v = vpc(122)
    local name = spec.unique("group")
    local g = ec2.security_group{ vpc = v, name = name, ingress = {
      { port = 443, cidr = v.cidr },
      { port = "443", cidr = v.cidr },
    } }
    expect(g.added):to_have_length(1)
    local grown = ec2.security_group{ vpc = v, name = name, ingress = {
      { port = 443, cidr = v.cidr },
      { port = 443, cidr = "192.168.7.0/24" },
    } }
    expect(grown.id):to_equal(g.id)
    expect(grown.added):to_equal({ { proto = "tcp", port = "443", cidr = "192.168.7.0/24" } })
    expect(grown.ingress):to_equal({
      { proto = "tcp", port = "443", cidr = "10.122.0.0/16" },
      { proto = "tcp", port = "443", cidr = "192.168.7.0/24" },
    })
    -- A call naming fewer rules removes none.
    local fewer = ec2.security_group{ vpc = v, name = name }
    expect(fewer.added):to_equal({})
    expect(fewer.ingress):to_equal(grown.ingress)
  end)

  it("takes the VPC by id and the group name per VPC", function()
    local a, b = vpc(123), vpc(124)
    local name = spec.unique("group")
    local ga = ec2.security_group{ vpc = a.id, name = name }
    local gb = ec2.security_group{ vpc = b, name = name }
    expect(ga.vpc_id):to_equal(a.id)
    expect(gb.vpc_id):to_equal(b.id)
    expect(ga.id ~= gb.id):to_be(true)
  end)

  it("refuses bad rules, naming the rule and field", function()
    local v = vpc(125)
    local function sg(rule)
      return function() ec2.security_group{ vpc = v, name = "x", ingress = { { port = 443, cidr = v.cidr }, rule } } end
    end
    local P = "ec2.security_group: opts.ingress[2]."
    expect(sg({ port = 443 })):to_fail(P .. "cidr: required")
    expect(sg({ port = 443, cidr = 5 })):to_fail(P .. "cidr: expected string, got number")
    expect(sg({ port = 443, cidr = "10.0.0.0/8x" }))
      :to_fail(P .. 'cidr: invalid CIDR "10.0.0.0/8x": "8x" is not a prefix length')
    expect(sg({ proto = "tcpp", cidr = "10.0.0.0/8" }))
      :to_fail(P .. 'proto: unknown protocol "tcpp": expected "tcp", "udp", "icmp" or "all"')
    expect(sg({ port = "90-80", cidr = "10.0.0.0/8" })):to_fail(P .. "port: port range 90-80 is reversed")
    expect(sg({ port = 70000, cidr = "10.0.0.0/8" })):to_fail(P .. "port: port 70000 is out of range")
    expect(sg({ proto = "icmp", port = 300, cidr = "10.0.0.0/8" })):to_fail(P .. "port: port 300 is out of range")
    expect(sg({ port = "https", cidr = "10.0.0.0/8" })):to_fail(P .. 'port: "https" is not a port or port range')
    expect(sg({ port = 443, cidr = "10.0.0.0/8", from = "x" }))
      :to_fail(P .. "from: unknown option; expected one of proto, port, cidr")
    expect(sg({ port = true, cidr = "10.0.0.0/8" })):to_fail(P .. "port: expected number or string, got boolean")
    expect(function() ec2.security_group{ vpc = v, name = "x", ingress = "all" } end)
      :to_fail("ec2.security_group: opts.ingress: expected list, got string")
  end)

  it("refuses one rule where a list of rules belongs, instead of reading no rules", function()
    local v = vpc(127)
    local name = spec.unique("one")
    expect(function() ec2.security_group{ vpc = v, name = name, ingress = { port = 443, cidr = v.cidr } } end)
      :to_fail("ec2.security_group: opts.ingress: expected a list { … }, got a table with named keys (wrap a single item in braces)")
    expect(ec2.security_group{ vpc = v, name = name }.created):to_be(true)
  end)

  it("refuses unusable names and a vpc that is not a VPC", function()
    local v = vpc(126)
    local s = ec2.subnet{ vpc = v, cidr = "10.126.1.0/24" }
    expect(function() ec2.security_group{ vpc = v, name = "sg-1" } end)
      :to_fail('ec2.security_group: opts.name: "sg-1" is not a usable group name (1–255 characters, not starting with "sg-")')
    expect(function() ec2.security_group{ vpc = v, name = "" } end)
      :to_fail('ec2.security_group: opts.name: "" is not a usable group name (1–255 characters, not starting with "sg-")')
    expect(function() ec2.security_group{ vpc = v } end):to_fail("ec2.security_group: opts.name: required")
    expect(function() ec2.security_group{ vpc = s, name = "x" } end)
      :to_fail(string.format("ec2.security_group: opts.vpc: expected a VPC, got a subnet (%s)", s.id))
    expect(function() ec2.security_group{ vpc = s.id, name = "x" } end)
      :to_fail(string.format('ec2.security_group: opts.vpc: expected a VPC (a table from ec2.vpc or a "vpc-…" id), got %q', s.id))
    expect(function() ec2.security_group{ vpc = v, name = "x", rules = {} } end)
      :to_fail("ec2.security_group: opts.rules: unknown option; expected one of vpc, name, description, ingress, tags, account, region")
  end)
end)
