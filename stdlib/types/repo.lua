--- @meta
-- LuaLS annotations for the `repo` namespace (src/api/volume.rs): backup
-- repositories in a directory or under s3://BUCKET/PREFIX. The format is
-- documented in docs/repository-format.md. Location and password types are
-- in volume.lua.

--- @class skiff.RepoOpts
--- A directory, `s3://BUCKET/PREFIX`, or either prefixed with `repo:`.
--- @field location string
--- (default: `{env = "SKIFF_PASSWORD"}`)
--- @field password? skiff.PasswordSource
--- Account of an S3 repository (and of an SSM password).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
--- (default: the account's region, else skiff.toml's, else AWS_REGION)
--- @field region? string
--- Where every S3 request for the repository goes, here and on workers:
--- the S3 interface endpoint that private workers reach it through (see
--- `skiff.S3Endpoint`). Only for `s3://` repositories. (default: S3's
--- regional address)
--- @field s3_endpoint? skiff.S3Endpoint
--- Run on this worker (from `deploy_worker`) instead of here; the password
--- must then come from `{ssm = "/name"}`. (default: run here)
--- @field worker? skiff.Worker

--- @class skiff.RepoInitOpts : skiff.RepoOpts
--- S3 storage class of the data packs (an archive repository): STANDARD,
--- STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER or
--- DEEP_ARCHIVE. Metadata stays STANDARD so listing and forgetting need no
--- restore; reading an archived pack first asks S3 to restore it.
--- (default: the bucket's default)
--- @field storage_class? string

--- @class skiff.RepoPointsOpts : skiff.RepoOpts
--- Only this volume's points. (default: every volume)
--- @field volume? string

--- @class skiff.RepoCheckOpts : skiff.RepoOpts
--- Also decrypt and re-hash every stored blob. (default: `false`)
--- @field read_data? boolean

--- Retention: a point is kept when any rule keeps it; each volume separately.
--- At least one rule must be given — or, instead of rules, `points`.
--- @class skiff.RepoForgetOpts : skiff.RepoOpts
--- Forget exactly these points, by id or unique id prefix (at least 4 hex
--- digits); an unknown or ambiguous one fails (`kind = "not_found"` or
--- `"invalid"`) and nothing is forgotten. Not with the rules, `volume` or
--- `tags`. (default: `{}`, forget by the rules)
--- @field points? string[]
--- Keep the newest N points. (default: 0)
--- @field keep_last? integer
--- Keep the newest point of each of the last N days that have one. (default: 0)
--- @field keep_daily? integer
--- … of each of the last N ISO weeks. (default: 0)
--- @field keep_weekly? integer
--- … of each of the last N months. (default: 0)
--- @field keep_monthly? integer
--- … of each of the last N years. (default: 0)
--- @field keep_yearly? integer
--- Only this volume's points. (default: every volume)
--- @field volume? string
--- Only points carrying every one of these tags, e.g. `{policy = "db"}` for
--- one policy's points in a shared repository. (default: `{}`, every point)
--- @field tags? table<string, string>
--- Report, change nothing. (default: `false`)
--- @field dry_run? boolean
--- Seconds to wait for another writer's lease. (default: `0`, fail at once)
--- @field wait? integer

--- @class skiff.RepoPruneOpts : skiff.RepoOpts
--- Report, change nothing. (default: `false`)
--- @field dry_run? boolean
--- Seconds to wait for another writer's lease. (default: `0`, fail at once)
--- @field wait? integer
--- Repack a partly used pack when at least this fraction of its bytes is unused. (default: `0.05`)
--- @field repack_threshold? number

--- @class skiff.RepoRepairOpts : skiff.RepoOpts
--- Also forget the points that lost data (restoring them fails). (default: `false`)
--- @field forget_lost? boolean
--- Report, change nothing. (default: `false`)
--- @field dry_run? boolean
--- Seconds to wait for another writer's lease. (default: `0`, fail at once)
--- @field wait? integer

--- @class skiff.RestorePoint
--- @field id string
--- @field volume string
--- @field size integer
--- RFC 3339 UTC.
--- @field time string
--- @field parent? string
--- `file:…`, `ebs:snap-…` or `repo:…#…`.
--- @field source string
--- @field snapshot? string
--- @field tags table<string, string>
--- @field host string
--- @field stats {bytes_read: integer, bytes_stored: integer, blocks_new: integer, blocks_dedup: integer, blocks_zero: integer, blocks_unchanged: integer, seconds: number}

--- @class skiff.CheckProblem
--- @field kind "index"|"pack"|"blob"|"point"
--- @field object string
--- @field message string

--- @class skiff.CheckReport
--- @field ok boolean
--- @field index_files integer
--- @field packs integer
--- @field blobs integer
--- @field points integer
--- @field bytes_verified integer
--- Packs left by an interrupted write (not an error; the next writer indexes them).
--- @field unindexed_packs string[]
--- Data packs of an archive repository checked by size only (reading
--- their headers would need a restore); `read_data` reads them all.
--- @field archived_packs_not_read integer
--- @field problems skiff.CheckProblem[]
--- @field damaged_packs string[]
--- Points whose restore would fail.
--- @field affected_points string[]

--- @class skiff.ForgetResult
--- @field dry_run boolean
--- @field kept string[]
--- @field removed string[]
--- Why each kept point is kept: `"last"`, `"daily"`, `"weekly"`, `"monthly"`, `"yearly"`.
--- @field reasons table<string, string[]>

--- @class skiff.PruneReport
--- @field dry_run boolean
--- @field points integer
--- @field blobs_in_use integer
--- @field blobs_removed integer
--- @field packs_deleted integer
--- @field packs_repacked integer
--- @field packs_kept integer
--- @field packs_written integer
--- @field bytes_freed integer
--- @field index_files_replaced integer
--- Packs the index listed that the store no longer holds: their entries were dropped.
--- @field packs_missing integer
--- Pack-named files no index listed, removed: not packs of this repository, or unused.
--- @field strays_removed integer
--- Such files younger than the lease (10 minutes), left for a later prune.
--- @field strays_young integer
--- @field damaged_index_files_removed integer
--- Points that reference data no pack holds (`repo.repair` names and can forget them).
--- @field points_lost_data string[]
--- What prune left undone, and why.
--- @field notes string[]

--- @class skiff.LostPoint
--- @field id string
--- @field time string
--- @field volume string
--- Blocks of the volume whose data is in no pack.
--- @field blocks_lost integer
--- Part of its block map cannot be read.
--- @field map_unreadable boolean

--- @class skiff.RepairReport
--- @field dry_run boolean
--- What was done (in a dry run: would be), one line each; empty when there was nothing to repair.
--- @field actions string[]
--- What was seen and left alone, and why.
--- @field notes string[]
--- Points whose restore fails: their data is partly gone.
--- @field lost_points skiff.LostPoint[]
--- The ids of the lost points forgotten (`forget_lost`).
--- @field forgotten string[]

repo = {}

--- Creates a repository (a random master key wrapped by the password with
--- Argon2id); refuses a location that already holds one (`kind = "conflict"`).
--- @param opts skiff.RepoInitOpts
--- @return {location: string, id: string, storage_class?: string}
function repo.init(opts) end

--- Restore points, oldest first.
--- @param opts skiff.RepoPointsOpts
--- @return skiff.RestorePoint[]
function repo.points(opts) end

--- Checks the structure and, with `read_data`, every stored byte. Problems
--- are reported in the result (`ok = false`), not raised.
--- @param opts skiff.RepoCheckOpts
--- @return skiff.CheckReport
function repo.check(opts) end

--- Forgets the points the retention rules do not keep, or the points named
--- in `points` (takes the repository's lease).
--- @param opts skiff.RepoForgetOpts
--- @return skiff.ForgetResult
function repo.forget(opts) end

--- Removes data no point references; repacks partly used packs (takes the lease).
--- @param opts skiff.RepoPruneOpts
--- @return skiff.PruneReport
function repo.prune(opts) end

--- Repairs a damaged repository (takes the lease): rebuilds the index from
--- the packs' headers when they disagree, drops entries of packs that are
--- gone (the next backup stores those blocks again), removes damaged and
--- foreign files, and names the points that lost data (`forget_lost`
--- forgets them). Nothing to do: `actions` is empty.
--- @param opts skiff.RepoRepairOpts
--- @return skiff.RepairReport
function repo.repair(opts) end
