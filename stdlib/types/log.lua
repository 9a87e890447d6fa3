--- @meta
-- LuaLS annotations for `log` (src/api/util.rs). Messages go to stderr
-- through skiff's logger; the values are joined with spaces, tables
-- pretty-printed as by `inspect`. `SKIFF_LOG=debug` shows debug messages.

log = {}

--- Logs at debug level, prefixed with the caller's `file:line`.
--- @param ... any
function log.debug(...) end

--- Logs at info level, without a location.
--- @param ... any
function log.info(...) end

--- Logs at warn level, prefixed with the caller's `file:line`.
--- @param ... any
function log.warn(...) end

--- Logs at error level, prefixed with the caller's `file:line`. Does not raise.
--- @param ... any
function log.error(...) end
