-- Browse a volume's restore point and take files back: a file-level
-- recovery session (docs/flr.md) on a worker next to the repository, which
-- admits only the operator's address — or on this machine with local=true.
--
--   skiff run examples/recover_files.lua repository=s3://bucket/prefix \
--     volume=vol-0123… allow=203.0.113.7/32 [point=POINT] [ttl=2h] \
--     [private=true] [password_ssm=/skiff/repository-password] \
--     [repository_account=NAME] [repository_region=REGION] [s3_endpoint=URL]
--   skiff run examples/recover_files.lua repository=/srv/backups volume=NAME \
--     local=true password_file=pw.txt [ttl=30m]
--
-- Without `point`, the volume's newest point is served. The URL (with its
-- access token) and the certificate's fingerprint are printed when the
-- session listens; the run ends with the session (its ttl, or Ctrl-C), and
-- lists what was downloaded or restored.

local repository = args.repository or error("give repository=LOCATION", 0)
local volume = args.volume or error("give volume=NAME (the volume the point was taken of)", 0)
local is_local = args["local"] == "true"
local password
if args.password_file then
  password = { file = args.password_file }
else
  password = { ssm = args.password_ssm or "/skiff/repository-password" }
end
local at = { account = args.repository_account, region = args.repository_region,
             s3_endpoint = args.s3_endpoint }

local points = repo.points{ location = repository, volume = volume, password = password,
  account = at.account, region = at.region, s3_endpoint = at.s3_endpoint }
if #points == 0 then error("no restore point of " .. volume .. " in " .. repository, 0) end
local point = args.point
if not point then
  table.sort(points, function(a, b) return a.time < b.time end)
  point = points[#points].id
end

local location = repository:match("^repo:") and repository or ("repo:" .. repository)
local r = flr{
  point = location .. "#" .. point,
  password = password, account = at.account, region = at.region, s3_endpoint = at.s3_endpoint,
  allow = (not is_local) and (args.allow or error("give allow=CIDR (your address, e.g. 203.0.113.7/32)", 0)) or nil,
  private = args.private == "true" or nil,
  ["local"] = is_local or nil,
  ttl = args.ttl or "2h",
  on_open = function(s)
    print("file-level recovery of " .. volume .. " point " .. point .. ": open " .. s.url)
    print("the certificate's SHA-256 fingerprint is " .. s.fingerprint)
    for _, p in ipairs(s.partitions) do print("partition " .. p) end
  end,
}
print("the session ended: " .. r.why)
for _, e in ipairs(r.served) do
  print(string.format("%s %s %s for %s: %s", e.time, e.action, table.concat(e.paths, ", "), e.client, e.outcome))
end
return r
