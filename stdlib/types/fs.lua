--- @meta
-- LuaLS annotations for `fs` (src/api/fs.rs, checks in src/host/files.rs):
-- the files a script may touch, instead of `io.open`, which scripts do not
-- get (nor `os.getenv`, `os.remove`, `os.tmpname`, …; `--unsafe-lua` gives
-- them back).
--
-- A script reads in its own folder (the runbook's, the spec's, the policy
-- folder under `skiff serve`, the current folder in the REPL), reads and
-- writes under the folders of `[lua] files` in skiff.toml, and has a
-- private scratch folder. Relative paths start at its own folder. A path
-- that leads outside those folders — written so (`..`, an absolute path) or
-- through a symbolic link — is refused with `fs.read: PATH: outside the
-- folders scripts may use: …` before anything is read or written. Its own
-- folder is read-only: a script that could write beside itself could
-- rewrite its skiff.toml. A missing file is a `skiff.error` of kind
-- `not_found`; other failures are kind `io` or `invalid`.

fs = {}

--- The whole of a regular file, at most 64 MiB.
--- @param path string
--- @return string
function fs.read(path) end

--- Writes `data` to a file under `[lua] files` or `fs.scratch()`, created or
--- replaced; never through a symbolic link. The folder must exist.
--- @param path string
--- @param data string
function fs.write(path, data) end

--- Adds `data` to the end of a file (created if missing), as `fs.write` does.
--- @param path string
--- @param data string
function fs.append(path, data) end

--- Whether a path the script may read exists (a path outside is refused, not false).
--- @param path string
--- @return boolean
function fs.exists(path) end

--- The names in a folder the script may read, sorted (at most 100,000).
--- @param path string
--- @return string[]
function fs.list(path) end

--- Removes a file under `[lua] files` or `fs.scratch()` (not a folder).
--- @param path string
function fs.remove(path) end

--- The absolute path of the script's private folder (mode 0700 in the
--- system's temporary folder), made on first use and removed with the
--- script's VM: for images and other files a runbook or spec makes and
--- passes to primitives.
--- @return string
function fs.scratch() end
