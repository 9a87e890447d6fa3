//! `[workers]` in skiff.toml: where workers run, how they are launched and
//! for how long, and each region's network, image and instance types.

use std::collections::BTreeMap;

use serde::Deserialize;

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
    /// Where workers on AWS fetch `skiff agent` from (`[workers.agents]`):
    /// this binary is published there under its SHA-256 on the first launch
    /// (or by `skiff workers publish`).
    pub agents: Option<AgentsConfig>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub regions: BTreeMap<String, RegionConfig>,
}

/// `[workers.agents]`: the S3 location published agents live in.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// `s3://BUCKET/PREFIX`, e.g. a prefix of the repository's bucket.
    pub location: String,
    /// The bucket's region (default: the config's region).
    pub region: Option<String>,
    /// The account holding the bucket (default: the default account).
    pub account: Option<String>,
}

impl WorkersConfig {
    /// Values that would stop every job: no worker at all, or a task queue
    /// whose messages reappear before an agent can extend them. On a breach,
    /// the field and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_per_region == 0 {
            return Err((
                "max_per_region",
                "must be at least 1 (0 would let no job launch a worker)".into(),
            ));
        }
        if self.visibility_timeout < 3 {
            return Err((
                "visibility_timeout",
                format!(
                    "must be at least 3 seconds (an agent extends it every third), got {}",
                    self.visibility_timeout
                ),
            ));
        }
        Ok(())
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = WorkersConfig::default();
        assert_eq!(c.launcher, Launcher::Ec2);
        assert_eq!(c.max_per_region, 8);
        assert_eq!(c.visibility_timeout, 60);
        assert!(!c.private);
    }
}
