-- deploy_worker, worker handles, the workers.* settings and parallel against
-- the emulator with the local launcher (`[workers] launcher = "local"`: each
-- worker's agent runs as a local `skiff agent` process). Covers placement per
-- purpose (region and account), the refusals of production accounts, instance
-- types by size, by option and by workers.profile, w:run and its structured
-- errors, removal, private workers and their preflight, and exact messages.
--
-- Every worker a test deploys is removed by the test (checked through a
-- `worker_lost` from a later run) and again, idempotently, by after_each,
-- which also removes those of a test that failed half-way.
-- Worker settings hold for the whole `skiff test` process, so this file
-- declares profiles only in regions no other spec deploys to (ca-central-1)
-- and resets every configuration it declares (us-east-2).

local ACCOUNTS = 'skiff.toml declares "other"'
-- A repository in a directory, placed in the default region (one in S3
-- with no region is placed by its bucket's, asked of S3: tests/it/workers.rs).
local REPO = "/srv/workers-spec/repo"

-- Workers deployed by the current test, removed after it whatever happened.
local live = {}

local function deploy(opts)
  local w = deploy_worker(opts)
  table.insert(live, w)
  return w
end

after_each(function()
  for _, w in ipairs(live) do w:remove() end
  live = {}
end)

-- Removes a worker and checks that it is gone: a run raises worker_lost.
local function remove(w)
  expect(w:remove()):to_be(true)
  local err = expect(function() w:run{ op = "ping" } end)
    :to_fail(string.format("ping: worker %s has been removed", w.id))
  expect(err.kind):to_equal("worker_lost")
  expect(err.op):to_equal("ping")
  expect(err.retryable):to_be(false)
end

-- Where a worker runs and what it runs on.
local function placed(w)
  return { w.purpose, w.account, w.region, w.instance_type }
end

local function volume(opts)
  opts = opts or {}
  opts.size = opts.size or 8
  return ec2.volume(opts)
end

describe("deploy_worker", function()
  it("launches a worker whose agent answers, and returns its description", function()
    local v = volume()
    local w = deploy{ purpose = "backup", resource = v }
    expect(w.kind):to_equal("worker")
    expect(w.id):to_match("^%x%x%x%x%x%x%x%x%x%x%x%x$")
    expect(w.instance_id):to_match("^i%-%x+$")
    expect(placed(w)):to_equal({ "backup", "default", "us-east-1", "c5.large" })
    expect(w.vpc):to_match("^vpc%-%x+$")
    expect(w.subnet):to_match("^subnet%-%x+$")
    expect(w.private_ip):to_match("^%d+%.%d+%.%d+%.%d+$")
    expect(w.public_ip):to_match("^%d+%.%d+%.%d+%.%d+$")
    expect(w.job):to_match("^%x%x%x%x%x%x%x%x%x%x%x%x$")
    expect(type(w.ready_after)):to_equal("number")
    expect(w.ready_after > 0):to_be(true)
    expect(getmetatable(w).__name):to_equal("skiff.worker")
    local pong = w:run{ op = "ping" }
    expect(pong.version):to_match("^%d+%.%d+%.%d+")
    expect(pong):to_equal({ pong = true, worker_id = w.id, instance_id = w.instance_id, version = pong.version })
    remove(w)
  end)

  it("gives every worker of a job its own id and instance, and the job's id", function()
    local a = deploy{ purpose = "health", resource = REPO }
    local b = deploy{ purpose = "health", resource = REPO }
    expect(a.id ~= b.id):to_be(true)
    expect(a.instance_id ~= b.instance_id):to_be(true)
    expect(a.job):to_equal(b.job)
    expect(b:run{ op = "ping" }.worker_id):to_equal(b.id)
    remove(a)
    -- Removing one leaves the other working.
    expect(b:run{ op = "ping" }.worker_id):to_equal(b.id)
    remove(b)
  end)
end)

describe("deploy_worker placement", function()
  it("runs a backup worker in the source's region, in the backup account", function()
    local west = deploy{ purpose = "backup", resource = volume{ region = "us-west-2" } }
    expect(placed(west)):to_equal({ "backup", "default", "us-west-2", "c5.large" })
    -- A source in a production account: the worker stays in the backup account.
    local theirs = deploy{ purpose = "backup", resource = volume{ account = "other" } }
    expect(placed(theirs)):to_equal({ "backup", "default", "eu-west-1", "c5.large" })
    remove(west)
    remove(theirs)
  end)

  it("runs a backup worker in the production account when asked", function()
    local v = volume{ account = "other" }
    local w = deploy{ purpose = "backup", resource = v, account = "other" }
    expect(placed(w)):to_equal({ "backup", "other", "eu-west-1", "c5.large" })
    expect(w:run{ op = "ping" }.instance_id):to_equal(w.instance_id)
    -- An id string is looked up in `account`, which also places the worker there.
    local by_id = deploy{ purpose = "backup", resource = v.id, account = "other" }
    expect(placed(by_id)):to_equal({ "backup", "other", "eu-west-1", "c5.large" })
    remove(w)
    remove(by_id)
  end)

  it("places a backup worker by a snapshot, sized by the snapshot's volume", function()
    local s = ec2.snapshot{ volume = volume{ size = 2000, region = "us-west-2" } }
    local w = deploy{ purpose = "backup", resource = s }
    expect(placed(w)):to_equal({ "backup", "default", "us-west-2", "c5.2xlarge" })
    remove(w)
    ec2.delete_snapshot{ snapshot = s }
  end)

  it("runs a restore worker in the target's region, in the backup or the target's account", function()
    local w = deploy{ purpose = "restore", resource = { region = "ap-south-1" } }
    expect(placed(w)):to_equal({ "restore", "default", "ap-south-1", "c5.large" })
    local theirs = deploy{ purpose = "restore", resource = { region = "eu-west-1", account = "other" } }
    expect(placed(theirs)):to_equal({ "restore", "default", "eu-west-1", "c5.large" })
    local prod = deploy{ purpose = "restore", resource = { kind = "target", region = "us-west-2", account = "other" }, account = "other" }
    expect(placed(prod)):to_equal({ "restore", "other", "us-west-2", "c5.large" })
    -- Or next to an existing volume.
    local by_volume = deploy{ purpose = "restore", resource = volume{ region = "us-west-2" } }
    expect(placed(by_volume)):to_equal({ "restore", "default", "us-west-2", "c5.large" })
    remove(w)
    remove(theirs)
    remove(prod)
    remove(by_volume)
  end)

  it("runs archive, retention, health and flr workers in the repository's region, in the backup account", function()
    local purposes = { "archive", "retention", "health", "flr" }
    local ws = parallel(purposes, function(p)
      return deploy{ purpose = p, resource = { kind = "repository", location = REPO, region = "us-west-2", account = "other" } }
    end)
    for i, p in ipairs(purposes) do
      expect(placed(ws[i])):to_equal({ p, "default", "us-west-2", "c5.large" })
    end
    -- A location string is looked up with `region`.
    local w = deploy{ purpose = "health", resource = REPO, region = "eu-west-1" }
    expect(placed(w)):to_equal({ "health", "default", "eu-west-1", "c5.large" })
    parallel(ws, remove)
    remove(w)
  end)

  it("refuses the production account for archive, retention, health and flr workers", function()
    for _, p in ipairs{ "archive", "retention", "health", "flr" } do
      local why = string.format(
        'deploy_worker: opts.account: %s workers run in the backup account (default), not in the production account "other"; only backup and restore workers may', p)
      expect(function()
        deploy{ purpose = p, resource = { kind = "repository", location = REPO, account = "other" }, account = "other" }
      end):to_fail(why)
      -- A location string is looked up in `account`: the same refusal.
      expect(function() deploy{ purpose = p, resource = REPO, account = "other" } end):to_fail(why)
    end
  end)

  it("refuses an account that is neither the backup nor the resource's", function()
    local v = volume()
    expect(function() deploy{ purpose = "backup", resource = v, account = "other" } end)
      :to_fail('deploy_worker: opts.account: a backup worker runs in the backup account (default) or the resource\'s account (default), not in "other"')
    expect(function()
      deploy{ purpose = "restore", resource = { region = "us-west-2", account = "default" }, account = "other" }
    end):to_fail('deploy_worker: opts.account: a restore worker runs in the backup account (default) or the resource\'s account (default), not in "other"')
    expect(function()
      deploy{ purpose = "retention", resource = { kind = "repository", location = REPO, account = "default" }, account = "other" }
    end):to_fail('deploy_worker: opts.account: a retention worker runs in the backup account (default), not in "other"')
    expect(function() deploy{ purpose = "health", resource = REPO, account = "nobody" } end)
      :to_fail('deploy_worker: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function()
      deploy{ purpose = "health", resource = { kind = "repository", location = REPO, account = "other" }, account = "nobody" }
    end):to_fail('deploy_worker: opts.account: unknown account "nobody": ' .. ACCOUNTS)
  end)

  it("refuses a resource its purpose is not placed by", function()
    local v = volume()
    expect(function() deploy{ purpose = "retention", resource = v } end)
      :to_fail(string.format("deploy_worker: opts.resource: a retention worker is placed by a repository, got a volume (%s)", v.id))
    expect(function() deploy{ purpose = "health", resource = { region = "us-east-1" } } end)
      :to_fail("deploy_worker: opts.resource: a health worker is placed by a repository, got a target (target)")
    expect(function() deploy{ purpose = "backup", resource = REPO } end)
      :to_fail("deploy_worker: opts.resource: a backup worker is placed by an instance, volume or snapshot (the source), got a repository (" .. REPO .. ")")
    expect(function() deploy{ purpose = "backup", resource = { region = "us-east-1" } } end)
      :to_fail("deploy_worker: opts.resource: a backup worker is placed by an instance, volume or snapshot (the source), got a target (target)")
    expect(function() deploy{ purpose = "restore", resource = REPO } end)
      :to_fail("deploy_worker: opts.resource: a restore worker is placed by a restore target (a table with region, or an instance, volume or snapshot), got a repository (" .. REPO .. ")")
    expect(function() deploy{ purpose = "backup", resource = { kind = "vpc", id = "vpc-1" } } end)
      :to_fail("deploy_worker: opts.resource: a vpc is not something a worker is placed by")
  end)

  it("refuses sources that do not exist, naming where it looked", function()
    expect(function() deploy{ purpose = "backup", resource = "vol-0123456789abcdef0" } end)
      :to_fail("deploy_worker: opts.resource: no volume vol-0123456789abcdef0 in account default, region us-east-1")
    expect(function() deploy{ purpose = "backup", resource = "snap-0123456789abcdef0", region = "us-west-2" } end)
      :to_fail("deploy_worker: opts.resource: no snapshot snap-0123456789abcdef0 in account default, region us-west-2")
    expect(function() deploy{ purpose = "backup", resource = "i-0123456789abcdef0", account = "other" } end)
      :to_fail("deploy_worker: opts.resource: no instance i-0123456789abcdef0 in account other, region eu-west-1")
    -- A volume of the default account, looked up in another.
    local v = volume()
    expect(function() deploy{ purpose = "backup", resource = v.id, account = "other" } end)
      :to_fail(string.format("deploy_worker: opts.resource: no volume %s in account other, region eu-west-1", v.id))
    -- A repository in S3 with no region is placed by its bucket's: a bucket
    -- S3 does not have is refused.
    local nowhere = "s3://skiff-workers-spec-nowhere/repo"
    expect(function() deploy{ purpose = "archive", resource = nowhere } end)
      :to_fail('deploy_worker: opts.resource: no S3 bucket "skiff-workers-spec-nowhere" of repository ' .. nowhere
        .. ", asked in account default; create the bucket, or declare the repository's region")
  end)

  it("refuses bad options, naming the field", function()
    local v = volume()
    expect(function() deploy_worker("backup") end)
      :to_fail("deploy_worker: expected an options table deploy_worker{…}, got string")
    expect(function() deploy_worker{ resource = v } end):to_fail("deploy_worker: opts.purpose: required")
    expect(function() deploy_worker{ purpose = "backup" } end):to_fail("deploy_worker: opts.resource: required")
    expect(function() deploy_worker{ purpose = "nap", resource = v } end)
      :to_fail('deploy_worker: opts.purpose: unknown purpose "nap": expected one of backup, restore, archive, retention, health, flr')
    expect(function() deploy_worker{ purpose = "Backup", resource = v } end)
      :to_fail('deploy_worker: opts.purpose: unknown purpose "Backup": expected one of backup, restore, archive, retention, health, flr')
    for _, s in ipairs{ "foo", "", "vpc-1", "S3://x" } do
      expect(function() deploy_worker{ purpose = "backup", resource = s } end)
        :to_fail(string.format("deploy_worker: opts.resource: %q is not an instance, volume, snapshot id or repository location", s))
    end
    expect(function() deploy_worker{ purpose = "backup", resource = 5 } end)
      :to_fail("deploy_worker: opts.resource: expected an id string or a resource table")
    expect(function() deploy_worker{ purpose = "backup", resource = v, size = 1 } end)
      :to_fail("deploy_worker: opts.size: unknown option; expected one of purpose, resource, region, account, profile, private, tags, repositories")
    expect(function() deploy_worker{ purpose = "health", resource = REPO, region = "mars-1" } end)
      :to_fail('deploy_worker: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() deploy_worker{ purpose = "backup", resource = v, private = 1 } end)
      :to_fail("deploy_worker: opts.private: expected boolean, got number")
    expect(function() deploy_worker{ purpose = "backup", resource = v, profile = 5 } end)
      :to_fail("deploy_worker: opts.profile: expected string, got number")
    expect(function() deploy_worker{ purpose = "backup", resource = v, tags = { team = 1 } } end)
      :to_fail("deploy_worker: opts.tags.team: expected string, got number")
    -- An unknown instance type is refused before anything is launched.
    expect(function() deploy_worker{ purpose = "backup", resource = v, profile = "x9.huge" } end)
      :to_fail('deploy_worker: opts.profile: unknown instance type "x9.huge"')
  end)

  it("honours the account and region of a resource table that has an id but no kind", function()
    local v = ec2.volume{ size = 1, region = "us-west-2" }
    local w = deploy{ purpose = "backup", resource = { id = v.id, region = "us-west-2" } }
    expect({ w.region, w.account }):to_equal({ "us-west-2", "default" })
    remove(w)
    expect(function() deploy_worker{ purpose = "backup", resource = { id = v.id, region = "mars-1" } } end)
      :to_fail('deploy_worker: opts.resource.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() deploy_worker{ purpose = "backup", resource = { id = "nope" } } end)
      :to_fail('deploy_worker: opts.resource.id: "nope" is not an instance, volume, snapshot id or repository location')
    expect(function() deploy_worker{ purpose = "health", resource = { kind = "repository" } } end)
      :to_fail("deploy_worker: opts.resource.id: required")
  end)

  it("refuses skiff's own tags and Name in deploy_worker's tags", function()
    local v = ec2.volume{ size = 1 }
    expect(function() deploy_worker{ purpose = "backup", resource = v, tags = { ["skiff:job"] = "x" } } end)
      :to_fail('deploy_worker: opts.tags.skiff:job: the Name tag and tags starting with "skiff:" are skiff\'s own')
    expect(function() deploy_worker{ purpose = "backup", resource = v, tags = { Name = "x" } } end)
      :to_fail('deploy_worker: opts.tags.Name: the Name tag and tags starting with "skiff:" are skiff\'s own')
  end)
end)

describe("instance types", function()
  it("follow the total size of the source: c5.large below 1 TiB, c5.2xlarge to 16 TiB, c5.4xlarge above", function()
    local sizes = { 1023, 1024, 16384, 16385 }
    local types = parallel(sizes, function(size)
      local w = deploy{ purpose = "backup", resource = volume{ size = size, region = "us-west-1" } }
      return w.instance_type
    end)
    expect(types):to_equal({ "c5.large", "c5.2xlarge", "c5.2xlarge", "c5.4xlarge" })
    parallel(live, remove)
  end)

  it("take profile = … over everything", function()
    local w = deploy{ purpose = "backup", resource = volume{ size = 20000 }, profile = "m5.large" }
    expect(w.instance_type):to_equal("m5.large")
    remove(w)
  end)

  it("follow workers.profile: the purpose's profile, else the region's default, in that region only", function()
    workers.profile{ region = "ca-central-1", instance_type = "m5.large" }
    workers.profile{ region = "ca-central-1", purpose = "health", instance_type = "r5.large" }
    local ws = parallel({
      { purpose = "health", resource = REPO, region = "ca-central-1" },
      { purpose = "flr", resource = REPO, region = "ca-central-1" },
      { purpose = "flr", resource = REPO, region = "ca-central-1", profile = "t3.micro" },
      { purpose = "health", resource = REPO, region = "us-west-1" },
    }, deploy)
    expect(ws[1].instance_type):to_equal("r5.large")
    expect(ws[2].instance_type):to_equal("m5.large")
    expect(ws[3].instance_type):to_equal("t3.micro")
    expect(ws[4].instance_type):to_equal("c5.large")
    parallel(ws, remove)
  end)

  it("workers.profile refuses bad options, naming the field", function()
    expect(function() workers.profile("c5.large") end)
      :to_fail("workers.profile: expected an options table workers.profile{…}, got string")
    expect(function() workers.profile{ instance_type = "m5.large" } end)
      :to_fail("workers.profile: opts.region: required")
    expect(function() workers.profile{ region = "ca-central-1" } end)
      :to_fail("workers.profile: opts.instance_type: required")
    expect(function() workers.profile{ region = "ca-central-1", purpose = "nap", instance_type = "m5.large" } end)
      :to_fail('workers.profile: opts.purpose: unknown purpose "nap": expected one of backup, restore, archive, retention, health, flr')
    expect(function() workers.profile{ region = "ca-central-1", instance_type = "m5.large", size = 1 } end)
      :to_fail("workers.profile: opts.size: unknown option; expected one of region, purpose, instance_type")
  end)

  it("workers.profile refuses an invalid region and an unknown instance type when declared", function()
    expect(function() workers.profile{ region = "mars-1", instance_type = "m5.large" } end)
      :to_fail('workers.profile: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() workers.profile{ region = "ca-central-1", instance_type = "x9.huge" } end)
      :to_fail('workers.profile: opts.instance_type: unknown instance type "x9.huge"')
  end)
end)

describe("w:run", function()
  it("runs ping and passes progress callbacks through", function()
    local w = deploy{ purpose = "health", resource = REPO }
    local r = w:run{ op = "ping", progress = function(bytes, blocks, rate) end, extra = { 1, 2 } }
    expect({ r.pong, r.worker_id, r.instance_id }):to_equal({ true, w.id, w.instance_id })
    remove(w)
  end)

  it("raises a task's failure as a structured error", function()
    local w = deploy{ purpose = "health", resource = REPO }
    local err = expect(function() w:run{ op = "nope", x = 1 } end)
      :to_fail('nope: this agent does not know the operation "nope"')
    expect(getmetatable(err).__name):to_equal("skiff.error")
    expect(err.kind):to_equal("usage")
    expect(err.op):to_equal("nope")
    expect(err.message):to_equal('this agent does not know the operation "nope"')
    expect(err.code):to_be_nil()
    expect(err.retryable):to_be(false)
    expect(err.where):to_match("workers_spec%.lua:%d+$")
    -- The worker is still there after a failed task.
    expect(w:run{ op = "ping" }.pong):to_be(true)
    remove(w)
  end)

  it("refuses bad tasks and handles, naming the field", function()
    local w = deploy{ purpose = "health", resource = REPO }
    expect(function() w:run{} end):to_fail("worker:run: opts.op: required")
    expect(function() w:run("ping") end):to_fail("worker:run: expected a task table {op = …}")
    expect(function() w:run() end):to_fail("worker:run: expected a task table {op = …}")
    expect(function() w:run{ op = "ping", progress = 1 } end)
      :to_fail("worker:run: opts.progress: expected function, got number")
    expect(function() w:run{ op = "ping", x = function() end } end)
      :to_fail_matching(": worker:run: opts%.[%w_.]+: .*function")
    expect(function() w.run({}, { op = "ping" }) end):to_fail("worker:run: expected a worker from deploy_worker")
    expect(function() w.run({ __handle = 1 }, { op = "ping" }) end):to_fail("worker:run: expected a worker from deploy_worker")
    expect(function() w.remove("w") end):to_fail("worker:remove: expected a worker from deploy_worker")
    remove(w)
  end)

  it("w:remove is idempotent, and a removed worker's run raises worker_lost", function()
    local w = deploy{ purpose = "health", resource = REPO }
    remove(w)
    expect(w:remove()):to_be(true)
    local err = expect(function() w:run{ op = "nope" } end)
      :to_fail(string.format("nope: worker %s has been removed", w.id))
    expect(err.kind):to_equal("worker_lost")
    expect(err.message):to_equal(string.format("worker %s has been removed", w.id))
  end)

  it("leaves the caller's task table as it was, so it can be run again", function()
    local w = deploy{ purpose = "health", resource = REPO }
    local calls = 0
    local task = { op = "ping", progress = function() calls = calls + 1 end }
    expect(w:run(task).pong):to_be(true)
    expect(w:run(task).pong):to_be(true)
    expect(task.op):to_equal("ping")
    expect(type(task.progress)):to_equal("function")
    expect(function() w:run{ op = 5 } end):to_fail("worker:run: opts.op: expected string, got number")
    expect(function() w:run{ op = "ping", f = print } end)
      :to_fail("worker:run: opts.f: a function has no JSON form (tasks travel to the worker as JSON)")
    remove(w)
  end)
end)

describe("workers.tags", function()
  it("adds tags to the workers deployed from then on", function()
    expect(workers.tags{ ["workers-spec"] = "yes", team = "storage" }):to_be_nil()
    expect(workers.tags{}):to_be_nil()
    local w = deploy{ purpose = "health", resource = REPO }
    expect(w:run{ op = "ping" }.pong):to_be(true)
    remove(w)
  end)

  it("refuses skiff's own keys and anything but strings", function()
    expect(function() workers.tags{ ["skiff:job"] = "x" } end)
      :to_fail('workers.tags: opts.skiff:job: the Name tag and tags starting with "skiff:" are skiff\'s own')
    expect(function() workers.tags{ team = "a", ["skiff:expires"] = "never" } end)
      :to_fail('workers.tags: opts.skiff:expires: the Name tag and tags starting with "skiff:" are skiff\'s own')
    expect(function() workers.tags{ team = 1 } end):to_fail("workers.tags: opts.team: expected string, got number")
    expect(function() workers.tags("team") end)
      :to_fail("workers.tags: expected an options table workers.tags{…}, got string")
  end)
end)

describe("workers.configuration", function()
  after_each(function() workers.configuration{ region = "us-east-2" } end)

  -- A fresh VPC in us-east-2 with a subnet in zone b and an HTTPS group.
  local function network(octet)
    local vpc = ec2.vpc{ name = spec.unique("workers"), cidr = string.format("10.%d.0.0/16", octet), region = "us-east-2" }
    local subnet = ec2.subnet{ vpc = vpc, cidr = string.format("10.%d.1.0/24", octet), az = "us-east-2b" }
    local sg = ec2.security_group{ vpc = vpc, name = spec.unique("workers"), ingress = { { port = 443, cidr = vpc.cidr } } }
    return vpc, subnet, sg
  end

  it("puts the region's workers in the declared VPC and subnet, until declared again", function()
    local default = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    local vpc, subnet, sg = network(220)
    workers.configuration{ region = "us-east-2", vpc = vpc.id, subnet = subnet.id, security_groups = { sg } }
    local w = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    expect({ w.vpc, w.subnet }):to_equal({ vpc.id, subnet.id })
    expect(w.private_ip):to_match("^10%.220%.1%.%d+$")
    expect(w:run{ op = "ping" }.pong):to_be(true)
    -- Other regions keep their default.
    local east = deploy{ purpose = "health", resource = REPO }
    expect(east.vpc ~= vpc.id):to_be(true)
    -- Declaring the region again without a network goes back to the default VPC.
    workers.configuration{ region = "us-east-2" }
    local again = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    expect({ again.vpc, again.subnet }):to_equal({ default.vpc, default.subnet })
    expect(again.vpc ~= vpc.id):to_be(true)
    remove(default)
    remove(w)
    remove(east)
    remove(again)
  end)

  it("gives workers without declared groups skiff's own: nothing in, HTTPS out to the VPC and its peers (and anywhere when public)", function()
    local vpc, subnet = network(223)
    local peer = ec2.vpc{ name = spec.unique("repository"), cidr = "10.224.0.0/16", region = "us-east-2" }
    peer_vpcs{ requester = vpc, accepter = peer }
    workers.configuration{ region = "us-east-2", vpc = vpc.id, subnet = subnet.id }
    local w = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    expect(#w.security_groups):to_equal(1)
    local g = ec2.security_group{ vpc = vpc, name = "skiff-workers-public" }
    expect(g.id):to_equal(w.security_groups[1])
    expect(g.created):to_be(false)
    expect(g.ingress):to_equal({})
    expect(g.egress):to_equal({
      { proto = "tcp", port = "443", cidr = "0.0.0.0/0" },
      { proto = "tcp", port = "443", cidr = "10.223.0.0/16" },
      { proto = "tcp", port = "443", cidr = "10.224.0.0/16" },
    })
    -- The next worker of the VPC finds the same group.
    local again = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    expect(again.security_groups):to_equal(w.security_groups)
    remove(w)
    remove(again)
  end)

  it("refuses a network that does not fit when it is declared, and a VPC without subnets at launch", function()
    local vpc, subnet, sg = network(221)
    local empty = ec2.vpc{ name = spec.unique("workers"), cidr = "10.222.0.0/16", region = "us-east-2" }
    expect(function() workers.configuration{ region = "us-east-2", vpc = empty.id, subnet = subnet.id } end)
      :to_fail(string.format("workers.configuration: opts.subnet: %s is in %s, not in %s", subnet.id, vpc.id, empty.id))
    expect(function() workers.configuration{ region = "us-east-2", subnet = "subnet-0123456789abcdef0" } end)
      :to_fail("workers.configuration: opts.subnet: no subnet subnet-0123456789abcdef0 in account default, region us-east-2")
    expect(function() workers.configuration{ region = "us-east-2", vpc = empty, security_groups = { sg } } end)
      :to_fail(string.format("workers.configuration: opts.security_groups[1]: %s is in %s, not in %s", sg.id, vpc.id, empty.id))
    expect(function() workers.configuration{ region = "us-east-2", vpc = subnet } end)
      :to_fail(string.format("workers.configuration: opts.vpc: expected a VPC, got a subnet (%s)", subnet.id))
    workers.configuration{ region = "us-east-2", vpc = empty }
    expect(function() deploy{ purpose = "health", resource = REPO, region = "us-east-2" } end)
      :to_fail(string.format("deploy_worker: worker settings: VPC %s in account default, region us-east-2 has no subnet for workers", empty.id))
  end)

  it("refuses bad options, naming the field", function()
    expect(function() workers.configuration() end)
      :to_fail("workers.configuration: expected an options table workers.configuration{…}, got nil")
    expect(function() workers.configuration{ vpc = "vpc-1" } end)
      :to_fail("workers.configuration: opts.region: required")
    expect(function() workers.configuration{ region = "mars-1" } end)
      :to_fail('workers.configuration: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() workers.configuration{ region = "us-east-2", subnets = {} } end)
      :to_fail("workers.configuration: opts.subnets: unknown option; expected one of region, account, vpc, subnet, security_groups")
    expect(function() workers.configuration{ region = "us-east-2", security_groups = { id = "sg-1" } } end)
      :to_fail("workers.configuration: opts.security_groups: expected a list { … }, got a table with named keys (wrap a single item in braces)")
    expect(function() workers.configuration{ region = "us-east-2", subnet = 1 } end)
      :to_fail("workers.configuration: opts.subnet: expected resource id or table, got number")
  end)

  it("takes the tables ec2.vpc and ec2.subnet return", function()
    local vpc, subnet, sg = network(223)
    workers.configuration{ region = "us-east-2", vpc = vpc, subnet = subnet, security_groups = { sg } }
    local w = deploy{ purpose = "health", resource = REPO, region = "us-east-2" }
    expect({ w.vpc, w.subnet }):to_equal({ vpc.id, subnet.id })
    remove(w)
  end)
end)

describe("private workers", function()
  after_each(function() workers.configuration{ region = "us-east-2" } end)

  local function missing(vpc, service)
    return string.format("\n  - %s: worker VPC has no interface endpoint for %s (com.amazonaws.us-east-2.%s)", vpc.id, service, service)
  end

  it("are refused until the subnet passes the preflight, then launched without a public address", function()
    local vpc = ec2.vpc{ name = spec.unique("workers-private"), cidr = "10.223.0.0/16", region = "us-east-2" }
    local subnet = ec2.subnet{ vpc = vpc, cidr = "10.223.1.0/24", az = "us-east-2a" }
    local sg = ec2.security_group{ vpc = vpc, name = spec.unique("endpoints"), ingress = { { port = 443, cidr = vpc.cidr } } }
    workers.configuration{ region = "us-east-2", vpc = vpc.id, subnet = subnet.id, security_groups = { sg.id } }
    local source = volume{ region = "us-east-2", az = "us-east-2a" }
    local base = { "ssm", "ssmmessages", "ec2messages", "sqs" }

    local err = expect(function() deploy{ purpose = "health", resource = REPO, region = "us-east-2", private = true } end)
      :to_fail("deploy_worker: the private-network preflight for " .. subnet.id .. " failed:"
        .. missing(vpc, "ssm") .. missing(vpc, "ssmmessages") .. missing(vpc, "ec2messages") .. missing(vpc, "sqs"))
    expect({ err.kind, err.op, err.retryable }):to_equal({ "preflight", "deploy_worker", false })
    -- Backup and restore workers also need ebs.
    expect(function() deploy{ purpose = "backup", resource = source, private = true } end)
      :to_fail("deploy_worker: the private-network preflight for " .. subnet.id .. " failed:"
        .. missing(vpc, "ssm") .. missing(vpc, "ssmmessages") .. missing(vpc, "ec2messages") .. missing(vpc, "sqs") .. missing(vpc, "ebs"))

    for _, service in ipairs(base) do
      create_endpoint{ vpc = vpc, service = service, subnets = { subnet }, security_groups = { sg } }
    end
    local w = deploy{ purpose = "health", resource = REPO, region = "us-east-2", private = true }
    expect(w.public_ip):to_be_nil()
    expect(w.private_ip):to_match("^10%.223%.1%.%d+$")
    expect(w:run{ op = "ping" }.pong):to_be(true)
    expect(function() deploy{ purpose = "backup", resource = source, private = true } end)
      :to_fail("deploy_worker: the private-network preflight for " .. subnet.id .. " failed:" .. missing(vpc, "ebs"))

    create_endpoint{ vpc = vpc, service = "ebs", subnets = { subnet }, security_groups = { sg } }
    local b = deploy{ purpose = "backup", resource = source, private = true }
    expect({ b.subnet, b.public_ip }):to_equal({ subnet.id, nil })
    -- Not private: a public address in the same subnet.
    local public = deploy{ purpose = "backup", resource = source }
    expect(public.public_ip):to_match("^%d+%.%d+%.%d+%.%d+$")
    remove(w)
    remove(b)
    remove(public)
  end)
end)

describe("parallel", function()
  it("returns the results in the items' order, whatever order the calls end in", function()
    local ended = {}
    local r = parallel({ 3, 1, 2 }, function(x, i)
      time.sleep(x / 20)
      table.insert(ended, x)
      return x * 10 + i
    end)
    expect(r):to_equal({ 31, 12, 23 })
    expect(ended):to_equal({ 1, 2, 3 })
    expect(parallel({}, function() error("never called") end)):to_equal({})
  end)

  -- Calls `parallel` over five items, each sleeping 0.05 s, and returns the
  -- most calls that were running at once.
  local function peak(limit)
    local running, most = 0, 0
    local r = parallel({ 1, 2, 3, 4, 5 }, function(x)
      running = running + 1
      most = math.max(most, running)
      time.sleep(0.05)
      running = running - 1
      return x
    end, limit)
    expect(r):to_equal({ 1, 2, 3, 4, 5 })
    return most
  end

  it("runs at most limit calls at once, and every call at once without one", function()
    expect(peak(2)):to_equal(2)
    expect(peak(1)):to_equal(1)
    expect(peak(10)):to_equal(5)
    expect(peak()):to_equal(5)
  end)

  it("lets every call end, then raises the error of the lowest index", function()
    local ended = {}
    local err = expect(function()
      parallel({ 1, 2, 3 }, function(x)
        time.sleep((4 - x) / 20)
        table.insert(ended, x)
        if x >= 2 then error("boom " .. x) end
        return x
      end)
    end):to_fail_matching("workers_spec%.lua:%d+: boom 2")
    expect(tostring(err):find("boom 3", 1, true)):to_be_nil()
    expect(ended):to_equal({ 3, 2, 1 })
  end)

  it("deploys and removes workers in several regions at once", function()
    local regions = { "us-east-1", "us-west-2", "eu-west-1" }
    local ws = parallel(regions, function(region)
      return deploy{ purpose = "health", resource = REPO, region = region }
    end, 2)
    for i, region in ipairs(regions) do
      expect(ws[i].region):to_equal(region)
      expect(ws[i]:run{ op = "ping" }.worker_id):to_equal(ws[i].id)
    end
    parallel(ws, remove)
  end)

  it("re-raises a call's error value unchanged", function()
    local w = deploy{ purpose = "health", resource = REPO }
    local err = expect(function()
      parallel({ 1, 2 }, function(i) if i == 2 then w:run{ op = "nope" } end return i end)
    end):to_fail()
    expect(type(err)):to_equal("table")
    expect({ err.kind, err.op }):to_equal({ "usage", "nope" })
    local e2 = expect(function() parallel({ 1 }, function() error("plain", 0) end) end):to_fail()
    expect(e2):to_equal("plain")
    expect(function() parallel("x", print) end):to_fail("parallel: items: expected a list, got string")
    expect(function() parallel({}, print, 0) end):to_fail("parallel: limit: expected a positive integer, got 0")
    remove(w)
  end)
end)
