-- The spec runner behind `skiff test`: describe/it blocks, before_each and
-- after_each hooks, and expect() matchers. A spec file is run in a fresh VM;
-- the runner prints one line per test and returns the counts.

local spec = {}

local root = { name = nil, children = {}, before = {}, after = {} }
local current = root
local counter = 0

local function add_child(node)
  node.parent = current
  table.insert(current.children, node)
end

function spec.describe(name, fn)
  local node = { name = name, children = {}, before = {}, after = {} }
  add_child(node)
  local saved = current
  current = node
  fn()
  current = saved
end

function spec.it(name, fn)
  add_child({ name = name, fn = fn, test = true })
end

function spec.pending(name)
  add_child({ name = name, pending = true, test = true })
end

function spec.before_each(fn)
  table.insert(current.before, fn)
end

function spec.after_each(fn)
  table.insert(current.after, fn)
end

--- A name nobody else in this emulator or account has used: prefix-<random>.
function spec.unique(prefix)
  counter = counter + 1
  return string.format("%s-%d%04d%d", prefix or "t", math.floor(time.now() * 1000) % 100000000, math.random(0, 9999), counter)
end

--- Strips the `file:line: ` Lua puts in front of error messages.
function spec.strip_location(msg)
  return (msg:gsub("^[^\n:]+:%d+: ", "", 1))
end

--- Runs fn and returns the message it raised (location stripped), the
--- location, and the raw error value; fails the test if fn did not raise.
function spec.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    error("expected an error, but the call succeeded", 2)
  end
  local text = tostring(err)
  local where = text:match("^([^\n:]+:%d+): ")
  return spec.strip_location(text), where, err
end

-- Deep equality with a path to the first difference.
local function diff(a, b, path)
  if rawequal(a, b) then return nil end
  if type(a) ~= type(b) then
    return string.format("%s: expected %s, got %s", path, inspect(b), inspect(a))
  end
  if type(a) ~= "table" then
    if a == b then return nil end
    return string.format("%s: expected %s, got %s", path, inspect(b), inspect(a))
  end
  for k, v in pairs(b) do
    local d = diff(a[k], v, path .. "." .. tostring(k))
    if d then return d end
  end
  for k, v in pairs(a) do
    if b[k] == nil then
      return string.format("%s.%s: unexpected %s", path, tostring(k), inspect(v))
    end
  end
  return nil
end

local Expect = {}
Expect.__index = Expect

function spec.expect(actual)
  return setmetatable({ actual = actual }, Expect)
end

function Expect:to_equal(expected)
  local d = diff(self.actual, expected, "value")
  if d then error(d, 2) end
end

function Expect:to_be(expected)
  if not rawequal(self.actual, expected) then
    error(string.format("expected %s, got %s", inspect(expected), inspect(self.actual)), 2)
  end
end

function Expect:to_be_truthy()
  if not self.actual then error("expected a truthy value, got " .. inspect(self.actual), 2) end
end

function Expect:to_be_falsy()
  if self.actual then error("expected a falsy value, got " .. inspect(self.actual), 2) end
end

function Expect:to_be_nil()
  if self.actual ~= nil then error("expected nil, got " .. inspect(self.actual), 2) end
end

function Expect:to_match(pattern)
  if type(self.actual) ~= "string" or not self.actual:find(pattern) then
    error(string.format("expected %s to match %q", inspect(self.actual), pattern), 2)
  end
end

--- A string contains a plain substring, or a list contains an element (deep equality).
function Expect:to_contain(x)
  if type(self.actual) == "string" then
    if self.actual:find(x, 1, true) then return end
  elseif type(self.actual) == "table" then
    for _, v in ipairs(self.actual) do
      if diff(v, x, "") == nil then return end
    end
  end
  error(string.format("expected %s to contain %s", inspect(self.actual), inspect(x)), 2)
end

function Expect:to_have_length(n)
  if #self.actual ~= n then
    error(string.format("expected length %d, got %d: %s", n, #self.actual, inspect(self.actual)), 2)
  end
end

--- The function raises; with `message`, its text (location stripped) equals it exactly.
function Expect:to_fail(message)
  local ok, err = pcall(self.actual)
  if ok then error("expected an error, but the call succeeded", 2) end
  if message ~= nil then
    local got = spec.strip_location(tostring(err))
    if got ~= message then
      error(string.format("wrong error:\n  expected: %s\n  got:      %s", message, got), 2)
    end
  end
  return err
end

--- The function raises an error whose text matches a Lua pattern.
function Expect:to_fail_matching(pattern)
  local ok, err = pcall(self.actual)
  if ok then error("expected an error, but the call succeeded", 2) end
  if not tostring(err):find(pattern) then
    error(string.format("wrong error: %q does not match %q", tostring(err), pattern), 2)
  end
  return err
end

local function full_name(node)
  local parts = {}
  while node and node.name do
    table.insert(parts, 1, node.name)
    node = node.parent
  end
  return table.concat(parts, " ")
end

local function hooks(node, field)
  local chain = {}
  while node do
    table.insert(chain, 1, node)
    node = node.parent
  end
  local out = {}
  for _, n in ipairs(chain) do
    for _, h in ipairs(n[field] or {}) do table.insert(out, h) end
  end
  return out
end

--- Runs the tests the file declared; prints a line per test; returns counts and failures.
function spec.run(filter)
  local result = { passed = 0, failed = 0, pending = 0, failures = {} }
  local function visit(node)
    if node.test then
      local name = full_name(node)
      if filter and not name:find(filter, 1, true) then return end
      if node.pending then
        result.pending = result.pending + 1
        print("  - " .. name .. " (pending)")
        return
      end
      local ok, err = true, nil
      for _, h in ipairs(hooks(node.parent, "before")) do
        ok, err = pcall(h)
        if not ok then break end
      end
      if ok then ok, err = pcall(node.fn) end
      local after = hooks(node.parent, "after")
      for i = #after, 1, -1 do
        local ok2, err2 = pcall(after[i])
        if ok and not ok2 then ok, err = ok2, err2 end
      end
      if ok then
        result.passed = result.passed + 1
        print("  ✓ " .. name)
      else
        result.failed = result.failed + 1
        print("  ✗ " .. name)
        print("      " .. tostring(err):gsub("\n", "\n      "))
        table.insert(result.failures, { name = name, message = tostring(err) })
      end
      return
    end
    for _, child in ipairs(node.children) do visit(child) end
  end
  visit(root)
  return result
end

return spec
