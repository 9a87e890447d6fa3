-- The safe VM's standard library: what it leaves out stays as a function
-- that says what it is, why it is missing and what to use instead; and the
-- two doors to Lua that runs with hooks off are shut: a finalizer (__gc) set
-- by a script, and the file handles' metatable (whose __gc runs at every
-- collection). Loaded after guard.lua (src/host/sandbox.rs), with guard's
-- helpers (raw.wrap, raw.rawmeta and FAIL: see guard.lua), what guard.lua
-- exports (lib.got), and debug.traceback for the running coroutine.

local raw, FAIL, lib, traceback = ...
local error, type, rawget, rawset, select, setmetatable_ = error, type, rawget, rawset, select, setmetatable
local wrap, rawmeta, got = raw.wrap, raw.rawmeta, lib.got

local function removed(name, why)
  local msg = name .. " is not available to skiff scripts: " .. why
  return wrap(function() return FAIL, 0, msg end)
end

local FILES = "use fs.read, fs.write and fs.list for files beside the script, under a folder allowed in [lua] files of skiff.toml, or in fs.scratch(); or run with --unsafe-lua"
local SCRATCH = "use fs.scratch() for a private folder of the script's own; or run with --unsafe-lua"
local PROGRAMS = "scripts cannot run programs; run with --unsafe-lua"
local REMOVE = "scripts cannot remove or rename files by name; use fs.remove for files under a folder allowed in [lua] files of skiff.toml or in fs.scratch(); or run with --unsafe-lua"
local LOAD = "scripts cannot run files by name; use require (the script's folder first, then skiff's stdlib)"

for prefix, names in pairs({
  ["io."] = {
    open = "scripts cannot open files by name; " .. FILES,
    lines = "scripts cannot read files by name; " .. FILES,
    input = "scripts cannot read files by name; " .. FILES,
    output = "scripts cannot write files by name; " .. FILES,
    read = "scripts take their input as arguments (args) and read files with fs.read; under skiff serve there is no input to read",
    close = "it would close standard output; write with io.write or print",
    tmpfile = "scripts cannot create files outside their folders; " .. SCRATCH,
    popen = PROGRAMS,
  },
  ["os."] = {
    getenv = "the environment holds secrets (SKIFF_PASSWORD, AWS_SECRET_ACCESS_KEY, …); pass what a script needs as arguments (args), or run with --unsafe-lua",
    execute = PROGRAMS,
    exit = "a script cannot end the process (its workers would be left behind); return, or raise an error",
    remove = REMOVE,
    rename = REMOVE,
    tmpname = "scripts cannot create files outside their folders; " .. SCRATCH,
    setlocale = "the locale belongs to the whole process: changing it would change how every script reads and writes numbers",
  },
  [""] = { dofile = LOAD, loadfile = LOAD },
  ["package."] = {
    loadlib = "native libraries are not loaded; run with --unsafe-lua",
    searchpath = "scripts cannot search for files by name; use require",
  },
}) do
  local t = prefix == "" and _G or _G[prefix:sub(1, -2)]
  for name, why in pairs(names) do
    rawset(t, name, removed(prefix .. name, why))
  end
end

debug = setmetatable_({ traceback = traceback }, {
  __index = function(_, k)
    if type(k) ~= "string" then return nil end
    return removed("debug." .. k,
      "the debug library reaches into other functions' variables and the VM's hook, which the limits depend on; run with --unsafe-lua")
  end,
})

-- A finalizer runs with hooks off (Lua's rule), where a loop would never
-- end: refused when the metatable is set, which is when Lua marks an object
-- for finalization.
setmetatable = wrap(function(...)
  local n = select("#", ...)
  local t, mt = ...
  if type(t) ~= "table" then return FAIL, 1, "table expected, got " .. got(t, n >= 1) end
  local tm = type(mt)
  if n < 2 or (tm ~= "nil" and tm ~= "table") then
    return FAIL, 2, "nil or table expected, got " .. got(mt, n >= 2)
  end
  local old = rawmeta(t)
  if old and rawget(old, "__metatable") ~= nil then return FAIL, 0, "cannot change a protected metatable" end
  if mt and rawget(mt, "__gc") ~= nil then
    return FAIL, 0, "setmetatable: __gc finalizers are not available to skiff scripts: Lua runs them where no limit applies, so one could run forever; release what an object holds explicitly, or with a to-be-closed variable (local x <close> = …)"
  end
  return setmetatable_(t, mt)
end)

-- io.stdout and io.stderr stay; their metatable's __gc runs at every
-- collection, so it is out of scripts' reach.
rawset(getmetatable(io.stdout), "__metatable", false)
