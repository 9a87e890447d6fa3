-- The private network of the archive reference scenario.
--
-- Archive workers run in the standard repository's region, in a worker VPC
-- beside the standard repository's VPC, and copy restore points to an
-- archive repository whose VPC is in a third region. The three VPCs are
-- peered with each other, with routes, and each S3 interface endpoint admits
-- all three networks and the appliance (where skiff itself runs: it reads
-- and writes both repositories through their endpoints too).
--
--   skiff run examples/private_network_archive.lua [key=value …]
--
-- Every name, CIDR, account and region below is a parameter. Running the
-- runbook again creates nothing new.

local p = {
  prefix = args.prefix or "skiff-archive",
  backup_account = args.backup_account or "backup",
  standard_account = args.standard_account or "repository",
  archive_account = args.archive_account or "archive",
  standard_region = args.standard_region or "eu-west-1",
  archive_region = args.archive_region or "ap-southeast-2",
  worker_cidr = args.worker_cidr or "10.50.0.0/16",
  worker_subnet_cidr = args.worker_subnet_cidr or "10.50.1.0/24",
  standard_cidr = args.standard_cidr or "10.60.0.0/16",
  standard_subnet_cidr = args.standard_subnet_cidr or "10.60.1.0/24",
  archive_cidr = args.archive_cidr or "10.70.0.0/16",
  archive_subnet_cidr = args.archive_subnet_cidr or "10.70.1.0/24",
  -- The appliance's one address (private_network_backup.lua's appliance).
  appliance_address = args.appliance_address or "10.40.1.10/32",
}

-- Archive jobs read and write repositories only: no EBS endpoint; sts, as
-- a worker in the backup account assumes the repository accounts' roles.
local worker_services = { "ssm", "ssmmessages", "ec2messages", "sqs", "sts" }

local worker_vpc = ec2.vpc{
  name = p.prefix .. "-workers", cidr = p.worker_cidr,
  account = p.backup_account, region = p.standard_region,
}
local worker_subnet = ec2.subnet{
  vpc = worker_vpc, cidr = p.worker_subnet_cidr, name = p.prefix .. "-workers-private",
}
local endpoint_sg = ec2.security_group{
  vpc = worker_vpc, name = p.prefix .. "-endpoints",
  ingress = { { proto = "tcp", port = 443, cidr = worker_vpc.cidr } },
}
for _, service in ipairs(worker_services) do
  create_endpoint{
    vpc = worker_vpc, service = service,
    subnets = { worker_subnet }, security_groups = { endpoint_sg },
  }
end

-- A repository VPC with an S3 interface endpoint.
local function repository(role, account, region, cidr, subnet_cidr)
  local vpc = ec2.vpc{ name = p.prefix .. "-" .. role, cidr = cidr, account = account, region = region }
  local subnet = ec2.subnet{ vpc = vpc, cidr = subnet_cidr, name = p.prefix .. "-" .. role .. "-endpoints" }
  local sg = ec2.security_group{ vpc = vpc, name = p.prefix .. "-" .. role .. "-s3" }
  create_endpoint{ vpc = vpc, service = "s3", subnets = { subnet }, security_groups = { sg } }
  return { vpc = vpc, subnet = subnet, sg = sg }
end

local standard = repository("standard", p.standard_account, p.standard_region, p.standard_cidr, p.standard_subnet_cidr)
local archive = repository("archive", p.archive_account, p.archive_region, p.archive_cidr, p.archive_subnet_cidr)

-- Peered three ways, with routes.
peer_vpcs{ requester = worker_vpc, accepter = standard.vpc }
peer_vpcs{ requester = worker_vpc, accepter = archive.vpc }
peer_vpcs{ requester = standard.vpc, accepter = archive.vpc }

-- Each S3 endpoint admits all three networks and the appliance (rules are
-- added, never duplicated).
local admitted = {}
for _, cidr in ipairs({ worker_vpc.cidr, standard.vpc.cidr, archive.vpc.cidr, p.appliance_address }) do
  table.insert(admitted, { proto = "tcp", port = 443, cidr = cidr })
end
for _, repo in ipairs({ standard, archive }) do
  ec2.security_group{ vpc = repo.vpc, name = repo.sg.name, ingress = admitted }
end

-- Preflight: archive workers reach both repositories privately.
local ok = true
for _, target in ipairs({ { "standard", standard }, { "archive", archive } }) do
  local report = net.verify{
    subnets = { worker_subnet }, services = worker_services, repository_vpc = target[2].vpc,
  }
  if report.ok then
    print(target[1] .. " repository: private network ready")
  else
    ok = false
    print(target[1] .. " repository: " .. #report.findings .. " finding(s)")
    for _, f in ipairs(report.findings) do print("  - " .. f.message) end
  end
end
if not ok then error("the private network is incomplete", 0) end
return { worker_vpc = worker_vpc.id, standard_vpc = standard.vpc.id, archive_vpc = archive.vpc.id }
