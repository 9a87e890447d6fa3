-- The repo namespace: init, points, check, forget, prune, repair, on local repositories.

local tempfiles = require("tempfiles")
local BLOCK = tempfiles.BLOCK
local path = tempfiles.namer("skiff-repo-")
local write_file = tempfiles.write

local pwfile = path("password")
write_file(pwfile, "repo spec password")
local password = { file = pwfile }

local function image(seed, blocks)
  local p = path("img")
  local parts = {}
  for b = 1, blocks do
    parts[b] = string.rep(string.format("%08d-%08d|", seed, b), BLOCK // 18) .. string.rep("x", BLOCK % 18)
  end
  write_file(p, table.concat(parts))
  return p
end

describe("repo", function()
  it("is a namespace of six primitives", function()
    for _, name in ipairs({ "init", "points", "check", "forget", "prune", "repair" }) do
      expect(type(repo[name])):to_equal("function")
    end
  end)

  it("init creates a repository, once", function()
    local loc = path("r")
    local r = repo.init({ location = loc, password = password })
    expect(r.location):to_equal(loc)
    expect(#r.id):to_equal(32)
    local ok, err = pcall(repo.init, { location = "repo:" .. loc, password = password })
    expect(ok):to_be(false)
    expect(err.kind):to_equal("conflict")
    expect(err.message):to_equal(loc .. ": a repository already exists here")
  end)

  it("points lists restore points, oldest first, by volume", function()
    local loc = path("r")
    repo.init({ location = loc, password = password })
    expect(repo.points({ location = loc, password = password })):to_equal({})
    local a = copy_volume({ from = "file:" .. image(1, 2), to = "repo:" .. loc, password = password, volume = "a" })
    local b = copy_volume({ from = "file:" .. image(2, 3), to = "repo:" .. loc, password = password, volume = "b", tags = { env = "prod" } })
    local all = repo.points({ location = loc, password = password })
    expect(#all):to_equal(2)
    expect(all[1].id):to_equal(a.point)
    expect(all[2].id):to_equal(b.point)
    expect(all[2].volume):to_equal("b")
    expect(all[2].size):to_equal(3 * BLOCK)
    expect(all[2].tags):to_equal({ env = "prod" })
    expect(all[2].stats.blocks_new):to_equal(3)
    expect(type(all[2].time)):to_equal("string")
    local only_a = repo.points({ location = loc, password = password, volume = "a" })
    expect(#only_a):to_equal(1)
    expect(only_a[1].id):to_equal(a.point)
  end)

  it("check reports a sound repository", function()
    local loc = path("r")
    repo.init({ location = loc, password = password })
    copy_volume({ from = "file:" .. image(3, 2), to = "repo:" .. loc, password = password })
    local report = repo.check({ location = loc, password = password, read_data = true })
    expect(report.ok):to_be(true)
    expect(report.points):to_equal(1)
    expect(report.problems):to_equal({})
    expect(report.damaged_packs):to_equal({})
    expect(report.bytes_verified > 0):to_be(true)
  end)

  it("forget keeps what the rules keep, and prune frees the rest", function()
    local loc = path("r")
    repo.init({ location = loc, password = password })
    local img = image(4, 3)
    local first = copy_volume({ from = "file:" .. img, to = "repo:" .. loc, password = password, volume = "v" })
    write_file(img, string.rep("z", 3 * BLOCK))
    local second = copy_volume({ from = "file:" .. img, to = "repo:" .. loc, password = password, volume = "v" })
    local dry = repo.forget({ location = loc, password = password, keep_last = 1, dry_run = true })
    expect(dry.removed):to_equal({ first.point })
    expect(#repo.points({ location = loc, password = password })):to_equal(2)
    local done = repo.forget({ location = loc, password = password, keep_last = 1 })
    expect(done.kept):to_equal({ second.point })
    expect(done.reasons[second.point]):to_equal({ "last" })
    local pr = repo.prune({ location = loc, password = password, repack_threshold = 0 })
    expect(pr.blobs_removed >= 3):to_be(true)
    expect(pr.bytes_freed > 0):to_be(true)
    expect(repo.check({ location = loc, password = password, read_data = true }).ok):to_be(true)
  end)

  it("forget takes point ids, and an unknown one changes nothing", function()
    local loc = path("r")
    repo.init({ location = loc, password = password })
    local a = copy_volume({ from = "file:" .. image(5, 1), to = "repo:" .. loc, password = password, volume = "v" })
    local b = copy_volume({ from = "file:" .. image(6, 1), to = "repo:" .. loc, password = password, volume = "v" })
    local ok, err = pcall(repo.forget, { location = loc, password = password, points = { a.point, "0000ffff" } })
    expect(ok):to_be(false)
    expect(err.kind):to_equal("not_found")
    expect(err.message):to_match("no restore point 0000ffff; nothing was forgotten")
    expect(#repo.points({ location = loc, password = password })):to_equal(2)
    local done = repo.forget({ location = loc, password = password, points = { a.point:sub(1, 6) } })
    expect(done.removed):to_equal({ a.point })
    expect(done.kept):to_equal({})
    local left = repo.points({ location = loc, password = password })
    expect(#left):to_equal(1)
    expect(left[1].id):to_equal(b.point)
  end)

  it("repair finds nothing to do in a sound repository", function()
    local loc = path("r")
    repo.init({ location = loc, password = password })
    copy_volume({ from = "file:" .. image(7, 2), to = "repo:" .. loc, password = password })
    local r = repo.repair({ location = loc, password = password })
    expect(r.actions):to_equal({})
    expect(r.lost_points):to_equal({})
    expect(r.forgotten):to_equal({})
    expect(r.dry_run):to_be(false)
  end)

  it("refuses misuse, naming the option", function()
    expect(function() repo.points({}) end):to_fail("repo.points: opts.location: required")
    expect(function() repo.check({ location = "/x", read_data = "yes" }) end):to_fail(
      "repo.check: opts.read_data: expected boolean, got string")
    expect(function() repo.forget({ location = "/x" }) end):to_fail(
      "repo.forget: opts: give at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly (forget never removes every point), or the ids of the points to forget (points)")
    expect(function() repo.forget({ location = "/x", keep_last = 1, points = { "abcd" } }) end):to_fail(
      "repo.forget: opts.points: give point ids or retention rules (keep_*, volume, tags), not both")
    expect(function() repo.prune({ location = "/x", repack_threshold = 2 }) end):to_fail(
      "repo.prune: opts.repack_threshold: expected a fraction between 0 and 1, got 2")
    expect(function() repo.init({ location = "s3://Bad_Bucket/x" }) end):to_fail(
      'repo.init: opts.location: invalid S3 bucket name "Bad_Bucket" in "s3://Bad_Bucket/x": expected s3://BUCKET/PREFIX with a bucket of 3-63 lowercase letters, digits, \'-\' or \'.\'')
    expect(function() repo.points({ location = "/x", password = { vault = "y" } }) end):to_fail(
      "repo.points: opts.password.vault: unknown option; expected one of env, file, ssm, account, region")
  end)

  it("says clearly when there is no repository or no password", function()
    local ok, err = pcall(repo.points, { location = path("nothing"), password = password })
    expect(ok):to_be(false)
    expect(err.kind):to_equal("not_found")
    expect(err.message):to_match("no repository here")
    expect(function() repo.points({ location = path("nothing"), password = { env = "SKIFF_SPEC_NO_SUCH_VARIABLE" } }) end):to_fail(
      "repo.points: no repository password: SKIFF_SPEC_NO_SUCH_VARIABLE is not set (give it in SKIFF_PASSWORD, a password file, or an SSM SecureString parameter)")
  end)
end)
