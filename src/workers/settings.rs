//! Worker settings: per-region network configuration, instance types by
//! purpose, and tags — declared in `skiff.toml` under `[workers]` and, at run
//! time, by scripts (`workers.configuration{}`, `workers.profile{}`,
//! `workers.tags{}`), which override the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Purpose;

/// How worker instances get their agent running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// On AWS: the instance's user data installs and starts `skiff agent`.
    #[default]
    Ec2,
    /// Against an emulator, whose instances run nothing: skiff starts
    /// `skiff agent` as a local process bound to the emulated instance.
    Local,
}

/// Network placement of workers in one region.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Image for workers in this region (default: the latest Amazon Linux 2023
    /// from the public SSM parameter).
    pub ami: Option<String>,
    /// Instance type by purpose (`backup = "c5.xlarge"`), or `default` for all.
    #[serde(default)]
    pub profiles: BTreeMap<String, String>,
}

fn default_max_per_region() -> usize {
    8
}
fn default_expires_after() -> u64 {
    6 * 3600
}
fn default_visibility_timeout() -> u32 {
    60
}
fn default_liveness_timeout() -> u64 {
    600
}
fn default_ami_parameter() -> String {
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64".into()
}

/// `[workers]` in skiff.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    /// The backup account, where workers run unless a job may and does ask for
    /// the production account (default: the config's default account).
    pub account: Option<String>,
    #[serde(default)]
    pub launcher: Launcher,
    /// Launch every worker without a public address, after the private-network preflight.
    #[serde(default)]
    pub private: bool,
    /// Instance profile (IAM role) workers run with; checked to exist before a launch.
    pub instance_profile: Option<String>,
    /// Live workers of one job (one pool) in one region at once (default 8);
    /// each job counts its own.
    #[serde(default = "default_max_per_region")]
    pub max_per_region: usize,
    /// Seconds after which the reaper removes a worker whatever its job (default 6 h).
    #[serde(default = "default_expires_after")]
    pub expires_after: u64,
    /// Seconds a task stays invisible while its agent works on it (default 60);
    /// the agent extends it while alive, so a dead agent's task reappears.
    #[serde(default = "default_visibility_timeout")]
    pub visibility_timeout: u32,
    /// Seconds without any word from a worker before its job fails (default 600).
    #[serde(default = "default_liveness_timeout")]
    pub liveness_timeout: u64,
    /// SSM parameter naming the default worker image.
    #[serde(default = "default_ami_parameter")]
    pub ami_parameter: String,
    /// Where `skiff agent` comes from in user data (default: the GitHub release of this version).
    pub agent_url: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionConfig>,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// The settings in force: the file's, overridden by what scripts declared.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub file: WorkersConfig,
    /// Per region: the backup account's network, the image, the profiles.
    pub regions: BTreeMap<String, RegionConfig>,
    /// Networks declared for another account (`workers.configuration{account = …}`).
    pub account_networks: BTreeMap<(String, String), RegionConfig>,
    pub tags: BTreeMap<String, String>,
}

/// Whether EC2 knows `t` as an instance type.
pub fn is_instance_type(t: &str) -> bool {
    aws_sdk_ec2::types::InstanceType::values().contains(&t)
}

/// Instance type by the total size of the source volumes (GiB), as
/// docs/workers.md describes under Settings.
pub fn instance_type_for_size(gib: u64) -> &'static str {
    if gib < 1024 {
        "c5.large"
    } else if gib <= 16 * 1024 {
        "c5.2xlarge"
    } else {
        "c5.4xlarge"
    }
}

impl WorkerSettings {
    pub fn new(file: WorkersConfig) -> WorkerSettings {
        WorkerSettings {
            regions: file.regions.clone(),
            account_networks: BTreeMap::new(),
            tags: file.tags.clone(),
            file,
        }
    }

    pub fn region(&self, region: &str) -> RegionConfig {
        self.regions.get(region).cloned().unwrap_or_default()
    }

    /// The configuration for workers of `account` in `region`: the region's
    /// image and profiles, and the network declared for that account — for
    /// the backup account, the region's; for another account, only one
    /// declared for it (else the default VPC).
    pub fn for_scope(&self, account: &str, region: &str, backup_account: &str) -> RegionConfig {
        let mut cfg = self.region(region);
        if let Some(n) = self
            .account_networks
            .get(&(account.to_string(), region.to_string()))
        {
            cfg.vpc = n.vpc.clone();
            cfg.subnet = n.subnet.clone();
            cfg.security_groups = n.security_groups.clone();
        } else if account != backup_account {
            cfg.vpc = None;
            cfg.subnet = None;
            cfg.security_groups = Vec::new();
        }
        cfg
    }

    /// `workers.configuration{region, account?, vpc, subnet, security_groups}`;
    /// `account` is `None` for the backup account.
    pub fn configure(
        &mut self,
        account: Option<&str>,
        region: &str,
        vpc: Option<String>,
        subnet: Option<String>,
        groups: Vec<String>,
    ) {
        let r = match account {
            None => self.regions.entry(region.to_string()).or_default(),
            Some(a) => self
                .account_networks
                .entry((a.to_string(), region.to_string()))
                .or_default(),
        };
        r.vpc = vpc;
        r.subnet = subnet;
        r.security_groups = groups;
    }

    /// `workers.profile{region, purpose?, instance_type}`.
    pub fn set_profile(&mut self, region: &str, purpose: Option<Purpose>, instance_type: String) {
        let key = purpose
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "default".into());
        self.regions
            .entry(region.to_string())
            .or_default()
            .profiles
            .insert(key, instance_type);
    }

    /// The instance type for a job: the region's profile for the purpose, its
    /// default profile, else by source size.
    pub fn instance_type(&self, region: &str, purpose: Purpose, source_gib: u64) -> String {
        let r = self.region(region);
        r.profiles
            .get(purpose.as_str())
            .or_else(|| r.profiles.get("default"))
            .cloned()
            .unwrap_or_else(|| instance_type_for_size(source_gib).to_string())
    }

    pub fn expires_after(&self) -> Duration {
        Duration::from_secs(self.file.expires_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_based_defaults() {
        assert_eq!(instance_type_for_size(8), "c5.large");
        assert_eq!(instance_type_for_size(1023), "c5.large");
        assert_eq!(instance_type_for_size(1024), "c5.2xlarge");
        assert_eq!(instance_type_for_size(16 * 1024), "c5.2xlarge");
        assert_eq!(instance_type_for_size(16 * 1024 + 1), "c5.4xlarge");
    }

    #[test]
    fn profiles_override_by_purpose_then_default() {
        let file: WorkersConfig = toml::from_str(
            "[regions.us-east-1.profiles]\nbackup = \"c5.xlarge\"\ndefault = \"m5.large\"\n",
        )
        .unwrap();
        let mut s = WorkerSettings::new(file);
        assert_eq!(
            s.instance_type("us-east-1", Purpose::Backup, 10),
            "c5.xlarge"
        );
        assert_eq!(
            s.instance_type("us-east-1", Purpose::Restore, 10),
            "m5.large"
        );
        assert_eq!(
            s.instance_type("eu-west-1", Purpose::Restore, 2048),
            "c5.2xlarge"
        );
        s.set_profile("eu-west-1", Some(Purpose::Restore), "r5.large".into());
        assert_eq!(
            s.instance_type("eu-west-1", Purpose::Restore, 2048),
            "r5.large"
        );
    }

    #[test]
    fn defaults() {
        let c = WorkersConfig::default();
        assert_eq!(c.launcher, Launcher::Ec2);
        assert_eq!(c.max_per_region, 8);
        assert_eq!(c.visibility_timeout, 60);
        assert!(!c.private);
    }
}
