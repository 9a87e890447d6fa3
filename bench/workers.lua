-- Worker overhead against the emulator (local launcher): run by bench/workers.sh.
--
-- 1. latency: `deploy_worker` → agent ready, then a ping, then `w:remove()`,
--    one worker at a time (the median of `singles` runs);
-- 2. fan-out: one worker per resource for `n` resources in one run, each
--    deployed, pinged and removed, in parallel (at most `[workers]
--    max_per_region` at a time, from skiff.toml).
-- With private=true, every worker is private (see below). Prints one JSON line.

local n = tonumber(args.n or "50")
local singles = tonumber(args.singles or "7")

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local volumes = {}
for i = 1, n do
  volumes[i] = ec2.volume{ size = 1, tags = { bench = "workers" } }
end

-- private=true: private workers in a subnet with the backup purpose's
-- interface endpoints, each launch preflighted, with the way to a
-- repository's S3 interface endpoint in the same VPC.
local private = args.private == "true"
local repositories = {}
if private then
  local vpc = ec2.vpc{ name = "bench-private", cidr = "10.77.0.0/16" }
  local subnet = ec2.subnet{ vpc = vpc, cidr = "10.77.1.0/24" }
  local sg = ec2.security_group{ vpc = vpc, name = "bench-endpoints", ingress = { { port = 443, cidr = vpc.cidr } } }
  for _, s in ipairs({ "ssm", "ssmmessages", "ec2messages", "sqs", "ebs" }) do
    create_endpoint{ vpc = vpc, service = s, subnets = { subnet }, security_groups = { sg } }
  end
  local s3 = create_endpoint{ vpc = vpc, service = "s3", subnets = { subnet }, security_groups = { sg } }
  workers.configuration{ region = vpc.region, vpc = vpc.id, subnet = subnet.id }
  repositories = { { location = "s3://bench-repository/skiff", s3_endpoint = s3 } }
end
local function deploy(v)
  return deploy_worker{ purpose = "backup", resource = v, private = private, repositories = repositories }
end

local ready, removed = {}, {}
for i = 1, singles do
  local t0 = time.now()
  local w = deploy(volumes[i])
  table.insert(ready, time.now() - t0)
  w:run{ op = "ping" }
  local t1 = time.now()
  w:remove()
  table.insert(removed, time.now() - t1)
end

local t0 = time.now()
local each = parallel(volumes, function(v)
  local a = time.now()
  local w = deploy(v)
  local r = time.now() - a
  w:run{ op = "ping" }
  w:remove()
  return r
end)
local total = time.now() - t0
local max_ready = 0
for _, r in ipairs(each) do max_ready = math.max(max_ready, r) end

print(json.encode{
  single_ready_median_s = median(ready),
  single_remove_median_s = median(removed),
  resources = n,
  fanout_total_s = total,
  fanout_per_worker_s = total / n,
  fanout_ready_median_s = median(each),
  fanout_ready_max_s = max_ready,
})
