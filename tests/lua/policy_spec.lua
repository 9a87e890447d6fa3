-- policy{} and repository{}: what `skiff serve` schedules. Everything is
-- checked when declared and refused at the line that wrote it; nothing here
-- touches AWS. (The runner's skiff.toml declares the account `other`.)

local function base(overrides)
  local p = {
    name = spec.unique("p"),
    schedule = "0 2 * * *",
    select = { tags = { app = "db" } },
    repository = "s3://skiff-backups/main",
    retention = { keep_daily = 7 },
  }
  for k, v in pairs(overrides or {}) do p[k] = v end
  return p
end

local function without(t, key)
  t[key] = nil
  return t
end

describe("repository{}", function()
  it("declares a repository by name and returns it", function()
    local name = spec.unique("r")
    local r = repository{ name = name, location = "s3://skiff-backups/x", region = "eu-west-1",
      account = "other", password = { ssm = "/skiff/repo", region = "eu-west-1" } }
    expect(r):to_equal({ kind = "repository", name = name, location = "s3://skiff-backups/x",
      region = "eu-west-1", account = "other", password = { ssm = "/skiff/repo", region = "eu-west-1" } })
    local local_repo = repository{ name = spec.unique("r"), location = "/srv/skiff", password = { env = "REPO_PW" } }
    expect(local_repo.password):to_equal({ env = "REPO_PW" })
    expect(repository{ name = spec.unique("r"), location = "./repo", password = { file = "/etc/skiff/pw" } }.password)
      :to_equal({ file = "/etc/skiff/pw" })
  end)

  it("refuses unknown options, bad locations and names, and the password itself", function()
    expect(function() repository{ name = spec.unique("r"), location = "/x", bucket = "b" } end)
      :to_fail("repository: opts.bucket: unknown option; expected one of name, location, region, account, password, s3_endpoint")
    expect(function() repository{ location = "/x" } end):to_fail("repository: opts.name: required")
    expect(function() repository{ name = spec.unique("r"), location = "/x", s3_endpoint = "https://bucket.vpce-12345678.s3.eu-west-1.vpce.amazonaws.com" } end)
      :to_fail("repository: opts.s3_endpoint: /x is not in S3; an S3 endpoint is for s3:// repositories")
    expect(function() repository{ name = spec.unique("r"), location = "s3://b-1/x", s3_endpoint = "https://u:pw@vpce.example" } end)
      :to_fail('repository: opts.s3_endpoint: "https://u:pw@vpce.example": an endpoint address carries no credentials')
    local via = repository{ name = spec.unique("r"), location = "s3://b-1/x",
      s3_endpoint = "https://bucket.vpce-0a1b2c3d-x.s3.eu-west-1.vpce.amazonaws.com" }
    expect(via.s3_endpoint):to_equal({ url = "https://bucket.vpce-0a1b2c3d-x.s3.eu-west-1.vpce.amazonaws.com",
      endpoint = "vpce-0a1b2c3d", region = "eu-west-1" })
    expect(function() repository{ name = "a b", location = "/x" } end)
      :to_fail([[repository: opts.name: expected a name of letters, digits, '_', '-' or '.' (starting with a letter or digit, at most 64), got "a b"]])
    expect(function() repository{ name = spec.unique("r"), location = "main" } end)
      :to_fail([[repository: opts.location: expected a location (/path, ./path or s3://BUCKET/PREFIX), got "main"]])
    expect(function() repository{ name = spec.unique("r"), location = "s3://Bad_Bucket/x" } end)
      :to_fail([[repository: opts.location: invalid S3 bucket name "Bad_Bucket" in "s3://Bad_Bucket/x": expected s3://BUCKET/PREFIX with a bucket of 3-63 lowercase letters, digits, '-' or '.']])
    expect(function() repository{ name = spec.unique("r"), location = "/x", password = "hunter2" } end)
      :to_fail([[repository: opts.password: expected where to read the password ({env = "VAR"}, {file = "…"} or {ssm = "/name"}), not the password itself]])
    expect(function() repository{ name = spec.unique("r"), location = "/x", password = { env = "A", file = "/b" } } end)
      :to_fail("repository: opts.password: give only one of env, file or ssm")
    expect(function() repository{ name = spec.unique("r"), location = "/x", password = { env = "A", region = "eu-west-1" } } end)
      :to_fail("repository: opts.password: account and region apply to an ssm password only")
    expect(function() repository{ name = spec.unique("r"), location = "/x", account = "nope" } end)
      :to_fail([[repository: opts.account: unknown account "nope" (skiff.toml declares "other")]])
    expect(function() repository{ name = spec.unique("r"), location = "/x", region = "mars-1" } end)
      :to_fail_matching("repository: opts.region: .*mars%-1")
  end)

  it("refuses a second repository of the same name, naming the first", function()
    local name = spec.unique("r")
    repository{ name = name, location = "/a" }
    local msg, where = spec.error_of(function() repository{ name = name, location = "/b" } end)
    expect(msg):to_match('^repository: opts%.name: a repository named "' .. name:gsub("%-", "%%-") .. '" is already declared at .*policy_spec%.lua:%d+$')
    expect(where):to_match("policy_spec%.lua:%d+$")
  end)
end)

describe("policy{}", function()
  it("returns the policy with its schedule as cron expressions, defaults filled in", function()
    local run = function(ctx) return { points = 1 } end
    local p = policy(base{ run = run, worker = { account = "other", private = true, profile = "c5.xlarge" } })
    expect(p.kind):to_equal("policy")
    expect(p.schedule):to_equal("0 2 * * *")
    expect(p.crons):to_equal({ "0 0 2 * * *" })
    expect(p.select):to_equal({ tags = { app = "db" }, ids = {}, regions = {}, accounts = {} })
    expect(p.repository):to_equal({ kind = "repository", location = "s3://skiff-backups/main" })
    expect(p.retention):to_equal({ keep_last = 0, keep_daily = 7, keep_weekly = 0, keep_monthly = 0, keep_yearly = 0 })
    expect(p.archive):to_be_nil()
    expect(p.worker):to_equal({ account = "other", private = true, profile = "c5.xlarge" })
    expect(p.enabled):to_be(true)
    expect(p.run):to_be(run)
    expect(p.declared_at):to_match("policy_spec%.lua:%d+$")
  end)

  it("reads cron with seconds, shortcuts, and tables of daily, weekly, monthly and yearly runs", function()
    expect(policy(base{ schedule = "*/10 * * * * *" }).crons):to_equal({ "*/10 * * * * *" })
    expect(policy(base{ schedule = "@hourly" }).crons):to_equal({ "0 0 * * * *" })
    expect(policy(base{ schedule = "@daily" }).crons):to_equal({ "0 0 0 * * *" })
    expect(policy(base{ schedule = "@weekly" }).crons):to_equal({ "0 0 0 * * 0" })
    expect(policy(base{ schedule = "@monthly" }).crons):to_equal({ "0 0 0 1 * *" })
    expect(policy(base{ schedule = "@yearly" }).crons):to_equal({ "0 0 0 1 1 *" })
    local t = policy(base{ schedule = {
      daily = "02:00",
      weekly = { day = "sun", at = "03:00" },
      monthly = { day = 1, at = "04:00:30" },
      yearly = { month = "dec", day = 31, at = "23:59" },
    } })
    expect(t.crons):to_equal({ "0 0 2 * * *", "0 0 3 * * 0", "30 0 4 1 * *", "0 59 23 31 12 *" })
    expect(t.schedule.daily):to_equal("02:00")
    local several = policy(base{ schedule = {
      daily = { "01:00", "13:00" },
      weekly = { { day = { "mon", "thursday" }, at = "05:00" }, { day = 6, at = "06:00" } },
      monthly = { day = "last", at = "07:00" },
    } })
    expect(several.crons):to_equal({ "0 0 1 * * *", "0 0 13 * * *", "0 0 5 * * 1,4", "0 0 6 * * 6", "0 0 7 L * *" })
  end)

  it("refuses a bad cron expression, naming it", function()
    expect(function() policy(base{ schedule = "0 2 * *" }) end)
      :to_fail([[policy: opts.schedule: invalid cron expression "0 2 * *": 4 fields; expected 5 fields (minute hour day month weekday), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly]])
    expect(function() policy(base{ schedule = "0 0 0 * * * 2026" }) end):to_fail_matching("policy: opts%.schedule: invalid cron expression \"0 0 0 %* %* %* 2026\": 7 fields")
    expect(function() policy(base{ schedule = "99 2 * * *" }) end)
      :to_fail_matching('^[^:]+:%d+: policy: opts%.schedule: invalid cron expression "99 2 %* %* %*": ')
    expect(function() policy(base{ schedule = "@fortnightly" }) end)
      :to_fail([[policy: opts.schedule: unknown shortcut "@fortnightly"; expected @hourly, @daily, @weekly, @monthly or @yearly]])
    expect(function() policy(base{ schedule = "0 0 30 2 *" }) end)
      :to_fail([[policy: opts.schedule: cron expression "0 0 30 2 *" never fires]])
    expect(function() policy(base{ schedule = 5 }) end)
      :to_fail("policy: opts.schedule: expected cron expression or a table {daily = …, weekly = …, monthly = …, yearly = …}, got number")
  end)

  it("refuses bad schedule tables at the field that is wrong", function()
    expect(function() policy(base{ schedule = { daily = "25:00" } }) end)
      :to_fail([[policy: opts.schedule.daily: expected a time of day "HH:MM" or "HH:MM:SS" (UTC), got "25:00"]])
    expect(function() policy(base{ schedule = { daily = { "01:00", "1:2:3:4" } } }) end)
      :to_fail([[policy: opts.schedule.daily[2]: expected a time of day "HH:MM" or "HH:MM:SS" (UTC), got "1:2:3:4"]])
    expect(function() policy(base{ schedule = { weekly = { day = "sun" } } }) end)
      :to_fail("policy: opts.schedule.weekly.at: required")
    expect(function() policy(base{ schedule = { weekly = { day = "someday", at = "01:00" } } }) end)
      :to_fail([[policy: opts.schedule.weekly.day: expected a day of the week ("sun" … "sat", or 0 = sunday … 6), got "someday"]])
    expect(function() policy(base{ schedule = { monthly = { day = 32, at = "01:00" } } }) end)
      :to_fail([[policy: opts.schedule.monthly.day: expected a day of the month (1 … 31, or "last"), got 32]])
    expect(function() policy(base{ schedule = { yearly = { month = "feb", day = 30, at = "01:00" } } }) end)
      :to_fail("policy: opts.schedule.yearly.day: february has no day 30")
    expect(function() policy(base{ schedule = { yearly = { month = 13, day = 1, at = "01:00" } } }) end)
      :to_fail([[policy: opts.schedule.yearly.month: expected a month (1 … 12 or "jan" … "dec"), got 13]])
    expect(function() policy(base{ schedule = { hourly = "05" } }) end)
      :to_fail("policy: opts.schedule.hourly: unknown option; expected one of daily, weekly, monthly, yearly")
    expect(function() policy(base{ schedule = { weekly = { day = "sun", at = "01:00", every = 2 } } }) end)
      :to_fail("policy: opts.schedule.weekly.every: unknown option; expected one of day or at")
    expect(function() policy(base{ schedule = {} }) end)
      :to_fail("policy: opts.schedule: an empty schedule table; give daily, weekly, monthly or yearly runs")
  end)

  it("refuses unknown options and missing required ones", function()
    expect(function() policy(base{ schedul = "@daily" }) end)
      :to_fail("policy: opts.schedul: unknown option; expected one of name, schedule, select, repository, retention, archive, worker, enabled, run")
    expect(function() policy(without(base(), "schedule")) end):to_fail("policy: opts.schedule: required")
    expect(function() policy(without(base(), "retention")) end):to_fail("policy: opts.retention: required")
    expect(function() policy(base{ name = "nightly db" }) end)
      :to_fail_matching([[^[^:]+:%d+: policy: opts%.name: expected a name of letters]])
    expect(function() policy(base{ enabled = "yes" }) end):to_fail("policy: opts.enabled: expected boolean, got string")
    expect(function() policy(base{ run = "backup" }) end):to_fail("policy: opts.run: expected function, got string")
    expect(function() policy("nightly") end):to_fail("policy: expected an options table policy{…}, got string")
  end)

  it("checks select: something to select, ids, regions and accounts", function()
    expect(function() policy(base{ select = {} }) end)
      :to_fail("policy: opts.select: selects nothing; give tags = {…} and/or ids = {…}")
    expect(function() policy(base{ select = { tag = { app = "db" } } }) end)
      :to_fail("policy: opts.select.tag: unknown option; expected one of tags, ids, regions, accounts")
    expect(function() policy(base{ select = { ids = { "i-0abc", "snap-1" } } }) end)
      :to_fail([[policy: opts.select.ids[2]: expected an instance (i-…) or volume (vol-…) id, got "snap-1"]])
    expect(function() policy(base{ select = { ids = "i-0abc" } }) end)
      :to_fail("policy: opts.select.ids: expected list, got string")
    expect(function() policy(base{ select = { tags = { app = "db" }, accounts = { "other", "prod" } } }) end)
      :to_fail([[policy: opts.select.accounts[2]: unknown account "prod" (skiff.toml declares "other")]])
    expect(function() policy(base{ select = { tags = { app = "db" }, regions = { "eu-west-1", "Europe" } } }) end)
      :to_fail_matching([[policy: opts%.select%.regions%[2%]: .*Europe]])
    local p = policy(base{ select = { ids = { "i-0abc", "vol-0def" }, regions = { "eu-west-1" }, accounts = { "default", "other" } } })
    expect(p.select.ids):to_equal({ "i-0abc", "vol-0def" })
    expect(p.select.accounts):to_equal({ "default", "other" })
  end)

  it("resolves repository names declared before, and refuses unknown ones", function()
    local rname = spec.unique("r")
    local r = repository{ name = rname, location = "s3://skiff-backups/" .. rname, region = "eu-west-1" }
    expect(policy(base{ repository = rname }).repository):to_equal(r)
    expect(policy(base{ repository = r }).repository):to_equal(r)
    expect(function() policy(base{ repository = "nowhere" }) end)
      :to_fail_matching('policy: opts%.repository: unknown repository "nowhere" %(declared: .*%); declare it first with repository{name = "nowhere", location = …} or give a location %(/path or s3://bucket/prefix%)$')
    expect(function() policy(base{ repository = "gs://b/p" }) end)
      :to_fail([[policy: opts.repository: unsupported repository location "gs://b/p": expected a directory (/path, ./path) or s3://BUCKET/PREFIX]])
    expect(function() policy(base{ repository = { kind = "vpc", id = "vpc-1" } }) end)
      :to_fail("policy: opts.repository: expected a repository, got a vpc")
    local inline = policy(base{ repository = { location = "/srv/r", region = "eu-west-1" } })
    expect(inline.repository):to_equal({ kind = "repository", location = "/srv/r", region = "eu-west-1" })
  end)

  it("checks retention: integers ≥ 0, at least one rule", function()
    expect(function() policy(base{ retention = { keep_daily = -1 } }) end)
      :to_fail("policy: opts.retention.keep_daily: expected an integer ≥ 0, got -1")
    expect(function() policy(base{ retention = { keep_weekly = 1.5 } }) end)
      :to_fail("policy: opts.retention.keep_weekly: expected an integer ≥ 0, got 1.5")
    expect(function() policy(base{ retention = { keep_hourly = 24 } }) end)
      :to_fail("policy: opts.retention.keep_hourly: unknown option; expected one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly")
    expect(function() policy(base{ retention = { keep_last = 0 } }) end)
      :to_fail("policy: opts.retention: keeps nothing; set at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly")
    local p = policy(base{ retention = { keep_last = 2, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 } })
    expect(p.retention):to_equal({ keep_last = 2, keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 })
  end)

  it("checks archive: another repository, a storage class, which points", function()
    local cold = repository{ name = spec.unique("cold"), location = "s3://skiff-archive/x" }
    local p = policy(base{ archive = { repository = cold.name, storage_class = "DEEP_ARCHIVE", points = "yearly" } })
    expect(p.archive):to_equal({ repository = cold, storage_class = "DEEP_ARCHIVE", points = "yearly" })
    expect(policy(base{ archive = { repository = cold, storage_class = "GLACIER" } }).archive.points):to_equal("monthly")
    expect(function() policy(base{ archive = { repository = cold, storage_class = "COLD" } }) end)
      :to_fail([[policy: opts.archive.storage_class: expected one of STANDARD, STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING, GLACIER_IR, GLACIER, DEEP_ARCHIVE, got "COLD"]])
    expect(function() policy(base{ archive = { repository = cold, storage_class = "GLACIER", points = "daily" } }) end)
      :to_fail([[policy: opts.archive.points: expected "weekly", "monthly", "yearly" or "all", got "daily"]])
    expect(function() policy(base{ archive = { repository = "s3://skiff-backups/main", storage_class = "GLACIER" } }) end)
      :to_fail("policy: opts.archive.repository: the archive repository must differ from the policy's repository (s3://skiff-backups/main)")
    expect(function() policy(base{ archive = { storage_class = "GLACIER" } }) end)
      :to_fail("policy: opts.archive.repository: required")
    expect(function() policy(base{ archive = { repository = "glacier" , storage_class = "GLACIER" } }) end)
      :to_fail_matching('policy: opts%.archive%.repository: unknown repository "glacier"')
  end)

  it("checks worker: known account, real instance type", function()
    expect(function() policy(base{ worker = { account = "prod" } }) end)
      :to_fail([[policy: opts.worker.account: unknown account "prod" (skiff.toml declares "other")]])
    expect(function() policy(base{ worker = { profile = "c5.huge" } }) end)
      :to_fail([[policy: opts.worker.profile: unknown instance type "c5.huge"]])
    expect(function() policy(base{ worker = { region = "eu-west-1" } }) end)
      :to_fail("policy: opts.worker.region: unknown option; expected one of account, private, profile")
  end)

  it("refuses a second policy of the same name, naming the first", function()
    local p = policy(base())
    local msg = spec.error_of(function() policy(base{ name = p.name }) end)
    expect(msg):to_equal(string.format("policy: opts.name: a policy named %q is already declared at %s", p.name, p.declared_at))
  end)

  it("raises at the line of the policy{} call", function()
    local _, where = spec.error_of(function() policy(base{ schedule = "nope" }) end)
    expect(where):to_match("policy_spec%.lua:%d+$")
    local line = tonumber(where:match(":(%d+)$"))
    local _, here = spec.error_of(function() error("marker") end)
    expect(tonumber(here:match(":(%d+)$"))):to_equal(line + 3)
  end)

  it("may be disabled", function()
    expect(policy(base{ enabled = false }).enabled):to_be(false)
  end)
end)
