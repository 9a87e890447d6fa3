-- Temporary files for the specs that move data (repo_spec, volume_spec):
-- unique paths in the spec's private scratch folder (fs.scratch(), removed
-- with its VM), and whole-file reads and writes.

local M = {}

--- The block size of volumes and images.
M.BLOCK = 512 * 1024

local tmp = fs.scratch()

--- A function giving a fresh path in the scratch folder for `name`, unique
--- to this run and starting with `prefix`.
function M.namer(prefix)
  return function(name)
    return tmp .. "/" .. spec.unique(prefix .. name)
  end
end

function M.write(p, data)
  fs.write(p, data)
end

--- The file's content, or nil when there is none.
function M.read(p)
  if not fs.exists(p) then return nil end
  return fs.read(p)
end

return M
