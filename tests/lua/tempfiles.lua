-- Temporary files for the specs that move data (repo_spec, volume_spec):
-- unique paths under $TMPDIR and whole-file writes.

local M = {}

--- The block size of volumes and images.
M.BLOCK = 512 * 1024

local tmp = os.getenv("TMPDIR") or "/tmp"

--- A function giving a fresh path under $TMPDIR for `name`, unique to this
--- run and starting with `prefix`.
function M.namer(prefix)
  return function(name)
    return tmp .. "/" .. spec.unique(prefix .. name)
  end
end

function M.write(p, data)
  local f = assert(io.open(p, "wb"))
  f:write(data)
  f:close()
end

return M
