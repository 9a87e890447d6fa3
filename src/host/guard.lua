-- Lua's library functions that could run without end out of the hook's
-- reach, replaced by ones that stop with the call's budget, deadline or
-- interrupt; and pcall, xpcall, coroutine.resume and coroutine.close made
-- unable to swallow a stop. Loaded once per VM, safe or not
-- (src/host/guard.rs), with:
--   raw.find/gmatch/gsub_string/scan  the pattern matcher (src/host/pattern.rs), counting
--                    its steps; they fail as wrapped functions do (FAIL, n, msg)
--   raw.wrap(impl)   impl as a C function: when impl returns FAIL, n, msg it raises as
--                    Lua's C library does (n > 0: `bad argument #n to 'name' (msg)`;
--                    n == 0: msg at the caller's line; n < 0: msg as it is), so errors
--                    name the function as the script called it and point at its line
--   raw.frame()      name, namewhat and error level of the outermost skiff function on the stack
--   raw.rawmeta(v)   v's metatable, past __metatable
--   raw.stopped()    the stop message of the current call, or nil
--   FAIL             the marker raw.wrap looks for

local raw, FAIL = ...
local type, select, error, tostring, tonumber, rawget =
  type, select, error, tostring, tonumber, rawget
local pcall_, xpcall_, resume_, close_ = pcall, xpcall, coroutine.resume, coroutine.close
local format, sub, byte, rep = string.format, string.sub, string.byte, string.rep
local concat, insert, remove, sort = table.concat, table.insert, table.remove, table.sort
local tointeger, ult, maxinteger = math.tointeger, math.ult, math.maxinteger
local wrap, frame, rawmeta, stopped = raw.wrap, raw.frame, raw.rawmeta, raw.stopped
local string_mt = getmetatable("")
local iotype = io and io.type

-- The name of a value's type in messages, as luaL_typeerror gives it.
local function got(v, present)
  if not present then return "no value" end
  local t = type(v)
  local mt
  if t == "table" then mt = rawmeta(v)
  elseif t == "string" then mt = string_mt
  elseif t == "userdata" and iotype and iotype(v) then return "FILE*"
  end
  local name = mt and rawget(mt, "__name")
  if type(name) == "string" then return name end
  return t
end

-- Argument checks: the value, or nil and the message of luaL_check*.
local function str_arg(v, present)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  return nil, "string expected, got " .. got(v, present)
end

local function int_arg(v, present)
  local i = tointeger(v)
  if i then return i end
  local t = type(v)
  if (t == "number" or t == "string") and tonumber(v) then
    return nil, "number has no integer representation"
  end
  return nil, "number expected, got " .. got(v, present)
end

-- string ------------------------------------------------------------------

local function find_aux(is_find, ...)
  local n = select("#", ...)
  local s, p, init, plain = ...
  local e
  s, e = str_arg(s, n >= 1)
  if not s then return FAIL, 1, e end
  p, e = str_arg(p, n >= 2)
  if not p then return FAIL, 2, e end
  if init == nil then init = 1 else
    init, e = int_arg(init, true)
    if not init then return FAIL, 3, e end
  end
  return raw.find(s, p, init, (is_find and plain) and true or false, is_find)
end

string.find = wrap(function(...) return find_aux(true, ...) end)
string.match = wrap(function(...) return find_aux(false, ...) end)

string.gmatch = wrap(function(...)
  local n = select("#", ...)
  local s, p, init = ...
  local e
  s, e = str_arg(s, n >= 1)
  if not s then return FAIL, 1, e end
  p, e = str_arg(p, n >= 2)
  if not p then return FAIL, 2, e end
  if init == nil then init = 1 else
    init, e = int_arg(init, true)
    if not init then return FAIL, 3, e end
  end
  return raw.gmatch(s, p, init)
end)

-- One replacement of a gsub with a function or table: the match's `start,
-- stop` (0-based, end exclusive), nil when there is none, or a failure.
local function replace(out, k, s, repl, tr, start, stop, ...)
  if start == nil or start == FAIL then return start, stop, ... end
  local v
  if tr == "function" then v = repl(...) else v = repl[(...)] end
  if not v then
    v = sub(s, start + 1, stop)
  else
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" then
      return FAIL, 0, format("invalid replacement value (a %s)", tv)
    end
  end
  out[k] = v
  return start, stop
end

string.gsub = wrap(function(...)
  local n = select("#", ...)
  local s, p, repl, max = ...
  local e
  s, e = str_arg(s, n >= 1)
  if not s then return FAIL, 1, e end
  p, e = str_arg(p, n >= 2)
  if not p then return FAIL, 2, e end
  local tr = type(repl)
  if max == nil then max = #s + 1 else
    max, e = int_arg(max, true)
    if not max then return FAIL, 4, e end
  end
  if tr ~= "string" and tr ~= "number" and tr ~= "function" and tr ~= "table" then
    return FAIL, 3, "string/function/table expected, got " .. got(repl, n >= 3)
  end
  if tr ~= "function" and tr ~= "table" then
    return raw.gsub_string(s, p, tostring(repl), max)
  end
  -- The replacement runs here, as Lua: counted, interruptible, its errors as raised.
  local anchor = byte(p, 1) == 94
  if anchor then p = sub(p, 2) end
  local out, k = {}, 0
  local pos, last, count = 0, -1, 0
  while count < max do
    k = k + 2
    local start, stop, msg = replace(out, k, s, repl, tr, raw.scan(s, p, pos, last, anchor, tr == "table"))
    if start == FAIL then return FAIL, stop, msg end
    if start == nil then
      k = k - 2
      break
    end
    out[k - 1] = sub(s, pos + 1, start)
    count = count + 1
    pos, last = stop, stop
    if anchor then break end
  end
  out[k + 1] = sub(s, pos + 1)
  return concat(out), count
end)

-- C's loop runs n times even when the result is empty: string.rep("", 2^62).
string.rep = wrap(function(...)
  local n = select("#", ...)
  local s, count, sep = ...
  local e
  s, e = str_arg(s, n >= 1)
  if not s then return FAIL, 1, e end
  count, e = int_arg(count, n >= 2)
  if not count then return FAIL, 2, e end
  if sep == nil then sep = "" else
    sep, e = str_arg(sep, true)
    if not sep then return FAIL, 3, e end
  end
  if count <= 0 or (#s == 0 and #sep == 0) then return "" end
  -- lstrlib's MAXSIZE: INT_MAX.
  if #s + #sep > 2147483647 // count then return FAIL, 0, "resulting string too large" end
  return rep(s, count, sep)
end)

-- table -------------------------------------------------------------------
-- C's loops read and write through metamethods that may be C functions, so
-- a table whose length lies keeps them going with no Lua to count. A plain
-- table (no metatable) is bounded by its size and goes to C; anything else
-- is done here, in counted Lua.

local function is_plain(t)
  return type(t) == "table" and rawmeta(t) == nil
end

-- checktab: nil, or the message for a value that cannot act as a table.
local function tab_error(t, r, w, l, present)
  if type(t) == "table" then return nil end
  local mt
  if type(t) == "string" then mt = string_mt else mt = rawmeta(t) end
  if mt and (not r or rawget(mt, "__index") ~= nil) and (not w or rawget(mt, "__newindex") ~= nil)
    and (not l or rawget(mt, "__len") ~= nil) then
    return nil
  end
  return "table expected, got " .. got(t, present)
end

-- luaL_len: #t as an integer, or nil when it is not one.
local function len(t)
  return tointeger(#t)
end

local NOT_INTEGER = "object length is not an integer"

table.insert = wrap(function(...)
  local n = select("#", ...)
  local t, a, b = ...
  local plain = is_plain(t)
  local e = not plain and tab_error(t, true, true, true, n >= 1)
  if e then return FAIL, 1, e end
  local size = len(t)
  if not size then return FAIL, 0, NOT_INTEGER end
  local last = size + 1
  if n == 2 then
    t[last] = a
    return
  elseif n ~= 3 then
    return FAIL, 0, "wrong number of arguments to 'insert'"
  end
  local pos
  pos, e = int_arg(a, true)
  if not pos then return FAIL, 2, e end
  if not ult(pos - 1, last) then return FAIL, 2, "position out of bounds" end
  if plain then
    insert(t, pos, b)
    return
  end
  for i = last, pos + 1, -1 do t[i] = t[i - 1] end
  t[pos] = b
end)

table.remove = wrap(function(...)
  local n = select("#", ...)
  local t, pos = ...
  local plain = is_plain(t)
  local e = not plain and tab_error(t, true, true, true, n >= 1)
  if e then return FAIL, 1, e end
  local size = len(t)
  if not size then return FAIL, 0, NOT_INTEGER end
  if pos == nil then pos = size else
    pos, e = int_arg(pos, true)
    if not pos then return FAIL, 2, e end
  end
  if pos ~= size and ult(size, pos - 1) then return FAIL, 2, "position out of bounds" end
  if plain then return (remove(t, pos)) end
  local v = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return v
end)

table.move = wrap(function(...)
  local n = select("#", ...)
  local a1, f, e, t, a2 = ...
  local msg
  f, msg = int_arg(f, n >= 2)
  if not f then return FAIL, 2, msg end
  e, msg = int_arg(e, n >= 3)
  if not e then return FAIL, 3, msg end
  t, msg = int_arg(t, n >= 4)
  if not t then return FAIL, 4, msg end
  local same = a2 == nil
  if same then a2 = a1 end
  msg = tab_error(a1, true, false, false, n >= 1)
  if msg then return FAIL, 1, msg end
  msg = tab_error(a2, false, true, false, not same or n >= 1)
  if msg then return FAIL, same and 1 or 5, msg end
  if e >= f then
    if not (f > 0 or e < maxinteger + f) then return FAIL, 3, "too many elements to move" end
    local count = e - f + 1
    if not (t <= maxinteger - count + 1) then return FAIL, 4, "destination wrap around" end
    if t > e or t <= f or (not same and a1 ~= a2) then
      for i = 0, count - 1 do a2[t + i] = a1[f + i] end
    else
      for i = count - 1, 0, -1 do a2[t + i] = a1[f + i] end
    end
  end
  return a2
end)

table.concat = wrap(function(...)
  local n = select("#", ...)
  local t, sep, i, j = ...
  local plain = is_plain(t)
  local e = not plain and tab_error(t, true, false, true, n >= 1)
  if e then return FAIL, 1, e end
  local last = len(t)
  if not last then return FAIL, 0, NOT_INTEGER end
  if sep == nil then sep = "" else
    sep, e = str_arg(sep, true)
    if not sep then return FAIL, 2, e end
  end
  if i == nil then i = 1 else
    i, e = int_arg(i, true)
    if not i then return FAIL, 3, e end
  end
  if j == nil then j = last else
    j, e = int_arg(j, true)
    if not j then return FAIL, 4, e end
  end
  if plain then
    local ok, r = pcall_(concat, t, sep, i, j)
    if ok then return r end
    return FAIL, r == "not enough memory" and -1 or 0, r
  end
  local parts, k = {}, 0
  for idx = i, j do
    local v = t[idx]
    local tv = type(v)
    if tv ~= "string" and tv ~= "number" then
      return FAIL, 0, format("invalid value (%s) at index %d in table for 'concat'", tv, idx)
    end
    k = k + 1
    parts[k] = v
  end
  return concat(parts, sep)
end)

-- C's sort on a plain table is bounded by its size; anything else is
-- sorted as a plain copy, read and written back in counted Lua.
table.sort = wrap(function(...)
  local n = select("#", ...)
  local t, comp = ...
  local plain = is_plain(t)
  local e = not plain and tab_error(t, true, true, true, n >= 1)
  if e then return FAIL, 1, e end
  local size = len(t)
  if not size then return FAIL, 0, NOT_INTEGER end
  if size <= 1 then return end
  if not (size < 2147483647) then return FAIL, 1, "array too big" end
  if comp ~= nil and type(comp) ~= "function" then
    return FAIL, 2, "function expected, got " .. got(comp, true)
  end
  local list = t
  if not plain then
    list = {}
    for i = 1, size do list[i] = t[i] end
  end
  local ok, err = pcall_(sort, list, comp)
  if not ok then
    return FAIL, err == "invalid order function for sorting" and 0 or -1, err
  end
  if not plain then
    for i = 1, size do t[i] = list[i] end
  end
end)

-- pcall and friends -------------------------------------------------------
-- Once a call is stopped, whatever they caught is raised again: a script
-- cannot catch its way past its budget, deadline or an interrupt. They stay
-- Lua functions, so a coroutine can still yield inside them.

local function recheck(ok, ...)
  if not ok then
    local m = stopped()
    if m then error(m, 0) end
  end
  return ok, ...
end

pcall = function(...)
  return recheck(pcall_(...))
end

-- The message handler is skipped once the call is stopped: the stop is
-- raised by the hook, and Lua runs the handler of an error raised there
-- with hooks off, where a loop would never end.
xpcall = function(...)
  local f, handler = ...
  if type(handler) ~= "function" then
    local name, what, level = frame()
    local n = what == "method" and 1 or 2
    error(format("bad argument #%d to '%s' (function expected, got %s)", n, name or "xpcall",
      got(handler, select("#", ...) >= 2)), level)
  end
  return recheck(xpcall_(f, function(m)
    if stopped() then return m end
    return handler(m)
  end, select(3, ...)))
end

coroutine.resume = function(...)
  return recheck(resume_(...))
end

coroutine.close = function(...)
  return recheck(close_(...))
end

-- For the sandbox's Lua half.
return { got = got }
