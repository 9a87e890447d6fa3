-- The estate primitives against the emulator: ec2.volume, ec2.snapshot and
-- ec2.delete_snapshot end to end (an empty volume, its snapshot, a volume
-- from that snapshot, deletion and a second deletion), ec2.instances on what
-- a script can see (scripts cannot launch instances, and skiff's own workers
-- are never part of the estate), and the exact message of every bad option.
--
-- Every call makes new volumes and snapshots, so the file can run again and
-- again against the same emulator; every tag value comes from spec.unique.

local ACCOUNTS = 'skiff.toml declares "other"'

describe("ec2.volume", function()
  it("creates an empty volume of a size and returns its description", function()
    local v = ec2.volume{ size = 3 }
    expect(v.kind):to_equal("volume")
    expect(v.id):to_match("^vol%-%x+$")
    expect(v):to_equal({
      kind = "volume", id = v.id, size = 3, az = "us-east-1a", state = "available",
      region = "us-east-1", account = "default",
    })
  end)

  it("makes a new volume on every call", function()
    local a = ec2.volume{ size = 1 }
    local b = ec2.volume{ size = 1 }
    expect(a.id ~= b.id):to_be(true)
  end)

  it("takes a zone, a type and tags", function()
    local v = ec2.volume{ size = 2, az = "us-east-1c", type = "gp2", tags = { owner = spec.unique("estate") } }
    expect(v.az):to_equal("us-east-1c")
    expect(v.size):to_equal(2)
    expect(v.state):to_equal("available")
  end)

  it("creates in another region, and in another account's own region", function()
    local west = ec2.volume{ size = 1, region = "us-west-2" }
    expect({ west.region, west.account, west.az }):to_equal({ "us-west-2", "default", "us-west-2a" })
    local theirs = ec2.volume{ size = 1, account = "other" }
    expect({ theirs.region, theirs.account, theirs.az }):to_equal({ "eu-west-1", "other", "eu-west-1a" })
  end)

  it("creates from a snapshot: its size by default, or larger, in the snapshot's scope", function()
    local source = ec2.volume{ size = 4 }
    local s = ec2.snapshot{ volume = source }
    local same = ec2.volume{ snapshot = s }
    expect(same.snapshot_id):to_equal(s.id)
    expect(same.size):to_equal(4)
    local larger = ec2.volume{ snapshot = s.id, size = 10, az = "us-east-1b" }
    expect({ larger.snapshot_id, larger.size, larger.az }):to_equal({ s.id, 10, "us-east-1b" })
    -- A snapshot table carries its account and region; the volume goes there.
    local theirs = ec2.snapshot{ volume = ec2.volume{ size = 1, account = "other" } }
    local restored = ec2.volume{ snapshot = theirs }
    expect({ restored.account, restored.region, restored.snapshot_id }):to_equal({ "other", "eu-west-1", theirs.id })
    ec2.delete_snapshot{ snapshot = s }
    ec2.delete_snapshot{ snapshot = theirs }
  end)

  it("refuses bad options, naming the field", function()
    local vol = ec2.volume{ size = 1 }
    expect(function() ec2.volume("x") end)
      :to_fail("ec2.volume: expected an options table ec2.volume{…}, got string")
    expect(function() ec2.volume{} end)
      :to_fail("ec2.volume: opts.size: give a snapshot or a size in GiB")
    expect(function() ec2.volume{ size = 1, type = "ssd" } end)
      :to_fail('ec2.volume: opts.type: unknown volume type "ssd"')
    expect(function() ec2.volume{ size = 1, az = "us-west-2a" } end)
      :to_fail('ec2.volume: opts.az: "us-west-2a" is not a zone of us-east-1')
    expect(function() ec2.volume{ size = 1, account = "other", az = "us-east-1a" } end)
      :to_fail('ec2.volume: opts.az: "us-east-1a" is not a zone of eu-west-1')
    expect(function() ec2.volume{ size = 1, iopz = 3000 } end)
      :to_fail("ec2.volume: opts.iopz: unknown option; expected one of snapshot, size, az, type, iops, tags, timeout, account, region")
    expect(function() ec2.volume{ size = 1, tags = { team = 1 } } end)
      :to_fail("ec2.volume: opts.tags.team: expected string, got number")
    local own = 'tags starting with "skiff:" are skiff\'s own (it reads them back to find its work); give the tag another name'
    expect(function() ec2.volume{ size = 1, tags = { ["skiff:managed"] = "false" } } end)
      :to_fail("ec2.volume: opts.tags.skiff:managed: " .. own)
    expect(function() ec2.snapshot{ volume = vol, tags = { ["skiff:worker"] = "w-1" } } end)
      :to_fail("ec2.snapshot: opts.tags.skiff:worker: " .. own)
    expect(function() ec2.volume{ size = 1, account = "nobody" } end)
      :to_fail('ec2.volume: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.volume{ size = 1, region = "mars-1" } end)
      :to_fail('ec2.volume: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() ec2.volume{ snapshot = vol } end)
      :to_fail(string.format("ec2.volume: opts.snapshot: expected a snapshot, got a volume (%s)", vol.id))
    expect(function() ec2.volume{ snapshot = {} } end)
      :to_fail("ec2.volume: opts.snapshot: this table has no `id`; pass a table returned by a skiff primitive or an id string")
    -- Sizes and timeouts are whole numbers (the wording of these is serde's).
    expect(function() ec2.volume{ size = "1" } end):to_fail("ec2.volume: opts.size: expected integer, got string")
    expect(function() ec2.volume{ size = 1, timeout = "1" } end):to_fail("ec2.volume: opts.timeout: expected integer, got string")
  end)

  it("refuses a size outside 1 to 65536 GiB, and io1 without iops", function()
    expect(function() ec2.volume{ size = 0 } end):to_fail("ec2.volume: opts.size: 0 GiB is not a volume size (1 to 65536)")
    expect(function() ec2.volume{ size = -1 } end):to_fail("ec2.volume: opts.size: -1 GiB is not a volume size (1 to 65536)")
    expect(function() ec2.volume{ size = 8, type = "io1" } end):to_fail("ec2.volume: opts.iops: io1 volumes need iops")
    expect(ec2.volume{ size = 8, type = "io1", iops = 100 }.size):to_equal(8)
  end)

  it("names opts.snapshot when the snapshot does not exist", function()
    expect(function() ec2.volume{ snapshot = "snap-0123456789abcdef0" } end)
      :to_fail("ec2.volume: opts.snapshot: no snapshot snap-0123456789abcdef0 in account default, region us-east-1")
  end)
end)

describe("ec2.snapshot", function()
  it("snapshots a volume, waits until completed, and returns its description", function()
    local v = ec2.volume{ size = 5 }
    local s = ec2.snapshot{ volume = v, description = "estate spec", tags = { run = spec.unique("estate") } }
    expect(s.id):to_match("^snap%-%x+$")
    expect(s):to_equal({
      kind = "snapshot", id = s.id, volume_id = v.id, size = 5, state = "completed",
      region = "us-east-1", account = "default",
    })
    ec2.delete_snapshot{ snapshot = s }
  end)

  it("makes a new snapshot on every call", function()
    local v = ec2.volume{ size = 1 }
    local a = ec2.snapshot{ volume = v }
    local b = ec2.snapshot{ volume = v.id }
    expect(a.id ~= b.id):to_be(true)
    expect(b.volume_id):to_equal(v.id)
    ec2.delete_snapshot{ snapshot = a }
    ec2.delete_snapshot{ snapshot = b }
  end)

  it("finds an id-string volume in the account and region given", function()
    local v = ec2.volume{ size = 1, account = "other" }
    local s = ec2.snapshot{ volume = v.id, account = "other" }
    expect({ s.account, s.region, s.volume_id }):to_equal({ "other", "eu-west-1", v.id })
    local w = ec2.volume{ size = 1, region = "us-west-2" }
    local t = ec2.snapshot{ volume = w.id, region = "us-west-2" }
    expect({ t.account, t.region, t.volume_id }):to_equal({ "default", "us-west-2", w.id })
    ec2.delete_snapshot{ snapshot = s }
    ec2.delete_snapshot{ snapshot = t }
  end)

  it("refuses bad options, naming the field", function()
    local v = ec2.volume{ size = 1 }
    local s = ec2.snapshot{ volume = v }
    expect(function() ec2.snapshot() end)
      :to_fail("ec2.snapshot: expected an options table ec2.snapshot{…}, got nil")
    expect(function() ec2.snapshot{} end):to_fail("ec2.snapshot: opts.volume: required")
    expect(function() ec2.snapshot{ volume = s } end)
      :to_fail(string.format("ec2.snapshot: opts.volume: expected a volume, got a snapshot (%s)", s.id))
    expect(function() ec2.snapshot{ volume = "snap-1" } end)
      :to_fail('ec2.snapshot: opts.volume: expected a volume id ("vol-…"), got "snap-1"')
    expect(function() ec2.snapshot{ volume = "vol-0123456789abcdef0" } end)
      :to_fail("ec2.snapshot: opts.volume: no volume vol-0123456789abcdef0 in account default, region us-east-1")
    -- The volume exists, but in another account than the one asked.
    expect(function() ec2.snapshot{ volume = v.id, account = "other" } end)
      :to_fail(string.format("ec2.snapshot: opts.volume: no volume %s in account other, region eu-west-1", v.id))
    expect(function() ec2.snapshot{ volume = {} } end)
      :to_fail("ec2.snapshot: opts.volume: this table has no `id`; pass a table returned by a skiff primitive or an id string")
    expect(function() ec2.snapshot{ volume = v, name = "x" } end)
      :to_fail("ec2.snapshot: opts.name: unknown option; expected one of volume, description, tags, timeout, account, region")
    expect(function() ec2.snapshot{ volume = v, description = 1 } end)
      :to_fail("ec2.snapshot: opts.description: expected string, got number")
    expect(function() ec2.snapshot{ volume = v.id, account = "nobody" } end)
      :to_fail('ec2.snapshot: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.snapshot{ volume = v, timeout = "1" } end)
      :to_fail_matching("ec2%.snapshot: opts%.timeout: expected .*, got string$")
    ec2.delete_snapshot{ snapshot = s }
  end)
end)

describe("ec2.delete_snapshot", function()
  it("deletes a snapshot, and deleting it again is not an error", function()
    local s = ec2.snapshot{ volume = ec2.volume{ size = 1 } }
    expect(ec2.delete_snapshot{ snapshot = s }):to_be(true)
    -- Gone: a worker can no longer be placed by it.
    expect(function() deploy_worker{ purpose = "backup", resource = s.id } end)
      :to_fail(string.format("deploy_worker: opts.resource: no snapshot %s in account default, region us-east-1", s.id))
    expect(ec2.delete_snapshot{ snapshot = s }):to_be(true)
    expect(ec2.delete_snapshot{ snapshot = s.id }):to_be(true)
  end)

  it("deletes in the account and region given for an id string", function()
    local s = ec2.snapshot{ volume = ec2.volume{ size = 1, account = "other" } }
    expect(ec2.delete_snapshot{ snapshot = s.id, account = "other" }):to_be(true)
    expect(function() deploy_worker{ purpose = "backup", resource = s.id, account = "other" } end)
      :to_fail(string.format("deploy_worker: opts.resource: no snapshot %s in account other, region eu-west-1", s.id))
    expect(ec2.delete_snapshot{ snapshot = s, account = "other" }):to_be(true)
  end)

  it("refuses bad options, naming the field", function()
    local v = ec2.volume{ size = 1 }
    expect(function() ec2.delete_snapshot("snap-1") end)
      :to_fail("ec2.delete_snapshot: expected an options table ec2.delete_snapshot{…}, got string")
    expect(function() ec2.delete_snapshot{} end):to_fail("ec2.delete_snapshot: opts.snapshot: required")
    expect(function() ec2.delete_snapshot{ snapshot = v.id } end)
      :to_fail(string.format('ec2.delete_snapshot: opts.snapshot: expected a snapshot id ("snap-…"), got %q', v.id))
    expect(function() ec2.delete_snapshot{ snapshot = v } end)
      :to_fail(string.format("ec2.delete_snapshot: opts.snapshot: expected a snapshot, got a volume (%s)", v.id))
    expect(function() ec2.delete_snapshot{ snapshot = "snap-1", force = true } end)
      :to_fail("ec2.delete_snapshot: opts.force: unknown option; expected one of snapshot, account, region")
    expect(function() ec2.delete_snapshot{ snapshot = "snap-1", account = "nobody" } end)
      :to_fail('ec2.delete_snapshot: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.delete_snapshot{ snapshot = "snap-1", region = "mars-1" } end)
      :to_fail('ec2.delete_snapshot: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
  end)
end)

describe("ec2.instances", function()
  it("returns a list of instances, each described", function()
    local all = ec2.instances{}
    expect(type(all)):to_equal("table")
    for _, i in ipairs(all) do
      expect(i.kind):to_equal("instance")
      expect(i.id):to_match("^i%-%x+$")
      expect({ i.region, i.account }):to_equal({ "us-east-1", "default" })
    end
    -- ids = {} selects nothing out: it is every instance, like no ids.
    expect(ec2.instances{ ids = {} }):to_equal(all)
  end)

  it("selects by tags: nothing carries a tag nobody set", function()
    local key = spec.unique("estate")
    expect(ec2.instances{ tags = { [key] = "yes" } }):to_equal({})
    expect(ec2.instances{ tags = { [key] = "*" } }):to_equal({})
    expect(ec2.instances{ tags = { Name = spec.unique("nobody") } }):to_equal({})
  end)

  it("searches every account × region listed", function()
    local found = ec2.instances{ regions = { "us-east-1", "us-west-2" }, accounts = { "default", "other" } }
    for _, i in ipairs(found) do
      expect(i.account == "default" or i.account == "other"):to_be(true)
      expect(i.region == "us-east-1" or i.region == "us-west-2"):to_be(true)
    end
    for _, i in ipairs(ec2.instances{ accounts = { "other" } }) do
      expect({ i.account, i.region }):to_equal({ "other", "eu-west-1" })
    end
  end)

  it("never lists skiff's own workers, not even by id or by their tags", function()
    local w = deploy_worker{ purpose = "health", resource = "/srv/estate-spec/repo" }
    local ok, err = pcall(function()
      for _, i in ipairs(ec2.instances{}) do
        expect(i.id ~= w.instance_id):to_be(true)
      end
      expect(ec2.instances{ ids = { w.instance_id } }):to_equal({})
      expect(ec2.instances{ tags = { ["skiff:worker"] = w.id } }):to_equal({})
      expect(ec2.instances{ tags = { ["skiff:purpose"] = "*" } }):to_equal({})
    end)
    w:remove()
    if not ok then error(err, 0) end
  end)

  it("refuses bad options, naming the field", function()
    expect(function() ec2.instances() end)
      :to_fail("ec2.instances: expected an options table ec2.instances{…}, got nil")
    expect(function() ec2.instances{ tag = {} } end)
      :to_fail("ec2.instances: opts.tag: unknown option; expected one of tags, ids, regions, accounts, account, region")
    expect(function() ec2.instances{ tags = { team = 1 } } end)
      :to_fail("ec2.instances: opts.tags.team: expected string, got number")
    expect(function() ec2.instances{ ids = "i-1" } end)
      :to_fail("ec2.instances: opts.ids: expected list, got string")
    expect(function() ec2.instances{ regions = "us-east-1" } end)
      :to_fail("ec2.instances: opts.regions: expected list, got string")
    expect(function() ec2.instances{ regions = { a = "us-east-1" } } end)
      :to_fail("ec2.instances: opts.regions: expected a list { … }, got a table with named keys (wrap a single item in braces)")
    expect(function() ec2.instances{ regions = { "us-east-1", "mars-1" } } end)
      :to_fail('ec2.instances: opts.regions[2]: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() ec2.instances{ accounts = { "default", "nobody" } } end)
      :to_fail('ec2.instances: opts.accounts[2]: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.instances{ account = "nobody" } end)
      :to_fail('ec2.instances: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.instances{ region = "mars-1" } end)
      :to_fail('ec2.instances: opts.region: invalid region "mars-1": expected a name such as "us-east-1"')
  end)

  it("names the field at fault when lists and single values mix", function()
    expect(function() ec2.instances{ account = "nobody", regions = { "us-east-1" } } end)
      :to_fail('ec2.instances: opts.account: unknown account "nobody": ' .. ACCOUNTS)
    expect(function() ec2.instances{ account = "default", accounts = { "default" } } end)
      :to_fail("ec2.instances: opts.accounts: give account or accounts, not both")
    expect(function() ec2.instances{ region = "us-east-1", regions = { "us-east-1" } } end)
      :to_fail("ec2.instances: opts.regions: give region or regions, not both")
  end)

  it("answers ids that are not instances with a field error", function()
    expect(function() ec2.instances{ ids = { "nope" } } end)
      :to_fail('ec2.instances: opts.ids[1]: expected an instance id ("i-…"), got "nope"')
    expect(function() ec2.instances{ ids = { "i-0123456789abcdef0" } } end)
      :to_fail_matching("ec2%.instances: opts%.ids: .*i%-0123456789abcdef0.*%(in account default, region us%-east%-1%)")
  end)
end)

describe("ec2.volumes", function()
  it("lists volumes by id and by tags, attached or not, across regions", function()
    local key = spec.unique("vols")
    local a = ec2.volume{ size = 1, tags = { [key] = "a" } }
    local b = ec2.volume{ size = 2, region = "us-west-2", tags = { [key] = "b" } }
    local found = ec2.volumes{ ids = { a.id, b.id }, regions = { "us-east-1", "us-west-2" } }
    expect(#found):to_equal(2)
    expect(found[1].kind):to_equal("volume")
    local by_id = {}
    for _, v in ipairs(found) do by_id[v.id] = v end
    expect({ by_id[a.id].region, by_id[a.id].size, by_id[a.id].tags[key] }):to_equal({ "us-east-1", 1, "a" })
    expect({ by_id[b.id].region, by_id[b.id].size, by_id[b.id].tags[key] }):to_equal({ "us-west-2", 2, "b" })
    expect(by_id[a.id].instance):to_be_nil()
    -- An id that is in another region than the one searched is not an error.
    expect(#ec2.volumes{ ids = { b.id } }):to_equal(0)
    local tagged = ec2.volumes{ tags = { [key] = "*" }, regions = { "us-east-1", "us-west-2" } }
    expect(#tagged):to_equal(2)
    expect(#ec2.volumes{ tags = { [key] = "b" }, regions = { "us-east-1", "us-west-2" } }):to_equal(1)
  end)

  it("refuses bad options, naming the field", function()
    expect(function() ec2.volumes{ ids = { "i-123" } } end)
      :to_fail('ec2.volumes: opts.ids[1]: expected a volume id ("vol-…"), got "i-123"')
    expect(function() ec2.volumes{ regions = { "mars-1" } } end)
      :to_fail('ec2.volumes: opts.regions[1]: invalid region "mars-1": expected a name such as "us-east-1"')
    expect(function() ec2.volumes{ region = "us-east-1", regions = { "us-east-1" } } end)
      :to_fail("ec2.volumes: opts.regions: give region or regions, not both")
  end)
end)
