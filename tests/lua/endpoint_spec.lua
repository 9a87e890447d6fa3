-- create_endpoint against the emulator: interface and gateway endpoints, the
-- table returned, idempotency (an existing endpoint gains subnets and groups),
-- and the rules checked before anything is created.
--
-- CIDRs are 10.13x.0.0/16, distinct per test; every name is unique.

local function network(octet, opts)
  opts = opts or {}
  local vpc = ec2.vpc{ name = spec.unique("ep"), cidr = string.format("10.%d.0.0/16", octet), dns = opts.dns, region = opts.region }
  local a = ec2.subnet{ vpc = vpc, cidr = string.format("10.%d.1.0/24", octet) }
  local sg = ec2.security_group{ vpc = vpc, name = spec.unique("endpoints"), ingress = { { port = 443, cidr = vpc.cidr } } }
  return vpc, a, sg
end

local function services_list()
  return table.concat(net.services, ", ")
end

describe("create_endpoint", function()
  it("creates an interface endpoint and returns its description", function()
    local vpc, a, sg = network(130)
    local e = create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { sg } }
    expect(e.kind):to_equal("endpoint")
    expect(e.id):to_match("^vpce%-%x+$")
    expect(e.service):to_equal("ssm")
    expect(e.service_name):to_equal("com.amazonaws.us-east-1.ssm")
    expect(e.type):to_equal("Interface")
    expect(e.vpc_id):to_equal(vpc.id)
    expect(e.subnets):to_equal({ a.id })
    expect(e.security_groups):to_equal({ sg.id })
    expect(e.route_tables):to_equal({})
    expect(e.private_dns):to_be(true)
    expect(e.state):to_equal("available")
    expect(type(e.dns_names)):to_equal("table")
    expect(e.region):to_equal("us-east-1")
    expect(e.account):to_equal("default")
    expect(e.created):to_be(true)
  end)

  it("is idempotent: a second call returns the same endpoint, not created", function()
    local vpc, a, sg = network(131)
    local opts = { vpc = vpc, service = "sqs", subnets = { a }, security_groups = { sg } }
    local first = create_endpoint(opts)
    local second = create_endpoint(opts)
    expect(second.id):to_equal(first.id)
    expect(second.created):to_be(false)
    second.created = true
    expect(second):to_equal(first)
    -- Ids work as well as tables.
    local by_id = create_endpoint{ vpc = vpc.id, service = "sqs", subnets = { a.id }, security_groups = { sg.id } }
    expect(by_id.id):to_equal(first.id)
  end)

  it("adds subnets and security groups an existing endpoint lacks", function()
    local vpc, a, sg = network(132)
    local b = ec2.subnet{ vpc = vpc, cidr = "10.132.2.0/24", az = "us-east-1b" }
    local sg2 = ec2.security_group{ vpc = vpc, name = spec.unique("more"), ingress = { { port = 443, cidr = "10.0.0.0/8" } } }
    local e = create_endpoint{ vpc = vpc, service = "ebs", subnets = { a }, security_groups = { sg } }
    local grown = create_endpoint{ vpc = vpc, service = "ebs", subnets = { a, b }, security_groups = { sg, sg2 } }
    expect(grown.id):to_equal(e.id)
    expect(grown.created):to_be(false)
    expect(grown.subnets):to_have_length(2)
    expect(grown.subnets):to_contain(a.id)
    expect(grown.subnets):to_contain(b.id)
    expect(grown.security_groups):to_have_length(2)
    expect(grown.security_groups):to_contain(sg2.id)
    -- Naming only some of them removes none.
    local again = create_endpoint{ vpc = vpc, service = "ebs", subnets = { b } }
    expect(again.id):to_equal(e.id)
    expect(again.subnets):to_have_length(2)
    expect(again.security_groups):to_have_length(2)
  end)

  it("refuses a second subnet in a zone the endpoint already uses, as a conflict", function()
    local vpc, a, sg = network(133)
    local c = ec2.subnet{ vpc = vpc, cidr = "10.133.3.0/24", az = "us-east-1a" }
    local e = create_endpoint{ vpc = vpc, service = "kms", subnets = { a }, security_groups = { sg } }
    local err = expect(function() create_endpoint{ vpc = vpc, service = "kms", subnets = { c } } end)
      :to_fail(string.format("create_endpoint: opts.subnets: %s already has subnet %s in us-east-1a; it cannot also use %s", e.id, a.id, c.id))
    expect(err.kind):to_equal("conflict")
    expect(err.op):to_equal("create_endpoint")
    expect(create_endpoint{ vpc = vpc, service = "kms", subnets = { a } }.subnets):to_equal({ a.id })
  end)

  it("refuses two subnets in one zone in one call", function()
    local vpc, a = network(134)
    local c = ec2.subnet{ vpc = vpc, cidr = "10.134.3.0/24", az = "us-east-1a" }
    expect(function() create_endpoint{ vpc = vpc, service = "logs", subnets = { a, c } } end)
      :to_fail(string.format("create_endpoint: opts.subnets[2]: subnet %s is in us-east-1a like %s; an endpoint takes one subnet per zone", c.id, a.id))
  end)

  it("turns private DNS off by default for s3 and keeps s3 Interface and Gateway endpoints apart", function()
    local vpc, a, sg = network(135)
    local s3 = create_endpoint{ vpc = vpc, service = "s3", subnets = { a }, security_groups = { sg } }
    expect(s3.type):to_equal("Interface")
    expect(s3.private_dns):to_be(false)
    expect(s3.service_name):to_equal("com.amazonaws.us-east-1.s3")
    local gw = create_endpoint{ vpc = vpc, service = "s3", type = "Gateway" }
    expect(gw.id ~= s3.id):to_be(true)
    expect(gw.type):to_equal("Gateway")
    expect(gw.subnets):to_equal({})
    expect(gw.security_groups):to_equal({})
    expect(gw.route_tables):to_have_length(1)
    expect(gw.route_tables[1]):to_match("^rtb%-%x+$")
    expect(gw.created):to_be(true)
    local again = create_endpoint{ vpc = vpc, service = "s3", type = "gateway" }
    expect(again.id):to_equal(gw.id)
    expect(again.created):to_be(false)
    expect(create_endpoint{ vpc = vpc, service = "s3", subnets = { a } }.id):to_equal(s3.id)
  end)

  it("reports private_dns = false for a Gateway endpoint", function()
    local vpc = network(139)
    expect(create_endpoint{ vpc = vpc, service = "s3", type = "Gateway" }.private_dns):to_be(false)
  end)

  it("refuses one group where a list of groups belongs, instead of attaching none", function()
    local vpc, a, sg = network(138)
    expect(function() create_endpoint{ vpc = vpc, service = "sqs", subnets = { a }, security_groups = sg } end)
      :to_fail("create_endpoint: opts.security_groups: expected a list { … }, got a table with named keys (wrap a single item in braces)")
    expect(function() create_endpoint{ vpc = vpc, service = "sqs", subnets = a } end)
      :to_fail("create_endpoint: opts.subnets: expected a list { … }, got a table with named keys (wrap a single item in braces)")
  end)

  it("creates in the VPC's own account and region", function()
    local vpc = ec2.vpc{ name = spec.unique("ep"), cidr = "10.136.0.0/16", account = "other" }
    local a = ec2.subnet{ vpc = vpc, cidr = "10.136.1.0/24" }
    local e = create_endpoint{ vpc = vpc, service = "sts", subnets = { a } }
    expect(e.account):to_equal("other")
    expect(e.region):to_equal("eu-west-1")
    expect(e.service_name):to_equal("com.amazonaws.eu-west-1.sts")
    expect(create_endpoint{ vpc = vpc.id, service = "sts", subnets = { a.id }, account = "other" }.id):to_equal(e.id)
  end)

  it("refuses private DNS in a VPC without DNS, and allows private_dns = false", function()
    local vpc, a = network(137, { dns = false })
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a } } end)
      :to_fail(string.format("create_endpoint: opts.private_dns: %s has DNS support or DNS hostnames turned off, which private DNS needs; create the VPC with ec2.vpc{…, dns = true} or pass private_dns = false", vpc.id))
    local e = create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, private_dns = false }
    expect(e.private_dns):to_be(false)
  end)

  it("refuses unknown services before any call, suggesting the closest", function()
    local vpc, a = network(138)
    expect(function() create_endpoint{ vpc = vpc, service = "sssm", subnets = { a } } end)
      :to_fail('create_endpoint: opts.service: unknown service "sssm" (did you mean "ssm"?); known services: ' .. services_list())
    expect(function() create_endpoint{ vpc = vpc, service = "teleport", subnets = { a } } end)
      :to_fail('create_endpoint: opts.service: unknown service "teleport"; known services: ' .. services_list())
    expect(function() create_endpoint{ vpc = "vpc-00000000000000000", service = "SSM" } end)
      :to_fail('create_endpoint: opts.service: unknown service "SSM"; known services: ' .. services_list())
  end)

  it("applies the gateway and interface rules", function()
    local vpc, a, sg = network(139)
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", type = "Gateway" } end)
      :to_fail("create_endpoint: opts.type: ssm has no Gateway endpoint; only s3 and dynamodb do")
    expect(function() create_endpoint{ vpc = vpc, service = "s3", type = "Gateway", subnets = { a } } end)
      :to_fail("create_endpoint: opts.subnets: a Gateway endpoint takes no subnets (it is reached through route tables)")
    expect(function() create_endpoint{ vpc = vpc, service = "s3", type = "Gateway", security_groups = { sg } } end)
      :to_fail("create_endpoint: opts.security_groups: a Gateway endpoint takes no security groups")
    expect(function() create_endpoint{ vpc = vpc, service = "s3", type = "Gateway", private_dns = true } end)
      :to_fail("create_endpoint: opts.private_dns: a Gateway endpoint has no private DNS")
    expect(function() create_endpoint{ vpc = vpc, service = "ssm" } end)
      :to_fail("create_endpoint: opts.subnets: an Interface endpoint needs at least one subnet")
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", type = "PrivateLink", subnets = { a } } end)
      :to_fail('create_endpoint: opts.type: unknown endpoint type "PrivateLink": expected "Interface" or "Gateway"')
  end)

  it("refuses subnets and groups that are not in the VPC", function()
    local vpc, a = network(140)
    local other, oa, osg = network(141)
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { oa } } end)
      :to_fail(string.format("create_endpoint: opts.subnets[1]: subnet %s is in %s, not in %s", oa.id, other.id, vpc.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { osg } } end)
      :to_fail(string.format("create_endpoint: opts.security_groups[1]: security group %s is in %s, not in %s", osg.id, other.id, vpc.id))
    local far = ec2.vpc{ name = spec.unique("ep"), cidr = "10.142.0.0/16", region = "us-west-2" }
    local fs = ec2.subnet{ vpc = far, cidr = "10.142.1.0/24" }
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { fs } } end)
      :to_fail(string.format("create_endpoint: opts.subnets[1]: %s is in account default, region us-west-2, but the VPC %s is in account default, region us-east-1", fs.id, vpc.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { "subnet-00000000000000000" } } end)
      :to_fail("create_endpoint: opts.subnets[1]: no subnet subnet-00000000000000000 in account default, region us-east-1")
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { "sg-00000000000000000" } } end)
      :to_fail("create_endpoint: opts.security_groups[1]: no security group sg-00000000000000000 in account default, region us-east-1")
  end)

  it("refuses arguments of the wrong kind, naming the field", function()
    local vpc, a, sg = network(143)
    expect(function() create_endpoint{ vpc = a, service = "ssm", subnets = { a } } end)
      :to_fail(string.format("create_endpoint: opts.vpc: expected a VPC, got a subnet (%s)", a.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { vpc } } end)
      :to_fail(string.format("create_endpoint: opts.subnets[1]: expected a subnet, got a VPC (%s)", vpc.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { a } } end)
      :to_fail(string.format("create_endpoint: opts.security_groups[1]: expected a security group, got a subnet (%s)", a.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { sg.id } } end)
      :to_fail(string.format('create_endpoint: opts.subnets[1]: expected a subnet (a table from ec2.subnet or a "subnet-…" id), got %q', sg.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, security_groups = { a.id } } end)
      :to_fail(string.format('create_endpoint: opts.security_groups[1]: expected a security group (a table from ec2.security_group or an "sg-…" id), got %q', a.id))
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnet = { a } } end)
      :to_fail("create_endpoint: opts.subnet: unknown option; expected one of vpc, service, subnets, security_groups, private_dns, type, name, tags, account, region")
    expect(function() create_endpoint{ vpc = vpc } end):to_fail("create_endpoint: opts.service: required")
    expect(function() create_endpoint{ vpc = vpc, service = "ssm", subnets = { a }, private_dns = "yes" } end)
      :to_fail("create_endpoint: opts.private_dns: expected boolean, got string")
  end)
end)
