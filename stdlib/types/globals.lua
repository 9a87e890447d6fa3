--- @meta
-- LuaLS annotations for skiff's global values and its error value
-- (src/api/mod.rs, src/api/util.rs).

--- The script's command-line arguments: `skiff run x.lua a b key=value`
--- gives `{ "a", "b", "key=value", key = "value" }` (the same strings are also
--- the chunk's `...`). Empty under `skiff test`.
--- @class skiff.Args
--- @field [integer] string Every argument, in order.
--- @field [string] string The value of each `key=value` argument.

--- @type skiff.Args
args = {}

--- Renders a value as Lua-like text, as the REPL prints it: tables with their
--- list first and other keys sorted, on one line when short, cycles marked
--- `<cycle>`, keys starting with `__` (internal by convention) left out; a
--- table with `__tostring` (such as a `skiff.error`) as it says.
--- @param value any
--- @return string
function inspect(value) end

--- @alias skiff.ErrorKind
---| "aws"       # AWS refused or failed; `code` is AWS's error code
---| "conflict"  # what exists disagrees with what was asked; nothing was changed
---| "timeout"   # a resource did not become ready in time
---| "preflight" # `net.verify{strict = true}` found gaps; `details` is the report
---| "internal"  # skiff could not build the result for Lua
---| "worker_lost" # a worker or its agent did not answer in time, or died
---| "io"        # a local I/O step around a worker failed (its log folder, starting the local agent)
---| string      # the kind a task reported from a worker

--- What a primitive raises for an operational failure (misuse raises a plain
--- string `file:line: prim: opts.field: message` instead). Its metatable is
--- named `skiff.error`; `tostring(err)` is `where: op: message (code)`.
---
--- ```lua
--- local ok, err = pcall(peer_vpcs, { requester = a, accepter = b })
--- if not ok and type(err) == "table" and err.retryable then … end
--- ```
--- @class skiff.error
--- @field kind skiff.ErrorKind
--- @field op string The AWS operation (`"ec2:CreateSubnet"`) or the primitive (`"ec2.vpc"`).
--- @field message string What happened.
--- @field code? string AWS's error code (`"InvalidParameterValue"`), when there is one.
--- @field retryable boolean Whether trying again can help (throttling, 5xx).
--- @field where? string `file:line` of the call; nil when a C function (such as `pcall`) called the primitive directly.
--- @field details? skiff.VerifyReport|any Extra data: for `"preflight"`, the `net.verify` report.
