--- @meta
-- LuaLS annotations for `time` (src/api/util.rs).

time = {}

--- Seconds since the Unix epoch, with a fraction.
--- @return number
function time.now() end

--- Waits `seconds` (0 up to 365 days; fractions allowed) without blocking
--- other work and without spending the instruction budget.
--- @param seconds number
function time.sleep(seconds) end

--- `t` as RFC 3339 text in UTC, to the second: `"2023-11-14T22:13:20Z"`.
--- @param t? number Seconds since the Unix epoch. (default: `time.now()`)
--- @return string
function time.iso(t) end
