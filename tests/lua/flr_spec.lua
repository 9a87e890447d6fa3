-- flr{}: what is refused before anything is deployed, mounted or served.

describe("flr", function()
  local function refused(opts)
    local ok, err = pcall(flr, opts)
    expect(ok):to_be(false)
    expect(type(err)):to_equal("string")
    return err
  end

  it("is a global primitive", function()
    expect(type(flr)):to_equal("function")
  end)

  it("needs a point: repo:LOCATION#POINT", function()
    expect(refused({ point = "repo:/srv/backups", allow = "203.0.113.7/32" }))
      :to_contain("flr: opts.point: name the restore point")
    expect(refused({ point = "file:/x.img", allow = "203.0.113.7/32" }))
      :to_contain("flr: opts.point: expected repo:LOCATION#POINT")
  end)

  it("refuses a bad ttl, a bad allow, unknown options and a non-function on_open", function()
    local p = "repo:s3://skiff-backups/p#0123abcd"
    expect(refused({ point = p, allow = "203.0.113.7/32", ttl = "3w" })):to_contain("flr: opts.ttl:")
    expect(refused({ point = p, allow = "203.0.113.7/32", ttl = "13h" })):to_contain("longer than a session may last")
    expect(refused({ point = p, allow = "203.0.113.300/32" })):to_contain("flr: opts.allow:")
    expect(refused({ point = p, allow = "203.0.113.7/32", colour = "red" })):to_contain("colour")
    expect(refused({ point = p, allow = "203.0.113.7/32", on_open = "print" })):to_contain("flr: opts.on_open: expected a function")
  end)

  it("a worker's session needs its allow, an S3 repository and the password in SSM", function()
    expect(refused({ point = "repo:s3://skiff-backups/p#0123abcd" })):to_contain("flr: opts.allow: required")
    expect(refused({ point = "repo:/srv/backups#0123abcd", allow = "203.0.113.7/32" }))
      :to_contain("a worker reaches S3 repositories only")
    expect(refused({ point = "repo:s3://skiff-backups/p#0123abcd", allow = "203.0.113.7/32", password = { file = "pw" } }))
      :to_contain("flr: opts.password: a worker reads the repository password from SSM")
  end)

  it("a local session takes no allow and no private", function()
    expect(refused({ point = "repo:/srv/backups#0123abcd", ["local"] = true, allow = "203.0.113.7/32" }))
      :to_contain("flr: opts.allow: a local session listens on 127.0.0.1 only")
    expect(refused({ point = "repo:/srv/backups#0123abcd", ["local"] = true, private = true }))
      :to_contain("flr: opts.private: a local session has no worker")
  end)
end)
