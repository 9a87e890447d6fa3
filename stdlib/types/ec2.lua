--- @meta
-- LuaLS annotations for `ec2`: VPCs, subnets and security groups
-- (src/api/ec2.rs). Every primitive finds what it would create before
-- creating it, so running a runbook twice creates nothing new.
-- The estate primitives at the end (`ec2.instances`, `ec2.snapshot`,
-- `ec2.delete_snapshot`, `ec2.volume`, from src/estate/mod.rs) select what is
-- protected and make the snapshots and volumes of backups and restores; a
-- snapshot or volume call creates a new one each time.
-- Misuse raises a string `file:line: ec2.…: opts.field: message`; an
-- operational failure raises a `skiff.error` (see globals.lua).

ec2 = {}

--- A resource argument: an id string, or any table with an `id` (normally
--- one a primitive returned, whose `kind`, `account` and `region` are then
--- honoured: a table of the wrong `kind` is refused, and the resource is
--- looked up in the table's own account and region).
--- @class skiff.Resource
--- @field id string
--- @field kind? string
--- @field account? string
--- @field region? string

--- `"vpc-…"`, or the table `ec2.vpc` returned.
--- @alias skiff.VpcRef string|skiff.Vpc|skiff.Resource

--- `"subnet-…"`, or the table `ec2.subnet` returned.
--- @alias skiff.SubnetRef string|skiff.Subnet|skiff.Resource

--- `"sg-…"`, or the table `ec2.security_group` returned.
--- @alias skiff.SecurityGroupRef string|skiff.SecurityGroup|skiff.Resource

--- @alias skiff.Proto "tcp"|"udp"|"icmp"|"all"

-- ─── ec2.vpc ────────────────────────────────────────────────────────────────

--- @class skiff.VpcOpts
---
--- The VPC's `Name` tag: the VPC is found by it, or created with it.
--- Must not be empty. Two VPCs of that name in the scope are a `conflict`.
--- @field name string
---
--- Primary IPv4 block, `/16` to `/28`, host bits clear (`"10.1.0.0/16"`).
--- A VPC of this name with another block is a `conflict`.
--- @field cidr string
---
--- Turn on DNS support and DNS hostnames, which interface endpoints with
--- private DNS need. Only ever turns them on, never off.
--- (default: `true`)
--- @field dns? boolean
---
--- Extra tags for a VPC this call creates (besides `Name` and `skiff:managed`).
--- (default: `{}`)
--- @field tags? table<string, string>
---
--- Account name from skiff.toml (`[accounts.NAME]`), or `"default"` for the
--- ambient credentials.
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region such as `"us-east-1"`.
--- (default: the account's `region` in skiff.toml, else the top-level
--- `region`, else the ambient region such as `AWS_REGION`)
--- @field region? string

--- @class skiff.Vpc
--- @field kind "vpc"
--- @field id string `vpc-…`
--- @field name? string Its `Name` tag.
--- @field cidr string The primary block.
--- @field cidrs string[] Every associated IPv4 block, primary first.
--- @field region string
--- @field account string Account name (`"default"` or a skiff.toml account).
--- @field account_id string The 12-digit AWS account id that owns the VPC.
--- @field default boolean Whether this is the region's default VPC.
--- @field created boolean Whether this call created it.

--- Finds the VPC tagged `Name = opts.name`, else creates it (tagged `Name`
--- and `skiff:managed`) and waits until it is available.
---
--- ```lua
--- local vpc = ec2.vpc{ name = "workers", cidr = "10.1.0.0/16" }
--- ```
--- @param opts skiff.VpcOpts
--- @return skiff.Vpc
function ec2.vpc(opts) end

-- ─── ec2.subnet ─────────────────────────────────────────────────────────────

--- @class skiff.SubnetOpts
---
--- The VPC to create the subnet in.
--- @field vpc skiff.VpcRef
---
--- The subnet's block, `/16` to `/28`, inside one of the VPC's blocks and
--- overlapping no other subnet of it. The subnet is found by VPC and block.
--- @field cidr string
---
--- Availability zone, e.g. `"us-east-1b"`; must be of the VPC's region. An
--- existing subnet in another zone is a `conflict`.
--- (default: the region's zone `a`, e.g. `"us-east-1a"`)
--- @field az? string
---
--- `Name` tag; set on an existing subnet that has another.
--- (default: none)
--- @field name? string
---
--- Extra tags for a subnet this call creates.
--- (default: `{}`)
--- @field tags? table<string, string>
---
--- Account in which an id-string `vpc` is looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which an id-string `vpc` is looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- @class skiff.Subnet
--- @field kind "subnet"
--- @field id string `subnet-…`
--- @field name? string Its `Name` tag.
--- @field cidr string
--- @field az string Availability zone.
--- @field vpc_id string
--- @field region string
--- @field account string
--- @field created boolean Whether this call created it.

--- Finds the subnet with `opts.cidr` in `opts.vpc`, else creates it and
--- waits until it is available.
---
--- ```lua
--- local a = ec2.subnet{ vpc = vpc, cidr = "10.1.1.0/24", az = "us-east-1a" }
--- ```
--- @param opts skiff.SubnetOpts
--- @return skiff.Subnet
function ec2.subnet(opts) end

-- ─── ec2.security_group ─────────────────────────────────────────────────────

--- One inbound rule, as written in `ingress`.
--- @class skiff.RuleOpts
---
--- Protocol: `"tcp"`, `"udp"`, `"icmp"` or `"all"` (case-insensitive; the
--- numbers `"6"`, `"17"`, `"1"`, `"-1"` also work).
--- (default: `"tcp"`)
--- @field proto? skiff.Proto|string
---
--- A port (`443`, `"443"`) or an inclusive range (`"1024-65535"`); for icmp,
--- a type (-1 to 255). Ignored for `"all"`.
--- (default: every port, `0-65535`; for icmp every type, `-1`)
--- @field port? integer|string
---
--- Source block, e.g. `vpc.cidr` or `"192.168.1.7/32"`.
--- @field cidr string

--- One inbound rule, as returned.
--- @class skiff.Rule
--- @field proto skiff.Proto
--- @field port? string `"443"`, `"1024-65535"`, `"-1"` (every icmp type); nil for `"all"`.
--- @field cidr string

--- @class skiff.SecurityGroupOpts
---
--- The VPC the group belongs to.
--- @field vpc skiff.VpcRef
---
--- Group name, unique in its VPC: the group is found by VPC and name.
--- 1 to 255 characters, not starting with `"sg-"`.
--- @field name string
---
--- Description of a group this call creates (AWS cannot change it later).
--- (default: `"skiff: <name>"`)
--- @field description? string
---
--- Inbound rules the group must have. Missing ones are added; rules already
--- there are kept, even those not listed.
--- (default: `{}`)
--- @field ingress? skiff.RuleOpts[]
---
--- Extra tags for a group this call creates (besides `Name` and `skiff:managed`).
--- (default: `{}`)
--- @field tags? table<string, string>
---
--- Account in which an id-string `vpc` is looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which an id-string `vpc` is looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- @class skiff.SecurityGroup
--- @field kind "security_group"
--- @field id string `sg-…`
--- @field name string
--- @field vpc_id string
--- @field region string
--- @field account string
--- @field ingress skiff.Rule[] Every CIDR-sourced inbound rule, sorted by protocol (tcp, udp, icmp, all), ports, source.
--- @field egress skiff.Rule[] Every CIDR-addressed outbound rule (`cidr` is the destination), sorted the same way.
--- @field added skiff.Rule[] The rules this call added (empty when nothing was missing).
--- @field created boolean Whether this call created the group.

--- Finds the group `opts.name` in `opts.vpc`, else creates it; then adds
--- each rule of `opts.ingress` it lacks.
---
--- ```lua
--- local sg = ec2.security_group{ vpc = vpc, name = "endpoints", ingress = {
---   { proto = "tcp", port = 443, cidr = vpc.cidr },
--- } }
--- ```
--- @param opts skiff.SecurityGroupOpts
--- @return skiff.SecurityGroup
function ec2.security_group(opts) end

-- ─── estate: ec2.instances ──────────────────────────────────────────────────

--- `"vol-…"`, or the table `ec2.volume` returned.
--- @alias skiff.VolumeRef string|skiff.Volume|skiff.Resource

--- `"snap-…"`, or the table `ec2.snapshot` returned.
--- @alias skiff.SnapshotRef string|skiff.Snapshot|skiff.Resource

--- @class skiff.InstancesOpts
---
--- Tags every instance must have; the value `"*"` matches any value.
--- (default: `{}`, every instance)
--- @field tags? table<string, string>
---
--- Instance ids to choose from (`"i-…"`); an id that does not exist in a
--- region searched is refused as `opts.ids` (naming the region).
--- (default: `{}`, every instance)
--- @field ids? string[]
---
--- Regions to search, each in every account searched. Replaces `region`.
--- (default: `{ region }`)
--- @field regions? string[]
---
--- Accounts to search (skiff.toml names or `"default"`). Replaces `account`.
--- (default: `{ account }`)
--- @field accounts? string[]
---
--- The one account to search when `accounts` is not given.
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- The one region to search when `regions` is not given.
--- (default: each account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- A volume attached to an instance.
--- @class skiff.InstanceVolume
--- @field id string `vol-…`
--- @field device string Device name, e.g. `"/dev/xvda"`.
--- @field size integer GiB.

--- @class skiff.Instance
--- @field kind "instance"
--- @field id string `i-…`
--- @field name? string Its `Name` tag.
--- @field state string `"pending"`, `"running"`, `"stopping"` or `"stopped"`.
--- @field az string Availability zone.
--- @field instance_type string
--- @field tags table<string, string> Every tag.
--- @field volumes skiff.InstanceVolume[] Attached EBS volumes.
--- @field size integer Total GiB of `volumes`.
--- @field region string
--- @field account string

--- The instances (not terminated) in every account × region searched that
--- have all of `opts.tags` and, if given, one of `opts.ids`: accounts in the
--- order listed, then regions, then instance ids. skiff's own workers (tagged
--- `skiff:worker`) are never listed.
---
--- ```lua
--- for _, i in ipairs(ec2.instances{ tags = { backup = "daily" }, regions = { "us-east-1", "eu-west-1" } }) do
---   print(i.id, i.region, i.size)
--- end
--- ```
--- @param opts skiff.InstancesOpts
--- @return skiff.Instance[]
function ec2.instances(opts) end

-- ─── estate: ec2.volumes ───────────────────────────────────────────────────

--- Options of `ec2.volumes`: those of `ec2.instances`, with volume ids.
--- @class skiff.VolumesOpts
--- Tags every volume must have; `"*"` matches any value. (default: `{}`)
--- @field tags? table<string, string>
--- Volume ids to choose from (`"vol-…"`); an id found in none of the
--- regions searched is simply not listed. (default: `{}`, every volume)
--- @field ids? string[]
--- @field regions? string[]
--- @field accounts? string[]
--- @field account? string
--- @field region? string

--- @class skiff.FoundVolume
--- @field kind "volume"
--- @field id string `vol-…`
--- @field size integer GiB.
--- @field az string
--- @field snapshot_id? string The snapshot it was created from.
--- @field state string `"available"`, `"in-use"`, …
--- @field tags table<string, string>
--- @field instance? string The instance it is attached to.
--- @field device? string Its device name on that instance.
--- @field region string
--- @field account string

--- The EBS volumes in every account × region searched that have all of
--- `opts.tags` and, if given, one of `opts.ids`, attached or not; by region,
--- then volume id.
---
--- ```lua
--- for _, v in ipairs(ec2.volumes{ ids = { "vol-0abc" }, regions = { "us-east-1", "eu-west-1" } }) do
---   print(v.id, v.region, v.instance or "not attached")
--- end
--- ```
--- @param opts skiff.VolumesOpts
--- @return skiff.FoundVolume[]
function ec2.volumes(opts) end

-- ─── estate: ec2.snapshot ───────────────────────────────────────────────────

--- @class skiff.SnapshotOpts
---
--- The volume to snapshot.
--- @field volume skiff.VolumeRef
---
--- The snapshot's description.
--- (default: `"skiff snapshot of <volume id>"`)
--- @field description? string
---
--- Tags of the snapshot, besides `skiff:managed = "true"` (which these may override).
--- (default: `{}`)
--- @field tags? table<string, string>
---
--- Seconds to wait for the snapshot to complete before raising a `"timeout"` error.
--- (default: `3600`)
--- @field timeout? integer
---
--- Account in which an id-string `volume` is looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which an id-string `volume` is looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- @class skiff.Snapshot
--- @field kind "snapshot"
--- @field id string `snap-…`
--- @field volume_id string The volume it was taken of.
--- @field size integer GiB (the volume's size).
--- @field state string `"completed"` once returned.
--- @field region string
--- @field account string

--- Snapshots a volume and waits until the snapshot is completed. Each call
--- makes a new snapshot.
---
--- ```lua
--- local s = ec2.snapshot{ volume = i.volumes[1].id, region = i.region, account = i.account }
--- ```
--- @param opts skiff.SnapshotOpts
--- @return skiff.Snapshot
function ec2.snapshot(opts) end

-- ─── estate: ec2.delete_snapshot ────────────────────────────────────────────

--- @class skiff.DeleteSnapshotOpts
---
--- The snapshot to delete.
--- @field snapshot skiff.SnapshotRef
---
--- Account in which an id-string `snapshot` is looked up (a table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region in which an id-string `snapshot` is looked up (a table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- Deletes a snapshot. A snapshot that is already gone is not an error.
---
--- ```lua
--- ec2.delete_snapshot{ snapshot = s }
--- ```
--- @param opts skiff.DeleteSnapshotOpts
--- @return true
function ec2.delete_snapshot(opts) end

-- ─── estate: ec2.volume ─────────────────────────────────────────────────────

--- @alias skiff.VolumeType "gp3"|"gp2"|"io1"|"io2"|"st1"|"sc1"|"standard"

--- @class skiff.VolumeOpts
---
--- The snapshot to create the volume from. Either this or `size` is required.
--- (default: none, an empty volume)
--- @field snapshot? skiff.SnapshotRef
---
--- Size in GiB, 1 to 65536; with a `snapshot`, at least the snapshot's size.
--- (default: the snapshot's size)
--- @field size? integer
---
--- Availability zone, of the volume's region.
--- (default: the region's zone `a`, e.g. `"us-east-1a"`)
--- @field az? string
---
--- EBS volume type. (skiff passes no IOPS, so `"io1"` and `"io2"` are refused by AWS.)
--- (default: `"gp3"`)
--- @field type? skiff.VolumeType|string
---
--- Tags of the volume, besides `skiff:managed = "true"` (which these may override).
--- (default: `{}`)
--- Provisioned IOPS; required for io1 and io2, optional for gp3.
--- @field iops? integer
---
--- @field tags? table<string, string>
---
--- Seconds to wait for the volume to become available before raising a `"timeout"` error.
--- (default: `1800`)
--- @field timeout? integer
---
--- Account of the volume and of an id-string `snapshot` (a snapshot table carries its own).
--- (default: `default_account` in skiff.toml, else `"default"`)
--- @field account? string
---
--- Region of the volume and of an id-string `snapshot` (a snapshot table carries its own).
--- (default: the account's region, else skiff.toml's `region`, else the ambient region)
--- @field region? string

--- @class skiff.Volume
--- @field kind "volume"
--- @field id string `vol-…`
--- @field size integer GiB.
--- @field az string Availability zone.
--- @field snapshot_id? string The snapshot it was created from; nil for an empty volume.
--- @field state string `"available"` once returned.
--- @field region string
--- @field account string

--- Creates a volume, from a snapshot or empty, and waits until it is
--- available. Each call makes a new volume; a snapshot's volume is in the
--- snapshot's account and region.
---
--- ```lua
--- local v = ec2.volume{ snapshot = s, az = "eu-west-1b" }
--- ```
--- @param opts skiff.VolumeOpts
--- @return skiff.Volume
function ec2.volume(opts) end
