-- Copy the newest point of each volume of a standard repository into an
-- archive repository, on an archive worker placed in the standard
-- repository's region (the archive reference scenario, by hand; a policy's
-- `archive` does this on its schedule).
--
--   skiff run examples/archive_points.lua \
--     standard=s3://bucket/prefix standard_account=repository standard_region=eu-west-1 \
--     archive=s3://cold-bucket/prefix archive_account=archive archive_region=ap-southeast-2 \
--     [standard_endpoint=URL] [archive_endpoint=URL] [private=true] \
--     [storage_class=DEEP_ARCHIVE] [password_ssm=/skiff/repository-password]
--
-- With private=true the worker has no public address and reaches each
-- repository through its S3 interface endpoint (see
-- private_network_archive.lua); the launch is refused, naming what is
-- missing, unless the whole way to both is there. The archive repository is
-- created when it does not exist yet.

local password = { ssm = args.password_ssm or "/skiff/repository-password" }
local function repository(role)
  return {
    kind = "repository",
    location = args[role] or error("give " .. role .. "=s3://BUCKET/PREFIX", 0),
    account = args[role .. "_account"],
    region = args[role .. "_region"],
    s3_endpoint = args[role .. "_endpoint"],
  }
end
local standard, archive = repository("standard"), repository("archive")
local function at(r, extra)
  local t = { location = r.location, account = r.account, region = r.region,
              s3_endpoint = r.s3_endpoint, password = password }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local w = deploy_worker{
  purpose = "archive", resource = standard, private = args.private == "true",
  repositories = { archive },
}
local ok, err = pcall(function()
  local have, existing = pcall(repo.points, at(archive, { worker = w }))
  if not have then
    if type(existing) == "table" and existing.kind == "not_found" then
      repo.init(at(archive, { worker = w, storage_class = args.storage_class or "DEEP_ARCHIVE" }))
      print("created the archive repository " .. archive.location)
    else
      error(existing, 0)
    end
  end
  local newest = {}
  for _, p in ipairs(repo.points(at(standard, { worker = w }))) do
    if not newest[p.volume] or p.time > newest[p.volume].time then newest[p.volume] = p end
  end
  for volume, p in pairs(newest) do
    local r = copy_volume{
      from = at(standard, { location = "repo:" .. standard.location .. "#" .. p.id }),
      to = at(archive, { location = "repo:" .. archive.location }),
      volume = volume, time = p.time, worker = w,
    }
    print(string.format("archived %s (%s, %s) → %s, %d bytes stored", p.id, volume, p.time, r.point, r.bytes_stored))
  end
end)
w:remove()
if not ok then error(err, 0) end
