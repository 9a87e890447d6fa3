-- The default run of a policy that brings no `run = function(ctx) … end`:
--
--   1. backup: every selected instance (or selected volume) is snapshotted,
--      and a backup worker next to it copies each snapshot into the policy's
--      repository, incrementally against the volume's newest point, reading
--      only the blocks EBS lists as changed since that point's snapshot; that
--      older snapshot is then deleted (the newest stays as the next run's
--      base) and the worker removed as soon as it is done;
--   2. archive (when the policy has one): an archive worker in the standard
--      repository's region (its bucket's, when not declared) copies the points the policy selects for archive
--      (the first point of each week, month or year of each volume, or all)
--      that are not archived yet into the archive repository, oldest first,
--      keeping each point's time — the archive is its own forever-incremental
--      chain, its data stored in the archive storage class;
--   3. retention: a retention worker in the repository's region forgets the
--      policy's points its retention does not keep, then prunes.
--
-- The policy's `worker` settings hold for all three kinds of worker, except
-- `account`, which only backup workers may take (see `deploy` below).
--
-- Archive comes before retention so a point chosen for the archive is copied
-- before retention may forget it. Everything the run creates is tagged with
-- the policy's name; retention only ever considers the policy's own points,
-- so several policies can share a repository.
--
-- Called as `require("skiff.policy_run")(policy, ctx)` in the policy's own
-- VM, with the run's worker pool; returns `{points = n, bytes = n}` (points
-- written to either repository, bytes they added). A failure of one instance
-- does not stop the others; the run then fails naming every failure, after
-- archive and retention have run for what succeeded (retention is skipped
-- when the archive failed, so it cannot forget a point still to archive).

local M = {}

-- How long a copy, forget or prune waits for another writer's lease on the
-- repository (one writer at a time; the policy's own backups queue).
M.lease_wait = 6 * 3600

local function message(e)
  if type(e) == "table" and e.message then
    return e.message
  end
  return tostring(e)
end

local function has_tags(have, want)
  for k, v in pairs(want) do
    local got = have[k]
    if got == nil or (v ~= "*" and got ~= v) then
      return false
    end
  end
  return true
end

-- What the policy selects, as backup targets `{resource, id, region,
-- account, volumes}`: instances matching every tag or named by id (all their
-- volumes), and volumes named by id (attached or not). Ids found nowhere are
-- returned as problems.
function M.select(policy)
  local s = policy.select
  local instances = ec2.instances{ regions = s.regions, accounts = s.accounts }
  local wanted, found = {}, {}
  for _, id in ipairs(s.ids) do wanted[id] = true end
  local by_tags = next(s.tags) ~= nil
  local out = {}
  for _, inst in ipairs(instances) do
    local whole = (by_tags and has_tags(inst.tags, s.tags)) or wanted[inst.id]
    if wanted[inst.id] then found[inst.id] = true end
    local volumes = {}
    for _, v in ipairs(inst.volumes) do
      if whole or wanted[v.id] then
        found[v.id] = true
        table.insert(volumes, v)
      end
    end
    if #volumes > 0 then
      table.insert(out, { resource = inst, id = inst.id, region = inst.region,
                          account = inst.account, volumes = volumes })
    end
  end
  -- Volumes named by id that no selected instance carries.
  local loose = {}
  for _, id in ipairs(s.ids) do
    if id:sub(1, 4) == "vol-" and not found[id] then table.insert(loose, id) end
  end
  if #loose > 0 then
    for _, v in ipairs(ec2.volumes{ ids = loose, regions = s.regions, accounts = s.accounts }) do
      found[v.id] = true
      table.insert(out, {
        resource = v, id = v.id, region = v.region, account = v.account,
        volumes = { { id = v.id, device = v.device or "", size = v.size } },
      })
    end
  end
  local problems = {}
  for _, id in ipairs(s.ids) do
    if not found[id] then
      table.insert(problems, string.format(
        "select.ids: %s is not %s in the selected regions and accounts", id,
        id:sub(1, 2) == "i-" and "a running or stopped instance" or "a volume"))
    end
  end
  return out, problems
end

local function password_of(repository, what)
  local p = repository.password or { env = "SKIFF_PASSWORD" }
  if not p.ssm then
    error(string.format(
      "the default run copies on workers, which read the %s repository's password from SSM Parameter Store: declare it with password = { ssm = \"/name\" } (%s)",
      what, repository.name or repository.location), 0)
  end
  return p
end

-- A repository as a copy location or a repo.* option set on a worker: its
-- account when it names one (the worker reaches it through that account's
-- role; else with its own), its region and the S3 endpoint its requests go
-- through.
local function at(repository, extra)
  local t = { location = repository.location, account = repository.account,
              region = repository.region, s3_endpoint = repository.s3_endpoint }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- A worker of the run, with the policy's `worker` settings: `private` and
-- `profile` hold for every worker. `account` is for backup workers only —
-- the backup account unless the policy asks for the production one, where a
-- worker reads the snapshot through that account's role; archive and
-- retention workers always run in the backup account (placement refuses any
-- other), whatever account the backups run in.
-- `repositories` are those the worker reaches besides a repository
-- `resource` (a private worker's preflight follows the way to each).
local function deploy(policy, purpose, resource, tags, repositories)
  return deploy_worker{
    purpose = purpose, resource = resource, tags = tags,
    account = purpose == "backup" and policy.worker.account or nil,
    private = policy.worker.private,
    profile = policy.worker.profile,
    repositories = repositories,
  }
end

local function backup_instance(policy, ctx, inst, password)
  local w = deploy(policy, "backup", inst.resource, { policy = policy.name, ["backup-of"] = inst.id },
    { policy.repository })
  local done = {}
  for _, vol in ipairs(inst.volumes) do
    local snap = ec2.snapshot{
      volume = vol.id, account = inst.account, region = inst.region,
      description = string.format("skiff policy %s: %s %s", policy.name, inst.id, vol.device),
      tags = { policy = policy.name },
    }
    local ok, r = pcall(copy_volume, {
      -- The instance's account: a worker in the backup account reads the
      -- snapshot through that account's role.
      from = { location = "ebs:" .. snap.id, account = inst.account, region = inst.region },
      to = at(policy.repository, { location = "repo:" .. policy.repository.location }),
      password = password,
      volume = vol.id,
      tags = {
        policy = policy.name, run = tostring(ctx.run),
        instance = inst.resource.kind == "instance" and inst.id or inst.resource.instance,
        device = vol.device, region = inst.region, account = inst.account,
      },
      wait = M.lease_wait,
      worker = w,
    })
    -- The snapshot of the volume's newest point is the base its next
    -- incremental lists changed blocks against (ListChangedBlocks). After a
    -- good copy the new snapshot is that base and the parent's goes; after a
    -- failed one the new snapshot goes and the base stays.
    local drop = snap.id
    if ok then drop = r.parent_snapshot end
    local deleted, derr = true, nil
    if drop then
      deleted, derr = pcall(ec2.delete_snapshot, { snapshot = drop, account = inst.account, region = inst.region })
    end
    if not ok then
      pcall(w.remove, w)
      error(r, 0)
    end
    if not deleted then
      log.warn(string.format("policy %s: snapshot %s of %s was not deleted: %s",
        policy.name, drop, vol.id, message(derr)))
    end
    ctx.log(string.format("%s %s → point %s (parent %s): read %d of %d blocks, %d new, %d deduplicated, %d bytes stored",
      inst.id, vol.id, r.point, r.parent or "none", r.blocks_read, r.blocks_total,
      r.blocks_new, r.blocks_dedup, r.bytes_stored))
    table.insert(done, r)
  end
  w:remove()
  return done
end

-- ─── archive ───────────────────────────────────────────────────────────────

-- Days since 1970-01-01 of an RFC 3339 date (proleptic Gregorian).
local function days(time)
  local y, m, d = time:match("^(%d+)-(%d+)-(%d+)")
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m <= 2 then y = y - 1 end
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- The period a point belongs to for `points` ("weekly": its ISO week, which
-- starts on Monday; "monthly"; "yearly"; "all": the point itself).
function M.period(points, point)
  if points == "weekly" then
    return "w" .. tostring((days(point.time) + 3) // 7)
  elseif points == "monthly" then
    return point.time:sub(1, 7)
  elseif points == "yearly" then
    return point.time:sub(1, 4)
  end
  return point.id
end

-- The standard point an archive point was copied from: a copy records its
-- source, `repo:LOCATION#ID`. (Archives written by skiff before scripts were
-- kept out of the `skiff:` tag namespace also carry `skiff:archived-from`.)
function M.archived_from(p)
  return p.tags["skiff:archived-from"] or (p.source or ""):match("^repo:.*#([^#]+)$")
end

-- Points of the standard repository to copy: per volume, the first of the
-- policy's points in each period that the archive has no point for yet.
function M.to_archive(policy, standard_points, archive_points)
  local rule = policy.archive.points
  local have = {}
  for _, p in ipairs(archive_points) do
    local origin = M.archived_from(p)
    if origin then
      have[p.volume .. " " .. M.period(rule, p)] = true
      have[origin] = true
    end
  end
  local out = {}
  for _, p in ipairs(standard_points) do
    if p.tags.policy == policy.name then
      local key = p.volume .. " " .. M.period(rule, p)
      if not have[key] and not have[p.id] then
        have[key] = true
        table.insert(out, p)
      end
    end
  end
  table.sort(out, function(a, b)
    if a.time ~= b.time then return a.time < b.time end
    return a.id < b.id
  end)
  return out
end

local function archive(policy, ctx, password)
  local arch = policy.archive
  local arch_password = password_of(arch.repository, "archive")
  -- In the standard repository's region: its bucket's, unless declared.
  local w = deploy(policy, "archive", policy.repository, { policy = policy.name }, { arch.repository })
  local ok, res = pcall(function()
    local ok_points, existing = pcall(repo.points, at(arch.repository, { password = arch_password, worker = w }))
    if not ok_points then
      if type(existing) == "table" and existing.kind == "not_found" then
        repo.init(at(arch.repository, {
          password = arch_password, storage_class = arch.storage_class, worker = w,
        }))
        ctx.log(string.format("archive repository %s created, storage class %s",
          arch.repository.location, arch.storage_class))
        existing = {}
      else
        error(existing, 0)
      end
    end
    local standard = repo.points(at(policy.repository, { password = password, worker = w }))
    local copied = {}
    for _, p in ipairs(M.to_archive(policy, standard, existing)) do
      -- The point's own tags; skiff's (e.g. the task that wrote it) are not the copy's.
      local tags = {}
      for k, v in pairs(p.tags) do
        if not k:find("^skiff:") then tags[k] = v end
      end
      local r = copy_volume{
        from = at(policy.repository, { location = "repo:" .. policy.repository.location .. "#" .. p.id,
                                       password = password }),
        to = at(arch.repository, { location = "repo:" .. arch.repository.location,
                                   password = arch_password }),
        volume = p.volume,
        time = p.time,
        tags = tags,
        wait = M.lease_wait,
        worker = w,
      }
      ctx.log(string.format("archived %s (%s, %s) → %s, %d bytes stored",
        p.id, p.volume, p.time, r.point, r.bytes_stored))
      table.insert(copied, r)
    end
    return copied
  end)
  pcall(w.remove, w)
  if not ok then error(res, 0) end
  return res
end

-- ─── retention ─────────────────────────────────────────────────────────────

local function retention(policy, ctx, password)
  local w = deploy(policy, "retention", policy.repository, { policy = policy.name })
  local ok, res = pcall(function()
    local rules = at(policy.repository, {
      password = password, tags = { policy = policy.name }, wait = M.lease_wait, worker = w,
    })
    for k, v in pairs(policy.retention) do
      if v > 0 then rules[k] = v end
    end
    local forgot = repo.forget(rules)
    local pruned = repo.prune(at(policy.repository, { password = password, wait = M.lease_wait, worker = w }))
    ctx.log(string.format("retention: %d point(s) kept, %d forgotten; prune freed %d bytes",
      #forgot.kept, #forgot.removed, pruned.bytes_freed))
    return { forget = forgot, prune = pruned }
  end)
  pcall(w.remove, w)
  if not ok then error(res, 0) end
  return res
end

-- ─── the run ───────────────────────────────────────────────────────────────

function M.run(policy, ctx)
  local password = password_of(policy.repository, "policy's")
  if policy.archive then password_of(policy.archive.repository, "archive") end
  local instances, problems = M.select(policy)
  ctx.log(string.format("%d instance(s) and volume(s) selected", #instances))
  local points, bytes, volumes_done = 0, 0, 0
  local results = parallel(instances, function(inst)
    local ok, r = pcall(backup_instance, policy, ctx, inst, password)
    return { ok = ok, result = r, instance = inst }
  end)
  for _, r in ipairs(results) do
    if r.ok then
      for _, c in ipairs(r.result) do
        points = points + 1
        bytes = bytes + c.bytes_stored
        volumes_done = volumes_done + 1
      end
    else
      table.insert(problems, string.format("%s (%s, %s): %s",
        r.instance.id, r.instance.region, r.instance.account, message(r.result)))
    end
  end
  ctx.progress{ phase = "backup", volumes = volumes_done, points = points, bytes = bytes }
  local archived = true
  if policy.archive then
    local ok, copied = pcall(archive, policy, ctx, password)
    if ok then
      for _, c in ipairs(copied) do
        points = points + 1
        bytes = bytes + c.bytes_stored
      end
    else
      archived = false
      table.insert(problems, "archive: " .. message(copied))
    end
  end
  if volumes_done == 0 then
    -- The rules keep a set that depends only on the points there are: with
    -- no new point there is nothing new to forget.
    ctx.log("retention: no new point, nothing to forget")
  elseif archived then
    local ok, err = pcall(retention, policy, ctx, password)
    if not ok then table.insert(problems, "retention: " .. message(err)) end
  else
    -- Retention could forget a point the archive still needs.
    table.insert(problems, "retention: skipped, as the archive did not complete")
  end
  ctx.progress{ phase = "done", volumes = volumes_done, points = points, bytes = bytes }
  if #problems > 0 then
    error(string.format("policy %s: %d point(s) written, but: %s",
      policy.name, points, table.concat(problems, "; ")), 0)
  end
  return { points = points, bytes = bytes }
end

return M.run
