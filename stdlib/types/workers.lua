--- @meta
-- LuaLS annotations for workers (src/api/workers.rs): `deploy_worker` and the
-- handle it returns, the `workers` settings namespace, and `parallel`.
-- A worker is a short-lived EC2 instance placed next to the data, handed
-- tasks over SQS, and removed when the job (the run, the REPL session, the
-- spec file) ends, whatever ends it.
-- Misuse raises a string `file:line: prim: opts.field: message`; an
-- operational failure raises a `skiff.error` (see globals.lua).

-- ─── deploy_worker ──────────────────────────────────────────────────────────

--- What the worker is for; it decides where the worker runs:
---
--- | purpose | placed by | region | account |
--- | --- | --- | --- | --- |
--- | backup | the source (instance, volume or snapshot) | the source's | backup, or the source's |
--- | restore | the target (`{ region = … }`, or an instance, volume or snapshot) | the target's | backup, or the target's |
--- | archive | the standard repository | the repository's | backup |
--- | retention, health, flr | the repository | the repository's | backup |
---
--- A repository in S3 whose region is given neither in its table nor as the
--- `region` option is in its bucket's region, which skiff asks S3
--- (GetBucketLocation, in the repository's account) before launching; a
--- bucket S3 does not have, or will not tell, is refused as `resource`.
--- A repository in a directory is in the default region.
--- @alias skiff.Purpose
---| "backup"    # copies a source's snapshots into a repository
---| "restore"   # writes a repository point into new snapshots and volumes
---| "archive"   # moves points from the standard repository to the archive
---| "retention" # forgets and prunes points
---| "health"    # checks a repository
---| "flr"       # serves a file-level recovery session (flr{}, skiff flr; docs/flr.md)

--- Where a restore goes: a region, and the account that will own what is restored.
--- @class skiff.RestoreTarget
--- @field kind? "target"
--- @field region string
--- @field account? string (default: the `account` option, else the default account)

--- A repository by its location, with where it lives.
--- @class skiff.RepositoryResource
--- @field kind "repository"
--- @field location? string `"s3://bucket/prefix"`, `"repo:…"` or a path.
--- @field id? string The same as `location`.
--- @field region? string (default: the `region` option, else, in S3, the bucket's region as S3 tells it; for a directory the account's region)
--- @field account? string (default: the `account` option, else the default account)

--- What a job is about. A string is an id (`"i-…"`, `"vol-…"`, `"snap-…"`)
--- or a repository location (`"s3://…"`, `"repo:…"`, `"/…"`, `"./…"`),
--- looked up in the `account`/`region` options; a table (normally one that
--- `ec2.instances`, `ec2.volume` or `ec2.snapshot` returned) carries its own
--- `kind`, `account` and `region`. Instances, volumes and snapshots must
--- exist: the sum of their volume sizes picks the default instance type.
--- @alias skiff.WorkerResource string|skiff.Instance|skiff.Volume|skiff.Snapshot|skiff.RestoreTarget|skiff.RepositoryResource

--- @class skiff.DeployWorkerOpts
---
--- What the worker is for: `"backup"`, `"restore"`, `"archive"`,
--- `"retention"`, `"health"` or `"flr"`.
--- @field purpose skiff.Purpose
---
--- What the job is about; the worker runs in its region (see `skiff.Purpose`).
--- A backup worker takes an instance, volume or snapshot; a restore worker a
--- target table `{ region = …, account = … }` (or an instance, volume or
--- snapshot); the others a repository.
--- @field resource skiff.WorkerResource
---
--- Region in which an id-string `resource` is looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string
---
--- The account the worker runs in. Only the backup account (`[workers]
--- account` in skiff.toml) or, for backup and restore workers, the
--- resource's own (production) account; anything else is refused. Also the
--- account in which an id-string `resource` is looked up, so an id string
--- with `account` set to the production account puts the worker there.
--- (default: the backup account: `[workers] account`, else `default_account`,
--- else `"default"`)
--- @field account? string
---
--- Instance type for this worker (`"c5.xlarge"`), overriding the region's
--- configured profiles and the size-based default.
--- (default: the region's profile for the purpose, else its `default` profile
--- (`workers.profile`, `[workers.regions.R.profiles]`), else by the total size
--- of the source volumes: `"c5.large"` below 1 TiB, `"c5.2xlarge"` up to
--- 16 TiB, `"c5.4xlarge"` above)
--- @field profile? string
---
--- Launch without a public IPv4 address. First runs `net.verify` for the
--- worker's subnet and the purpose's services (ssm, ssmmessages,
--- ec2messages, sqs, and ebs for backup and restore); any finding refuses the
--- launch with a `"preflight"` error listing them, and nothing is created.
--- (default: `[workers] private` in skiff.toml, else `false`)
--- @field private? boolean
---
--- The S3 repositories the worker will reach (locations, or tables from
--- `repository{}` with their `s3_endpoint`), besides a repository
--- `resource`. For a private worker the preflight also follows the way to
--- each: its S3 interface endpoint exists and is available, admits the
--- worker subnet on 443, and is reached over an active peering routed both
--- ways; a repository without `s3_endpoint` needs an S3 endpoint in the
--- worker's VPC (a gateway, or an interface one with private DNS).
--- (default: `{}`)
--- @field repositories? (string|skiff.Repository)[]
---
--- Extra tags for the instance and its volumes, besides `workers.tags` and
--- skiff's own (`Name`, `skiff:worker`, `skiff:job`, `skiff:purpose`,
--- `skiff:expires`, `skiff:owner`, `skiff:resource`).
--- (default: `{}`)
--- @field tags? table<string, string>

--- A task for `w:run`: the operation, its arguments, and a progress callback.
--- Arguments are sent to the worker as JSON, so they must be plain data.
--- @class skiff.WorkerTask
---
--- The operation: `"ping"` (every agent knows it), `"copy_volume"`, …
--- @field op string
---
--- Called as the worker reports progress (about every third of the
--- `[workers] visibility_timeout`), with the table a copy reports.
--- (default: none)
--- @field progress? fun(p: skiff.CopyProgress)
---
--- The operation's arguments.
--- @field [string] any

--- What `w:run{ op = "ping" }` returns.
--- @class skiff.PingResult
--- @field pong true
--- @field worker_id string The worker's `id`.
--- @field instance_id string The worker's `instance_id`.
--- @field version string The agent's skiff version.

--- A running worker, as `deploy_worker` returns it.
--- @class skiff.Worker
--- @field kind "worker"
--- @field id string skiff's id of the worker (12 hex digits); its task queue is `skiff-w-<id>`.
--- @field instance_id string `i-…`
--- @field purpose skiff.Purpose
--- @field region string
--- @field account string Account name (`"default"` or a skiff.toml account).
--- @field vpc string `vpc-…`
--- @field subnet string `subnet-…`
--- @field security_groups string[] `sg-…`: the declared ones, else skiff's own group of the VPC (`skiff-workers`, or `skiff-workers-public`)
--- @field instance_type string
--- @field private_ip? string
--- @field public_ip? string Nil for a private worker.
--- @field job string The id of the job (run, REPL session, spec file run) the worker belongs to.
--- @field ready_after number Seconds from `deploy_worker` to the agent's first answer.
local Worker = {}

--- Runs a task on the worker and waits for its result. A task the agent
--- reports as failed raises a `skiff.error` with the task's `kind`, `op` and
--- `message` (an unknown operation: kind `"usage"`); a worker that was
--- removed, died, or said nothing for `[workers] liveness_timeout` seconds
--- raises kind `"worker_lost"` (`op` is the task's).
---
--- ```lua
--- local r = w:run{ op = "ping" }   -- { pong = true, worker_id = w.id, … }
--- ```
--- @param task skiff.WorkerTask
--- @return any result The operation's result (`skiff.PingResult` for `"ping"`).
function Worker:run(task) end

--- Terminates the worker's instance, deletes its task queue and stops its
--- agent. Idempotent. Every worker is also removed when its job ends.
--- @return true
function Worker:remove() end

--- Launches a worker for `opts.purpose` on `opts.resource`, placed per
--- `skiff.Purpose`, in the region's configured (else default) VPC and subnet,
--- and waits until its agent answers. At most `[workers] max_per_region`
--- (default 8) workers of a job run in one region; further calls wait.
---
--- ```lua
--- local w = deploy_worker{ purpose = "backup", resource = instance }
--- w:run{ op = "copy_volume", … }
--- w:remove()
--- ```
--- @param opts skiff.DeployWorkerOpts
--- @return skiff.Worker
function deploy_worker(opts) end

-- ─── workers ────────────────────────────────────────────────────────────────

--- Worker settings for the rest of the job, overriding `[workers]` in
--- skiff.toml. They hold for every VM of the process (each spec file of a
--- `skiff test` run sees what earlier ones declared).
workers = {}

--- @class skiff.WorkersConfigurationOpts
---
--- The region these settings are for.
--- @field region string
---
--- The account whose workers this network is for. A network declared for
--- the backup account (the default) is that account's; workers of another
--- account use only a network declared for it, else its default VPC.
--- (default: the backup account, `[workers] account`)
--- @field account? string
---
--- The VPC workers run in (`"vpc-…"` or the table `ec2.vpc` returned). With
--- a `subnet`, the subnet must be in it. Checked when declared.
--- (default: the region's default VPC)
--- @field vpc? skiff.VpcRef
---
--- The subnet workers run in (`"subnet-…"` or the table `ec2.subnet`
--- returned); checked to exist, in `vpc`, when declared.
--- (default: the VPC's first subnet, ordered by availability zone, then id)
--- @field subnet? skiff.SubnetRef
---
--- Security groups of the workers' network interface, each in the VPC.
--- (default: `{}`, the VPC's default group)
--- @field security_groups? skiff.SecurityGroupRef[]

--- Declares where workers run in a region. Replaces that region's earlier
--- `vpc`, `subnet` and `security_groups` (omitted ones go back to their
--- defaults) and keeps its profiles.
---
--- ```lua
--- workers.configuration{ region = "eu-west-1", vpc = vpc.id, subnet = subnet.id, security_groups = { sg } }
--- ```
--- @param opts skiff.WorkersConfigurationOpts
function workers.configuration(opts) end

--- @class skiff.WorkersProfileOpts
---
--- The region this instance type is for.
--- @field region string
---
--- The purpose it is for.
--- (default: every purpose without a profile of its own)
--- @field purpose? skiff.Purpose
---
--- EC2 instance type, e.g. `"c5.xlarge"`; an unknown one is refused when declared.
--- @field instance_type string

--- Sets the instance type of workers in a region, for one purpose or as the
--- region's default. `deploy_worker{ profile = … }` overrides it.
---
--- ```lua
--- workers.profile{ region = "us-east-1", purpose = "backup", instance_type = "c5.xlarge" }
--- ```
--- @param opts skiff.WorkersProfileOpts
function workers.profile(opts) end

--- Adds tags to every worker deployed from now on (besides `[workers.tags]`
--- in skiff.toml). Keys starting with `skiff:` are skiff's own and refused.
---
--- ```lua
--- workers.tags{ team = "storage", cost_center = "backup" }
--- ```
--- @param tags table<string, string>
function workers.tags(tags) end

-- ─── parallel ───────────────────────────────────────────────────────────────

--- Calls `fn(item, index)` for every item of the list concurrently, at most
--- `limit` at a time, and returns the results in the items' order. When calls
--- raise, every call still runs to its end, then the error of the lowest
--- index is raised.
---
--- ```lua
--- local ws = parallel(instances, function(i)
---   return deploy_worker{ purpose = "backup", resource = i }
--- end, 4)
--- ```
--- @generic T, R
--- @param items T[]
--- @param fn fun(item: T, index: integer): R
--- @param limit? integer Calls running at once: a positive integer (0, a negative number or a float raises). (default: all)
--- @return R[]
function parallel(items, fn, limit) end
