--- @meta
-- LuaLS annotations for the spec runner behind `skiff test`
-- (stdlib/skiff/spec.lua). Each spec file runs in a fresh VM with these
-- globals; `require("skiff.spec")` returns the same `spec` table.

--- Groups tests; names nest into each test's full name.
--- @param name string
--- @param fn fun()
function describe(name, fn) end

--- Declares a test. It fails when `fn` raises.
--- @param name string
--- @param fn fun()
function it(name, fn) end

--- Declares a test that is not written yet; counted as pending.
--- @param name string
function pending(name) end

--- Runs `fn` before each test of the enclosing `describe` (outer hooks first).
--- @param fn fun()
function before_each(fn) end

--- Runs `fn` after each test of the enclosing `describe` (inner hooks first),
--- even when the test failed.
--- @param fn fun()
function after_each(fn) end

--- @class skiff.Expect
--- @field actual any
local Expect = {}

--- Deep equality; the error names the path of the first difference.
--- @param expected any
function Expect:to_equal(expected) end

--- Identity (`rawequal`).
--- @param expected any
function Expect:to_be(expected) end

function Expect:to_be_truthy() end

function Expect:to_be_falsy() end

function Expect:to_be_nil() end

--- The value is a string matching the Lua pattern.
--- @param pattern string
function Expect:to_match(pattern) end

--- A string contains `x` as plain text, or a list contains an element deeply equal to `x`.
--- @param x any
function Expect:to_contain(x) end

--- `#value == n`.
--- @param n integer
function Expect:to_have_length(n) end

--- The value is a function that raises; with `message`, the error's text
--- without its leading `file:line: ` must equal it exactly. Returns the raw error.
--- @param message? string
--- @return any err
function Expect:to_fail(message) end

--- The value is a function that raises an error whose text matches the Lua
--- pattern. Returns the raw error.
--- @param pattern string
--- @return any err
function Expect:to_fail_matching(pattern) end

--- @param actual any
--- @return skiff.Expect
function expect(actual) end

--- @class skiff.spec.Failure
--- @field name string
--- @field message string

--- @class skiff.spec.Result
--- @field passed integer
--- @field failed integer
--- @field pending integer
--- @field failures skiff.spec.Failure[]

spec = {}

spec.describe = describe
spec.it = it
spec.pending = pending
spec.before_each = before_each
spec.after_each = after_each
spec.expect = expect

--- A name nobody else in this emulator or account has used: `prefix-<time><random><counter>`.
--- @param prefix? string (default: `"t"`)
--- @return string
function spec.unique(prefix) end

--- Strips the `file:line: ` Lua puts in front of an error message.
--- @param msg string
--- @return string
function spec.strip_location(msg) end

--- Calls `fn(...)` and returns what it raised: the message without its
--- location, the location (`file:line`, or nil), and the raw error value.
--- Raises when `fn` did not.
--- @param fn function
--- @param ... any
--- @return string message
--- @return string? where
--- @return any err
function spec.error_of(fn, ...) end

--- Runs the declared tests whose full name contains `filter`, printing a
--- line per test (`skiff test` calls this).
--- @param filter? string
--- @return skiff.spec.Result
function spec.run(filter) end
