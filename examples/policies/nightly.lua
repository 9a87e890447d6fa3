-- A policy file for `skiff serve examples/policies`: nightly backups of every
-- instance tagged backup=daily in two regions, kept by grandfather-father-son
-- rules, with the first point of each month also copied to a DEEP_ARCHIVE
-- repository in another region.
--
-- No `run` function: each run is skiff's default (stdlib/skiff/policy_run.lua,
-- docs/serve.md): a backup worker per instance next to it, then an archive
-- worker copying the month's first point, then a retention worker forgetting
-- and pruning. Workers read the repositories' passwords from SSM Parameter
-- Store (SecureString) through their instance role.

repository{
  name = "main",
  location = "s3://acme-backups/skiff",
  region = "us-east-1",
  password = { ssm = "/skiff/repository-password" },
}

repository{
  name = "cold",
  location = "s3://acme-archive/skiff",
  region = "us-west-2",
  password = { ssm = "/skiff/archive-password", region = "us-east-1" },
}

policy{
  name = "nightly",
  schedule = { daily = "02:00" },
  select = { tags = { backup = "daily" }, regions = { "us-east-1", "eu-west-1" } },
  repository = "main",
  retention = { keep_daily = 7, keep_weekly = 4, keep_monthly = 12, keep_yearly = 3 },
  archive = { repository = "cold", storage_class = "DEEP_ARCHIVE", points = "monthly" },
}
