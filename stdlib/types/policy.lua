--- @meta
-- LuaLS annotations for `policy{}` and `repository{}` (src/api/policy.rs):
-- the declarations `skiff serve` loads, schedules and runs. Every option is
-- checked when declared; a mistake raises `file:line: policy: opts.field: …`
-- at the line of the call. See docs/serve.md.

--- @class skiff.RepositoryOpts
--- @field name string Letters, digits, `_`, `-`, `.`; unique among the script's repositories.
--- @field location string A directory (`/srv/skiff`, `./repo`) or `s3://bucket/prefix`.
--- @field region? string The bucket's region, where retention and archive workers run (default: the bucket's region as S3 tells it — GetBucketLocation in `account` — before the workers are launched).
--- @field account? string The account owning the bucket (an account from skiff.toml, or `default`).
--- @field password? skiff.PasswordSource (default: `{env = "SKIFF_PASSWORD"}`; see volume.lua)
--- Where every S3 request for the repository goes, here and on workers:
--- the S3 interface endpoint that private workers reach it through (see
--- `skiff.S3Endpoint`). Only for `s3://` repositories. (default: S3's
--- regional address)
--- @field s3_endpoint? skiff.S3Endpoint

--- A repository as `repository{}` returns it, and as policies carry it.
--- @class skiff.Repository
--- @field kind "repository"
--- @field name? string Nil for a repository given by its location only.
--- @field location string
--- @field region? string
--- @field account? string
--- @field password? skiff.PasswordSource
--- @field s3_endpoint? skiff.S3Endpoint

--- Declares a named repository that policies in the same script (and the
--- scripts it `require`s) can name. Declare it before the policies using it.
---
--- ```lua
--- repository{ name = "main", location = "s3://acme-backups/skiff", region = "eu-west-1",
---             password = { ssm = "/skiff/main-repo" } }
--- ```
--- @param opts skiff.RepositoryOpts
--- @return skiff.Repository
function repository(opts) end

--- One weekly run: `{day = "sun", at = "03:00"}`; `day` may list several days.
--- @class skiff.WeeklyRun
--- @field day string|integer|(string|integer)[] `"sun"` … `"sat"` (or full names), or 0 = Sunday … 6.
--- @field at string `"HH:MM"` or `"HH:MM:SS"`, UTC.

--- One monthly run: `{day = 1, at = "04:00"}`; `day` may list several days.
--- @class skiff.MonthlyRun
--- @field day integer|"last"|(integer|"last")[] 1 … 31 (months without that day are skipped), or `"last"`.
--- @field at string `"HH:MM"` or `"HH:MM:SS"`, UTC.

--- One yearly run: `{month = "jan", day = 1, at = "05:00"}`.
--- @class skiff.YearlyRun
--- @field month string|integer `"jan"` … `"dec"` (or full names), or 1 … 12.
--- @field day integer|"last" 1 … 31 (checked against the month), or `"last"`.
--- @field at string `"HH:MM"` or `"HH:MM:SS"`, UTC.

--- A schedule table: the policy runs at every time any entry names. Each
--- entry may be one run or a list of runs.
--- @class skiff.ScheduleTable
--- @field daily? string|string[] Times of day, `"02:00"`, UTC.
--- @field weekly? skiff.WeeklyRun|skiff.WeeklyRun[]
--- @field monthly? skiff.MonthlyRun|skiff.MonthlyRun[]
--- @field yearly? skiff.YearlyRun|skiff.YearlyRun[]

--- What a policy protects: resources matching all `tags`, plus the `ids`, in
--- the `regions` and `accounts` given (default: the default region and account).
--- At least one of `tags` and `ids`.
--- @class skiff.Selection
--- @field tags? table<string, string>
--- @field ids? string[] Instance (`i-…`) and volume (`vol-…`) ids.
--- @field regions? string[]
--- @field accounts? string[] Accounts from skiff.toml, or `default`.

--- Grandfather-father-son retention: a point is kept when any rule keeps it.
--- Integers ≥ 0 (default 0); at least one must be above 0.
--- @class skiff.Retention
--- @field keep_last? integer The newest N points.
--- @field keep_daily? integer The newest point of each of the last N days that have one.
--- @field keep_weekly? integer … of each of the last N weeks.
--- @field keep_monthly? integer … of each of the last N months.
--- @field keep_yearly? integer … of each of the last N years.

--- @alias skiff.StorageClass
---| "STANDARD"
---| "STANDARD_IA"
---| "ONEZONE_IA"
---| "INTELLIGENT_TIERING"
---| "GLACIER_IR"
---| "GLACIER"
---| "DEEP_ARCHIVE"

--- Copies of selected points in a second repository with a colder storage class.
--- @class skiff.ArchiveOpts
--- @field repository string|skiff.Repository A declared name, a location, or a `repository{}` table; not the policy's own repository.
--- @field storage_class skiff.StorageClass
--- @field points? "weekly"|"monthly"|"yearly"|"all" Which points go to the archive (default: `"monthly"`).

--- How the default run deploys all its workers — backup, archive and retention; placement rules decide the rest.
--- @class skiff.PolicyWorker
--- @field account? string The account backup workers run in: the backup account (the default; a worker there reads a production snapshot through that account's role) or the instance's own account. Archive and retention workers run in the backup account whatever this says.
--- @field private? boolean Private-network deployment of every worker of the run (default: `[workers] private` in skiff.toml).
--- @field profile? string An instance type for every worker of the run, overriding the configured profile (`"c5.2xlarge"`).

--- What a run is told about itself.
--- @class skiff.RunContext
--- @field run integer The run's id in the history (`skiff runs`).
--- @field policy skiff.Policy The policy, as `policy{}` returned it.
--- @field job string The job id of the run's worker pool (the `skiff:job` tag of its workers).
--- @field trigger "schedule"|"missed"|"manual" Why it runs: its schedule, a catch-up at start for times missed while skiff was down, or `run("name")` from an attached REPL.
--- @field scheduled string The time the run stands for, RFC 3339 UTC.
--- @field scheduled_at number The same, in seconds since the epoch.
--- @field version integer The version of the policy file the run runs under.
--- @field log fun(...: any) A line in the run's live log (`skiff repl --attach`) and skiff's log.
--- @field progress fun(progress: table) Progress for attached REPLs, any plain table (`{done = 3, total = 8}`).

--- What a run may return (both optional): recorded in the history.
--- @class skiff.RunResult
--- @field points? integer Restore points created.
--- @field bytes? integer Bytes written.

--- @class skiff.PolicyOpts
--- @field name string Unique across every policy file `skiff serve` loads; letters, digits, `_`, `-`, `.`.
--- @field schedule string|skiff.ScheduleTable A cron expression — 5 fields (minute hour day month weekday), 6 with seconds first — a shortcut (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), or a schedule table. UTC.
--- @field select skiff.Selection
--- @field repository string|skiff.Repository A name declared with `repository{}` earlier, a location, or a repository table.
--- @field retention skiff.Retention
--- @field archive? skiff.ArchiveOpts
--- @field worker? skiff.PolicyWorker
--- @field enabled? boolean (default: `true`) A disabled policy is loaded and checked but never scheduled.
--- @field run? fun(ctx: skiff.RunContext): skiff.RunResult? Replaces the default run with your own. The default (stdlib/skiff/policy_run.lua, docs/serve.md) backs up each selected instance on a backup worker, copies the points chosen for the archive on an archive worker, then forgets and prunes the policy's points on a retention worker; it needs repository passwords in SSM (`{ssm = "/name"}`), which workers read.

--- A policy as `policy{}` returns it.
--- @class skiff.Policy
--- @field kind "policy"
--- @field name string
--- @field schedule string|skiff.ScheduleTable As given.
--- @field crons string[] The schedule as 6-field cron expressions (seconds first).
--- @field select skiff.Selection Every list present (empty when not given).
--- @field repository skiff.Repository
--- @field retention skiff.Retention Every rule present (0 when not given).
--- @field archive? { repository: skiff.Repository, storage_class: skiff.StorageClass, points: "weekly"|"monthly"|"yearly"|"all" }
--- @field worker skiff.PolicyWorker
--- @field enabled boolean
--- @field declared_at string `file:line` of the `policy{}` call.
--- @field run? fun(ctx: skiff.RunContext): skiff.RunResult?

--- Declares a policy for `skiff serve`: what to protect, when, where to,
--- for how long. Declarations happen when the script loads; `skiff serve`
--- runs the policy at each time its schedule names (catching up once on
--- times missed while it was down), never two runs of one policy at once.
---
--- ```lua
--- repository{ name = "main", location = "s3://acme-backups/skiff", region = "eu-west-1" }
--- policy{
---   name = "databases",
---   schedule = { daily = "02:00", weekly = { day = "sun", at = "03:00" } },
---   select = { tags = { backup = "daily" }, regions = { "eu-west-1" } },
---   repository = "main",
---   retention = { keep_daily = 7, keep_weekly = 4, keep_monthly = 12 },
---   archive = { repository = "s3://acme-archive/skiff", storage_class = "DEEP_ARCHIVE", points = "monthly" },
--- }
--- ```
--- @param opts skiff.PolicyOpts
--- @return skiff.Policy
function policy(opts) end
