-- The script host as a script sees it: the sandbox, errors that carry the
-- script's file and line, and the two shapes of error a primitive raises
-- (a string for misuse, a `skiff.error` table for operational failures).

-- The location an error raised by fn carries (`file:line`).
local function location_of(fn)
  local _, where = spec.error_of(fn)
  return where
end

describe("the sandbox", function()
  it("keeps what runs programs, exits, touches files by name or loads native code as functions that say why not", function()
    for _, case in ipairs({
      { "io.open", io.open, "/etc/passwd" }, { "io.lines", io.lines, "/etc/passwd" },
      { "io.input", io.input, "/etc/passwd" }, { "io.output", io.output, "/tmp/out" },
      { "io.read", io.read }, { "io.close", io.close }, { "io.tmpfile", io.tmpfile },
      { "io.popen", io.popen, "id" }, { "os.execute", os.execute, "id" }, { "os.exit", os.exit, 1 },
      { "os.remove", os.remove, "/tmp/x" }, { "os.rename", os.rename, "/tmp/x" },
      { "os.tmpname", os.tmpname }, { "os.setlocale", os.setlocale, "C" },
      { "dofile", dofile, "/etc/passwd" }, { "loadfile", loadfile, "/etc/passwd" },
      { "package.loadlib", package.loadlib, "x" }, { "package.searchpath", package.searchpath, "x" },
      { "debug.getinfo", debug.getinfo, 1 }, { "debug.sethook", debug.sethook },
    }) do
      local name, fn, arg = case[1], case[2], case[3]
      local msg = spec.error_of(function() fn(arg) end)
      local prefix = name .. " is not available to skiff scripts: "
      expect(msg:sub(1, #prefix)):to_equal(prefix)
    end
    expect(package.cpath):to_equal("")
  end)

  it("says where files go instead of io.open", function()
    expect(function() io.open("/etc/passwd") end):to_fail(
      "io.open is not available to skiff scripts: scripts cannot open files by name; use fs.read, fs.write and fs.list for files beside the script, under a folder allowed in [lua] files of skiff.toml, or in fs.scratch(); or run with --unsafe-lua")
  end)

  it("does not read the environment", function()
    expect(function() os.getenv("SKIFF_PASSWORD") end):to_fail(
      "os.getenv is not available to skiff scripts: the environment holds secrets (SKIFF_PASSWORD, AWS_SECRET_ACCESS_KEY, …); pass what a script needs as arguments (args), or run with --unsafe-lua")
  end)

  it("keeps the safe standard library", function()
    for _, f in ipairs({ os.time, os.clock, os.date, os.difftime, string.format, table.concat,
      math.floor, utf8.char, coroutine.wrap, load, pcall, require, io.write, debug.traceback }) do
      expect(type(f)):to_equal("function")
    end
    expect(string.format("%05.1f", 3.14159)):to_equal("003.1")
    expect(debug.traceback("here")):to_match("^here\nstack traceback:\n")
  end)

  it("reads files beside the script, and nowhere else", function()
    expect(fs.read("host_spec.lua")):to_contain('describe("the sandbox"')
    expect(fs.exists("host_spec.lua")):to_be(true)
    expect(fs.exists("no_such_spec.lua")):to_be(false)
    expect(fs.list(".")):to_contain("host_spec.lua")
    for _, path in ipairs({ "/etc/passwd", "../../Cargo.toml", "../it" }) do
      local msg = spec.error_of(function() fs.read(path) end)
      expect(msg):to_match("^fs%.read: " .. path:gsub("%p", "%%%0") .. ": outside the folders scripts may use: a script may read only under its own folder ")
    end
    expect(function() fs.exists("/etc/passwd") end):to_fail_matching("outside the folders scripts may use")
  end)

  it("writes only in its scratch folder and where skiff.toml allows", function()
    expect(function() fs.write("written_by_a_spec.txt", "x") end):to_fail_matching(
      "fs%.write: written_by_a_spec%.txt: outside the folders scripts may use: a script may write only under %[lua%] files in skiff%.toml")
    expect(fs.exists("written_by_a_spec.txt")):to_be(false)
    local dir = fs.scratch()
    expect(fs.scratch()):to_be(dir)
    fs.write(dir .. "/a.txt", "one")
    fs.append(dir .. "/a.txt", " two")
    expect(fs.read(dir .. "/a.txt")):to_equal("one two")
    expect(fs.list(dir)):to_equal({ "a.txt" })
    fs.remove(dir .. "/a.txt")
    expect(fs.exists(dir .. "/a.txt")):to_be(false)
    local _, _, err = spec.error_of(function() fs.read(dir .. "/a.txt") end)
    expect(err.kind):to_equal("not_found")
    expect(function() fs.write(dir .. "/b.txt") end):to_fail("fs.write: data: expected a string, got nothing")
  end)

  it("refuses a finalizer, which would run where no limit applies", function()
    expect(function() setmetatable({}, { __gc = function() end }) end):to_fail_matching(
      "setmetatable: __gc finalizers are not available to skiff scripts")
    expect(getmetatable(io.stdout)):to_be(false)
    local t = setmetatable({}, { __close = function() end })
    expect(type(t)):to_equal("table")
  end)

  it("loads text chunks, with a name and an environment", function()
    expect(load("return 1 + 1")()):to_equal(2)
    expect(load("return x * 2", "=double", "t", { x = 21 })()):to_equal(42)
    local f = load("error('boom')", "=mychunk", "t", _ENV)
    expect(f):to_fail("boom")
    expect(f):to_fail_matching("^mychunk:1: boom$")
    local nothing, why = load("return = 1", "=bad")
    expect(nothing):to_be_nil()
    expect(why):to_match("^bad:1: unexpected symbol near '='")
  end)

  it("loads text chunks without an environment into the globals", function()
    expect(load("return print")()):to_be(print)
    expect(load("return x", "=nil-env", "t", nil)):to_fail("attempt to index a nil value (upvalue '_ENV')")
  end)

  it("refuses binary chunks", function()
    expect(function() load("return 1", "x", "b") end)
      :to_fail('load: only text chunks are allowed (mode "t")')
    expect(function() load("return 1", "x", "bt") end)
      :to_fail('load: only text chunks are allowed (mode "t")')
    local f, why = load(string.dump(function() return 1 end))
    expect(f):to_be_nil()
    expect(why):to_equal("attempt to load a binary chunk (mode is 't')")
  end)

  it("stops an allocation beyond the memory limit with an error the script can catch", function()
    local ok, err = pcall(string.rep, "x", 2 ^ 30)
    expect(ok):to_be(false)
    expect(err):to_equal("not enough memory")
    expect(#string.rep("x", 1000)):to_equal(1000)
  end)

  it("requires from the stdlib, once", function()
    expect(require("skiff.spec")):to_be(spec)
    expect(function() require("nope.missing") end):to_fail_matching("module 'nope.missing' not found")
  end)
end)

describe("errors", function()
  it("carry the script's file and line", function()
    local where = location_of(function() error("plain") end)
    expect(where):to_match("host_spec%.lua:%d+$")
    local msg = spec.error_of(function() error("plain") end)
    expect(msg):to_equal("plain")
  end)

  it("from a primitive's misuse are strings located at the line that called it", function()
    -- Both calls sit on one line, so both errors must carry the same location.
    local expected = location_of(function() error("marker") end); local got = location_of(function() ec2.vpc{ name = "x" } end)
    expect(expected):to_match("host_spec%.lua:%d+$")
    expect(got):to_equal(expected)
    local msg, where, raw = spec.error_of(function() ec2.vpc{ name = "x" } end)
    expect(type(raw)):to_equal("string")
    expect(msg):to_equal("ec2.vpc: opts.cidr: required")
    expect(raw):to_equal(where .. ": " .. msg)
  end)

  it("from a helper are located in the helper, where the primitive was called", function()
    local function helper() local v = json.decode(42); return v end
    local expected = location_of(function() error("x") end)
    local got = location_of(helper)
    expect(got):to_match("host_spec%.lua:%d+$")
    local line_helper = tonumber(got:match(":(%d+)$"))
    local line_here = tonumber(expected:match(":(%d+)$"))
    expect(line_helper):to_equal(line_here - 1)
  end)

  it("from an operational failure are skiff.error tables with kind, op, message, code, retryable, where", function()
    local name = spec.unique("host")
    local v = ec2.vpc{ name = name, cidr = "10.190.0.0/16" }
    local expected = location_of(function() error("marker") end); local _, _, err = spec.error_of(function() ec2.vpc{ name = name, cidr = "10.191.0.0/16" } end)
    expect(type(err)):to_equal("table")
    expect(getmetatable(err).__name):to_equal("skiff.error")
    expect(err.kind):to_equal("conflict")
    expect(err.op):to_equal("ec2.vpc")
    expect(err.message):to_equal(string.format(
      "opts.cidr: VPC %q (%s) already exists in account default, region us-east-1 with CIDR 10.190.0.0/16, not 10.191.0.0/16", name, v.id))
    expect(err.code):to_be_nil()
    expect(err.retryable):to_be(false)
    expect(err.details):to_be_nil()
    expect(expected):to_match("host_spec%.lua:%d+$")
    expect(err.where):to_equal(expected)
    expect(tostring(err)):to_equal(err.where .. ": ec2.vpc: " .. err.message)
    expect(inspect(err)):to_equal(tostring(err))
  end)

  it("from AWS carry the API operation and AWS's error code", function()
    local v = ec2.vpc{ name = spec.unique("host"), cidr = "10.192.0.0/16" }
    local _, _, err = spec.error_of(function() ec2.subnet{ vpc = v, cidr = "10.192.1.0/24", az = "us-east-1z" } end)
    expect(getmetatable(err).__name):to_equal("skiff.error")
    expect(err.kind):to_equal("aws")
    expect(err.op):to_equal("ec2:CreateSubnet")
    expect(err.code):to_equal("InvalidParameterValue")
    expect(err.retryable):to_be(false)
    expect(err.message):to_contain("us-east-1z")
    expect(err.where):to_match("host_spec%.lua:%d+$")
    expect(tostring(err)):to_equal(err.where .. ": ec2:CreateSubnet: " .. err.message .. " (InvalidParameterValue)")
    -- The refused call created nothing: the same block is still free.
    expect(ec2.subnet{ vpc = v, cidr = "10.192.1.0/24" }.created):to_be(true)
  end)

  it("share one metatable, so scripts can tell them apart from other tables", function()
    local a = select(3, spec.error_of(function() net.verify{ subnets = { "subnet-00000000000000000" }, services = { "sqs" }, strict = true } end))
    -- A subnet that does not exist is misuse (a string), not a structured error.
    expect(type(a)):to_equal("string")
    expect(spec.strip_location(a)):to_equal("net.verify: opts.subnets[1]: no subnet subnet-00000000000000000 in account default, region us-east-1")
    local name = spec.unique("host")
    ec2.vpc{ name = name, cidr = "10.193.0.0/16" }
    local e1 = select(3, spec.error_of(function() ec2.vpc{ name = name, cidr = "10.194.0.0/16" } end))
    local e2 = select(3, spec.error_of(function() ec2.vpc{ name = name, cidr = "10.195.0.0/16" } end))
    expect(getmetatable(e1)):to_be(getmetatable(e2))
    expect(getmetatable({})):to_be_nil()
  end)
end)
