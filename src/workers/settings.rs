//! Worker settings: per-region network configuration, instance types by
//! purpose, and tags — declared in `skiff.toml` under `[workers]` (the
//! schema lives in `config::workers`) and, at run time, by scripts
//! (`workers.configuration{}`, `workers.profile{}`, `workers.tags{}`), which
//! override the file.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Purpose;
// launch.rs reads these from here.
pub use crate::config::workers::{Launcher, RegionConfig, WorkersConfig};

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
}
