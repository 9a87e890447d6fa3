-- Restore a volume's restore point into a new EBS snapshot and volume in a
-- chosen region, through a restore worker placed there.
--
--   skiff run examples/restore_volume.lua repository=s3://bucket/prefix \
--     volume=vol-0123… [point=POINT] [region=eu-west-1] [az=eu-west-1b] \
--     [account=default] [password_ssm=/skiff/repository-password] \
--     [repository_account=NAME] [repository_region=REGION] [s3_endpoint=URL]
--
-- Without `point`, the volume's newest point is restored. The worker writes
-- the blocks through the EBS direct APIs (zero blocks are skipped), the
-- snapshot becomes a volume in `az`, and the worker is removed.

local repository = args.repository or error("give repository=LOCATION", 0)
local volume = args.volume or error("give volume=NAME (the volume id the point was taken of)", 0)
local password = { ssm = args.password_ssm or "/skiff/repository-password" }
local region = args.region
local account = args.account
-- Where the repository lives and the address its S3 requests go to.
local repo_at = { account = args.repository_account, region = args.repository_region,
                  s3_endpoint = args.s3_endpoint }

local points = repo.points{ location = repository, volume = volume, password = password,
  account = repo_at.account, region = repo_at.region, s3_endpoint = repo_at.s3_endpoint }
if #points == 0 then error("no restore point of " .. volume .. " in " .. repository, 0) end
local point = args.point
if not point then
  table.sort(points, function(a, b) return a.time < b.time end)
  point = points[#points].id
end

local w = deploy_worker{ purpose = "restore", resource = { region = region, account = account }, account = account,
  repositories = { { location = repository, account = repo_at.account, region = repo_at.region,
                     s3_endpoint = repo_at.s3_endpoint } } }
local r = copy_volume{
  from = { location = "repo:" .. repository .. "#" .. point, account = repo_at.account,
           region = repo_at.region, s3_endpoint = repo_at.s3_endpoint },
  to = { location = "ebs:", region = w.region, account = w.account },
  password = password,
  worker = w,
}
w:remove()
local vol = ec2.volume{ snapshot = r.snapshot, az = args.az, account = w.account, region = w.region,
  tags = { ["restored-from"] = point } }
print(string.format("point %s of %s → snapshot %s → volume %s in %s (%d blocks written, %d zero)",
  point, volume, r.snapshot, vol.id, vol.az, r.blocks_new + r.blocks_dedup, r.blocks_zero))
return { point = point, snapshot = r.snapshot, volume = vol.id }
