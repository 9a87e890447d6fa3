--- @meta
-- LuaLS annotations for `json` (src/api/util.rs).

json = {}

--- Encodes a value as compact JSON; object keys are sorted. A table with a
--- list part (`#t > 0`) becomes an array of `t[1]` … `t[#t]` (holes become
--- `null`, and its other keys are dropped); any other table becomes an
--- object with string keys (an empty table is `{}`); `nil` is
--- `null`. Integers stay integers, floats keep a fraction (`1.0`); NaN and
--- infinities become `null`. Functions, threads, userdata and non-string
--- keys of an object are refused with `json.encode: …`.
--- @param value any
--- @return string
function json.encode(value) end

--- Decodes JSON text. Objects and arrays become tables, `null` becomes `nil`
--- (so an object's null members disappear), integers become Lua integers.
--- Invalid text raises `json.decode: invalid JSON: …`.
--- @param text string
--- @return any
function json.decode(text) end
