-- The private network of the backup reference scenario.
--
-- Backup workers run without public addresses in a worker VPC of the backup
-- account; they reach SSM, SQS and EBS through interface endpoints, and the
-- repository (an S3 bucket in the repository account, another region) through
-- an S3 interface endpoint in a repository VPC, over peering. The appliance
-- (where skiff itself runs) reaches the repository the same way.
--
--   skiff run examples/private_network_backup.lua [key=value …]
--
-- Every name, CIDR, account and region below is a parameter. Running the
-- runbook again creates nothing new.

local p = {
  prefix = args.prefix or "skiff",
  backup_account = args.backup_account or "backup",
  backup_region = args.backup_region or "us-east-1",
  worker_cidr = args.worker_cidr or "10.20.0.0/16",
  worker_subnet_cidr = args.worker_subnet_cidr or "10.20.1.0/24",
  repository_account = args.repository_account or "repository",
  repository_region = args.repository_region or "eu-west-1",
  repository_cidr = args.repository_cidr or "10.30.0.0/16",
  repository_subnet_cidr = args.repository_subnet_cidr or "10.30.1.0/24",
  appliance_account = args.appliance_account or args.backup_account or "backup",
  appliance_region = args.appliance_region or args.backup_region or "us-east-1",
  appliance_cidr = args.appliance_cidr or "10.40.0.0/16",
  appliance_subnet_cidr = args.appliance_subnet_cidr or "10.40.1.0/24",
  appliance_address = args.appliance_address or "10.40.1.10/32",
}

-- sts: a worker in the backup account assumes the production and
-- repository accounts' roles.
local worker_services = { "ssm", "ssmmessages", "ec2messages", "sqs", "ebs", "sts" }

-- Worker side: a private subnet and one interface endpoint per service.
local worker_vpc = ec2.vpc{
  name = p.prefix .. "-workers", cidr = p.worker_cidr,
  account = p.backup_account, region = p.backup_region,
}
local worker_subnet = ec2.subnet{
  vpc = worker_vpc, cidr = p.worker_subnet_cidr, name = p.prefix .. "-workers-private",
}
local endpoint_sg = ec2.security_group{
  vpc = worker_vpc, name = p.prefix .. "-endpoints",
  description = "skiff: HTTPS from workers to interface endpoints",
  ingress = { { proto = "tcp", port = 443, cidr = worker_vpc.cidr } },
}
for _, service in ipairs(worker_services) do
  create_endpoint{
    vpc = worker_vpc, service = service,
    subnets = { worker_subnet }, security_groups = { endpoint_sg },
  }
end

-- Repository side: an S3 interface endpoint that admits the workers and the appliance.
local repo_vpc = ec2.vpc{
  name = p.prefix .. "-repository", cidr = p.repository_cidr,
  account = p.repository_account, region = p.repository_region,
}
local repo_subnet = ec2.subnet{
  vpc = repo_vpc, cidr = p.repository_subnet_cidr, name = p.prefix .. "-repository-endpoints",
}
local s3_sg = ec2.security_group{
  vpc = repo_vpc, name = p.prefix .. "-s3-endpoint",
  description = "skiff: HTTPS to S3 from workers and the appliance",
  ingress = {
    { proto = "tcp", port = 443, cidr = worker_vpc.cidr },
    { proto = "tcp", port = 443, cidr = p.appliance_address },
  },
}
create_endpoint{
  vpc = repo_vpc, service = "s3", type = "Interface",
  subnets = { repo_subnet }, security_groups = { s3_sg },
}

-- The appliance's network.
local appliance_vpc = ec2.vpc{
  name = p.prefix .. "-appliance", cidr = p.appliance_cidr,
  account = p.appliance_account, region = p.appliance_region,
}
local appliance_subnet = ec2.subnet{
  vpc = appliance_vpc, cidr = p.appliance_subnet_cidr, name = p.prefix .. "-appliance",
}

-- Peering with routes both ways: worker ↔ repository, appliance ↔ repository.
peer_vpcs{ requester = worker_vpc, accepter = repo_vpc }
peer_vpcs{ requester = appliance_vpc, accepter = repo_vpc }

-- Preflight: what a private backup worker and the appliance need (and, once
-- the first private launch has made it, that skiff's worker group
-- `skiff-workers` lets HTTPS out to every endpoint).
local checks = {
  workers = net.verify{
    subnets = { worker_subnet }, services = worker_services, repository_vpc = repo_vpc,
  },
  appliance = net.verify{
    subnets = { appliance_subnet }, repository_vpc = repo_vpc, from = p.appliance_address,
  },
}
local ok = true
for _, who in ipairs({ "workers", "appliance" }) do
  local report = checks[who]
  if report.ok then
    print(who .. ": private network ready")
  else
    ok = false
    print(who .. ": " .. #report.findings .. " finding(s)")
    for _, f in ipairs(report.findings) do print("  - " .. f.message) end
  end
end
if not ok then error("the private network is incomplete", 0) end
return { worker_vpc = worker_vpc.id, worker_subnet = worker_subnet.id, repository_vpc = repo_vpc.id }
