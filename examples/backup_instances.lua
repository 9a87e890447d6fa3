-- Back up every EC2 instance with a given tag.
--
-- For each instance (in every listed region and account): snapshot its
-- volumes, deploy a backup worker next to them, copy each snapshot into the
-- repository — incrementally, against the volume's previous point — then
-- remove the worker and delete the temporary snapshots — all but each
-- volume's newest, which the next incremental lists changed blocks against
-- (EBS ListChangedBlocks needs both snapshots). Instances are backed
-- up in parallel, each by its own worker.
--
--   skiff run examples/backup_instances.lua repository=s3://bucket/prefix \
--     [tag=backup=daily] [regions=us-east-1,eu-west-1] [accounts=default,prod] \
--     [repository_account=NAME] [repository_region=REGION] [s3_endpoint=URL] \
--     [private=true] [password_ssm=/skiff/repository-password] [parallel=8]
--
-- The repository password is read from an SSM SecureString parameter by each
-- worker through its instance role; it never travels in a task. Workers run
-- in the backup account (`[workers] account`) in each instance's region, and
-- read a production account's snapshots through that account's role. With
-- private=true they have no public address and reach AWS through the
-- interface endpoints of their VPC, and the repository through its S3
-- interface endpoint (s3_endpoint=, e.g. over peering into the repository
-- account: see private_network_backup.lua).

local function list(s)
  local out = {}
  for item in string.gmatch(s or "", "[^,]+") do table.insert(out, item) end
  return out
end

local repository = args.repository or error("give repository=LOCATION (a folder or s3://bucket/prefix)", 0)
local tag_key, tag_value = (args.tag or "backup=daily"):match("^([^=]+)=(.*)$")
local password = { ssm = args.password_ssm or "/skiff/repository-password" }
-- Where the repository lives and the address its S3 requests go to.
local repo = {
  location = repository,
  account = args.repository_account,
  region = args.repository_region,
  s3_endpoint = args.s3_endpoint,
}

local instances = ec2.instances{
  tags = { [tag_key] = tag_value },
  regions = list(args.regions),
  accounts = list(args.accounts),
}
log.info(string.format("%d instance(s) tagged %s=%s", #instances, tag_key, tag_value))

local results = parallel(instances, function(inst)
  local w = deploy_worker{
    purpose = "backup", resource = inst,
    private = args.private == "true",
    repositories = { repo },
    tags = { ["backup-of"] = inst.id },
  }
  local done = {}
  for _, vol in ipairs(inst.volumes) do
    local snap = ec2.snapshot{
      volume = vol.id, account = inst.account, region = inst.region,
      description = "skiff backup of " .. inst.id .. " " .. vol.device,
    }
    local ok, r = pcall(copy_volume, {
      from = { location = "ebs:" .. snap.id, account = inst.account, region = inst.region },
      to = { location = "repo:" .. repository, account = repo.account, region = repo.region,
             s3_endpoint = repo.s3_endpoint },
      password = password,
      volume = vol.id,
      tags = { instance = inst.id, device = vol.device, region = inst.region },
      -- One writer at a time per repository: the others queue for the lease.
      wait = 3600,
      worker = w,
    })
    -- After a failed copy the new snapshot goes and the base stays; after a
    -- good one the new snapshot is the next base and the old base goes.
    if not ok then
      ec2.delete_snapshot{ snapshot = snap }
      error(r, 0)
    end
    -- r.parent_snapshot is the base this copy listed changed blocks against.
    if r.parent_snapshot then
      ec2.delete_snapshot{ snapshot = r.parent_snapshot, account = inst.account, region = inst.region }
    end
    table.insert(done, { instance = inst.id, volume = vol.id, device = vol.device, result = r })
  end
  w:remove()
  return done
end, tonumber(args.parallel or "8"))

for _, per_instance in ipairs(results) do
  for _, d in ipairs(per_instance) do
    local r = d.result
    print(string.format("%s %s %s → point %s (parent %s): %d new, %d deduplicated, %d zero, %d unchanged blocks, %.1f s",
      d.instance, d.device, d.volume, r.point, r.parent or "none",
      r.blocks_new, r.blocks_dedup, r.blocks_zero, r.blocks_unchanged or 0, r.seconds))
  end
end
return #results
