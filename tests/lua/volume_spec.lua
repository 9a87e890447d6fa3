-- copy_volume{}: images to repositories and back, incrementals, progress,
-- and the exact errors of misuse. Runs on local files only.

local tempfiles = require("tempfiles")
local BLOCK = tempfiles.BLOCK
local path = tempfiles.namer("skiff-volume-")
local write_file = tempfiles.write
local read_file = tempfiles.read

-- A block of recognisable, varied content.
local function block(seed)
  local parts = {}
  for i = 1, BLOCK // 64 do
    parts[i] = string.format("%015d:%s", seed * 100000 + i, string.rep(string.char(65 + (seed + i) % 26), 48))
  end
  return table.concat(parts)
end

local pwfile = path("password")
write_file(pwfile, "volume spec password\n")
local password = { file = pwfile }

local function new_repo()
  local loc = path("repo")
  repo.init({ location = loc, password = password })
  return loc
end

describe("copy_volume", function()
  it("backs an image up, then incrementally, and restores each point bit-exact", function()
    local img = path("disk.img")
    local v1 = block(1) .. string.rep("\0", BLOCK) .. block(2) .. block(1) .. "tail"
    write_file(img, v1)
    local loc = new_repo()

    local full = copy_volume({ from = "file:" .. img, to = "repo:" .. loc, password = password, volume = "disk", tags = { day = "1" } })
    expect(type(full.point)):to_equal("string")
    expect(full.parent):to_be_nil()
    expect(full.volume):to_equal("disk")
    expect(full.size):to_equal(#v1)
    expect(full.blocks_total):to_equal(5)
    expect(full.blocks_new):to_equal(3)
    expect(full.blocks_dedup):to_equal(1)
    expect(full.blocks_zero):to_equal(1)
    expect(full.bytes_stored > 0):to_be(true)
    expect(type(full.seconds)):to_equal("number")

    local v2 = block(1) .. block(9) .. block(2) .. block(1) .. "tail"
    write_file(img, v2)
    local incr = copy_volume({ from = "file:" .. img, to = "repo:" .. loc, password = password, volume = "disk" })
    expect(incr.parent):to_equal(full.point)
    expect(incr.blocks_new):to_equal(1)
    expect(incr.blocks_zero):to_equal(0)

    for _, case in ipairs({ { full.point, v1 }, { incr.point, v2 } }) do
      local out = path("restored.img")
      local r = copy_volume({ from = "repo:" .. loc .. "#" .. case[1], to = "file:" .. out, password = password })
      expect(r.path):to_equal(out)
      expect(read_file(out) == case[2]):to_be(true)
    end

    local again = copy_volume({ from = "file:" .. img, to = "repo:" .. loc, password = password, volume = "disk", parent = false })
    expect(again.parent):to_be_nil()
    expect(again.blocks_new):to_equal(0)
  end)

  it("reports progress, and stops when the callback raises", function()
    local img = path("p.img")
    write_file(img, block(3) .. block(4) .. block(5))
    local loc = new_repo()
    local seen = {}
    copy_volume({
      from = "file:" .. img, to = "repo:" .. loc, password = password,
      progress = function(p) seen[#seen + 1] = p end,
    })
    expect(#seen >= 2):to_be(true)
    local last = seen[#seen]
    expect(last.bytes_total):to_equal(3 * BLOCK)
    expect(last.bytes_done):to_equal(3 * BLOCK)
    expect(last.bytes_read):to_equal(3 * BLOCK)

    local out = path("stopped.img")
    local err = expect(function()
      copy_volume({
        from = "file:" .. img, to = "file:" .. out, password = password,
        progress = function() error("enough", 0) end,
      })
    end):to_fail()
    expect(err.kind):to_equal("stopped")
    expect(err.message):to_equal("stopped by the progress callback: enough")
    expect(read_file(out)):to_be_nil()
  end)

  it("refuses misuse, naming the option", function()
    expect(function() copy_volume({ from = "disk.img", to = "file:/tmp/x" }) end):to_fail(
      'copy_volume: opts.from: "disk.img" is not a location: expected file:PATH, ebs:SNAPSHOT_ID, ebs: or repo:LOCATION[#POINT]')
    expect(function() copy_volume({ from = "file:/a", to = "ebs:vol-1" }) end):to_fail(
      'copy_volume: opts.to: "ebs:vol-1": expected ebs:snap-<hex> or ebs: (a new snapshot)')
    expect(function() copy_volume({ to = "file:/a" }) end):to_fail("copy_volume: opts.from: required")
    expect(function()
      copy_volume({ from = "file:/a", to = { location = "file:/b", s3_endpoint = "https://s3.example" } })
    end):to_fail("copy_volume: opts.to.s3_endpoint: file:/b is not a repository in S3; an S3 endpoint is for repo:s3://… places")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", speed = 1 }) end):to_fail(
      "copy_volume: opts.speed: unknown option; expected one of from, to, parent, volume, tags, password, overwrite, description, wait, time, account, region, s3_endpoint")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", password = "hunter2" }) end):to_fail(
      'copy_volume: opts.password: expected where to read the password ({env = "VAR"}, {file = "…"} or {ssm = "/name"}), not the password itself')
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", password = { env = "A", file = "b" } }) end):to_fail(
      "copy_volume: opts.password: give only one of env, file or ssm")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", parent = true }) end):to_fail(
      "copy_volume: opts.parent: expected a point id, or false for a full copy")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", progress = 5 }) end):to_fail(
      "copy_volume: opts.progress: expected function, got number")
    expect(function() copy_volume("file:/a") end):to_fail(
      "copy_volume: expected an options table copy_volume{…}, got string")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", volume = "" }) end):to_fail(
      "copy_volume: opts.volume: expected a volume name, got an empty one")
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", time = "9999-01-01T00:00:00Z" }) end):to_fail(
      'copy_volume: opts.time: "9999-01-01T00:00:00Z" is in the future; a point\'s time is when its data was taken')
    expect(function() copy_volume({ from = "file:/a", to = "file:/b", tags = { ["skiff:task"] = "t-1" } }) end):to_fail(
      'copy_volume: opts.tags.skiff:task: tags starting with "skiff:" are skiff\'s own (it reads them back to find its work); give the tag another name')
  end)

  it("refuses to overwrite a file unless asked, and changes nothing", function()
    local img, out = path("src.img"), path("dst.img")
    write_file(img, block(6))
    write_file(out, "precious")
    expect(function() copy_volume({ from = "file:" .. img, to = "file:" .. out }) end):to_fail(
      "copy_volume: file:" .. out .. ": already exists; remove it or pass overwrite = true")
    expect(read_file(out)):to_equal("precious")
    copy_volume({ from = "file:" .. img, to = "file:" .. out, overwrite = true })
    expect(read_file(out) == block(6)):to_be(true)
  end)

  it("raises structured errors for operational failures", function()
    local loc = new_repo()
    local wrong = path("wrong-password")
    write_file(wrong, "not it")
    local img = path("w.img")
    write_file(img, block(7))
    local ok, err = pcall(copy_volume, { from = "file:" .. img, to = "repo:" .. loc, password = { file = wrong } })
    expect(ok):to_be(false)
    expect(err.kind):to_equal("wrong_password")
    expect(err.op):to_equal("repo.open")
    expect(err.retryable):to_be(false)
    expect(err.message):to_match("wrong password")

    local ok2, err2 = pcall(copy_volume, { from = "repo:" .. loc .. "#abcdef12", to = "file:" .. path("none.img"), password = password })
    expect(ok2):to_be(false)
    expect(err2.kind):to_equal("not_found")
    expect(err2.message):to_match("no restore point abcdef12")
  end)
end)
