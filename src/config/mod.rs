//! `skiff.toml`: the accounts skiff may act in, the default region, the
//! limits of the script VMs and the worker settings. Found next to the
//! script, else in the current directory, or named with `--config`.

pub mod workers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use workers::WorkersConfig;

pub const FILE_NAME: &str = "skiff.toml";

/// The account name that stands for the ambient credentials.
pub const DEFAULT_ACCOUNT: &str = "default";

/// Extracts the account id from `arn:aws:iam::123456789012:role/name`.
pub fn account_id_of_role(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_kw, _partition, service, _region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let ok = arn_kw == "arn"
        && service == "iam"
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("role/")
        && resource.len() > 5;
    ok.then_some(account)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Region used when neither a primitive nor its account names one.
    pub region: Option<String>,
    /// Account used when a primitive names none; by default the ambient
    /// credentials (the standard AWS chain) act as the account `default`.
    pub default_account: Option<String>,
    #[serde(default)]
    pub accounts: BTreeMap<String, AccountConfig>,
    #[serde(default)]
    pub lua: LuaLimits,
    #[serde(default)]
    pub workers: WorkersConfig,
    #[serde(default)]
    pub aws: AwsTimeouts,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[aws]`: how long any AWS call may wait, so a stalled endpoint is an
/// error to retry, never a wait without end. Seconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsTimeouts {
    /// To open a connection (default 10).
    pub connect_timeout: f64,
    /// For an answer once a request is sent (default 60; task-queue long
    /// polls, which wait 20 s by design, get at least 30).
    pub read_timeout: f64,
}

impl Default for AwsTimeouts {
    fn default() -> Self {
        AwsTimeouts {
            connect_timeout: 10.0,
            read_timeout: 60.0,
        }
    }
}

impl AwsTimeouts {
    fn check(&self) -> Result<(), (&'static str, String)> {
        for (field, v) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if !(0.1..=3600.0).contains(&v) {
                return Err((
                    field,
                    format!("expected seconds between 0.1 and 3600, got {v}"),
                ));
            }
        }
        Ok(())
    }
}

/// An account reached by assuming a role through STS from the ambient credentials.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub role_arn: String,
    pub external_id: Option<String>,
    /// Default region for primitives acting in this account.
    pub region: Option<String>,
}

/// `[lua]`: the limits of every script VM (time spent waiting on
/// primitives is not counted) and the folders scripts may write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LuaLimits {
    /// Bytes, or a string such as "256MiB".
    pub memory_limit: ByteSize,
    /// VM instructions one top-level call (a runbook, a REPL line, a policy
    /// callback) may execute.
    pub instruction_limit: u64,
    /// Folders where scripts may read and write files with `fs.*` (besides
    /// reading their own folder and their `fs.scratch()`); relative to the
    /// folder of skiff.toml; each must exist.
    pub files: Vec<PathBuf>,
}

impl LuaLimits {
    /// The smallest memory limit: a VM needs about this much to start.
    pub const MIN_MEMORY: u64 = 1 << 20;
    /// The smallest instruction limit: the budget is counted every 1,000.
    pub const MIN_INSTRUCTIONS: u64 = 1_000;

    /// One rule for skiff.toml and the command line alike: each limit has a
    /// floor, and no value (0 included) switches a limit off. On a breach,
    /// the field and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.memory_limit.0 < Self::MIN_MEMORY {
            return Err((
                "memory_limit",
                format!(
                    "must be at least 1MiB, got {} bytes (no value turns the limit off)",
                    self.memory_limit.0
                ),
            ));
        }
        if self.instruction_limit < Self::MIN_INSTRUCTIONS {
            return Err((
                "instruction_limit",
                format!(
                    "must be at least 1000, got {} (no value turns the limit off)",
                    self.instruction_limit
                ),
            ));
        }
        Ok(())
    }
}

impl Default for LuaLimits {
    fn default() -> Self {
        LuaLimits {
            memory_limit: ByteSize(256 << 20),
            instruction_limit: 1_000_000_000,
            files: Vec::new(),
        }
    }
}

/// A size in bytes that reads `1048576`, `"512KiB"`, `"256MiB"`, `"2GiB"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `1048576`, `"512KiB"`, `"256MiB"`, `"10MB"`.
pub fn parse_byte_size(s: &str) -> Result<ByteSize, String> {
    {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '_')
            .unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .replace('_', "")
            .parse()
            .map_err(|_| format!("expected a size such as \"256MiB\", got {s:?}"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => return Err(format!("unknown size unit {other:?} in {s:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_byte_size(s)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_byte_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.source = Some(path.to_path_buf());
        config.resolve_files()?;
        config.validate()?;
        Ok(config)
    }

    /// The config that applies to a script: `explicit` if given, else
    /// `skiff.toml` beside the script, else in the current directory, else defaults.
    pub fn discover(explicit: Option<&Path>, script: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Self::load(path);
        }
        let beside_script = script.and_then(|s| s.parent()).map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(FILE_NAME)
            } else {
                dir.join(FILE_NAME)
            }
        });
        for candidate in beside_script.into_iter().chain([PathBuf::from(FILE_NAME)]) {
            if candidate.is_file() {
                return Self::load(&candidate);
            }
        }
        Ok(Config::default())
    }

    /// `[lua] files` as absolute paths (relative ones start at the folder of
    /// skiff.toml), each an existing folder.
    fn resolve_files(&mut self) -> Result<(), ConfigError> {
        let source = self.source.clone().unwrap_or_default();
        let base = match source.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        for (i, f) in self.lua.files.iter_mut().enumerate() {
            let p = if f.is_absolute() {
                f.clone()
            } else {
                base.join(&*f)
            };
            if !p.is_dir() {
                return Err(ConfigError::Invalid {
                    path: source.clone(),
                    field: format!("lua.files[{i}]"),
                    message: format!("{}: no such folder", p.display()),
                });
            }
            *f = std::path::absolute(&p).unwrap_or(p);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: self.source.clone().unwrap_or_default(),
            field,
            message,
        };
        for (name, account) in &self.accounts {
            if name == DEFAULT_ACCOUNT {
                return Err(invalid(
                    format!("accounts.{name}"),
                    "the name \"default\" is reserved for the ambient credentials".into(),
                ));
            }
            if account_id_of_role(&account.role_arn).is_none() {
                return Err(invalid(
                    format!("accounts.{name}.role_arn"),
                    format!(
                        "expected a role ARN such as \"arn:aws:iam::123456789012:role/skiff\", got {:?}",
                        account.role_arn
                    ),
                ));
            }
        }
        if let Some(name) = &self.workers.account {
            if name != DEFAULT_ACCOUNT && !self.accounts.contains_key(name) {
                return Err(invalid(
                    "workers.account".into(),
                    format!("no account {name:?} under [accounts]"),
                ));
            }
        }
        if let Some(name) = &self.default_account {
            if name != DEFAULT_ACCOUNT && !self.accounts.contains_key(name) {
                return Err(invalid(
                    "default_account".into(),
                    format!("no account {name:?} under [accounts]"),
                ));
            }
        }
        if let Err((field, message)) = self.lua.check() {
            return Err(invalid(format!("lua.{field}"), message));
        }
        if let Err((field, message)) = self.workers.check() {
            return Err(invalid(format!("workers.{field}"), message));
        }
        if let Err((field, message)) = self.aws.check() {
            return Err(invalid(format!("aws.{field}"), message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accounts_and_limits() {
        let c = Config::parse(
            r#"
region = "eu-west-1"
[accounts.backup]
role_arn = "arn:aws:iam::111111111111:role/skiff"
external_id = "x"
region = "us-east-2"
[lua]
memory_limit = "64MiB"
instruction_limit = 1000
"#,
            Path::new("skiff.toml"),
        )
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.accounts["backup"].region.as_deref(), Some("us-east-2"));
        assert_eq!(c.lua.memory_limit, ByteSize(64 << 20));
        assert_eq!(c.lua.instruction_limit, 1000);
    }

    #[test]
    fn rejects_unknown_fields_with_position() {
        let e = Config::parse("regoin = \"x\"\n", Path::new("a/skiff.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("a/skiff.toml: "), "{msg}");
        assert!(msg.contains("unknown field `regoin`"), "{msg}");
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn rejects_bad_role_arn() {
        let e = Config::parse(
            "[accounts.b]\nrole_arn = \"nope\"\n",
            Path::new("skiff.toml"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "skiff.toml: accounts.b.role_arn: expected a role ARN such as \"arn:aws:iam::123456789012:role/skiff\", got \"nope\""
        );
    }

    #[test]
    fn role_arns() {
        assert_eq!(
            account_id_of_role("arn:aws:iam::111111111111:role/skiff"),
            Some("111111111111")
        );
        assert_eq!(
            account_id_of_role("arn:aws:iam::111111111111:user/skiff"),
            None
        );
        assert_eq!(account_id_of_role("arn:aws:iam::1111:role/skiff"), None);
    }

    #[test]
    fn lua_files_are_folders_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("exchange")).unwrap();
        let path = dir.path().join("skiff.toml");
        let c = Config::parse("[lua]\nfiles = [\"exchange\"]\n", &path).unwrap();
        assert_eq!(c.lua.files, vec![dir.path().join("exchange")]);
        let e = Config::parse("[lua]\nfiles = [\"exchange\", \"missing\"]\n", &path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: lua.files[1]: {}: no such folder",
                path.display(),
                dir.path().join("missing").display()
            )
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("512KiB").unwrap(), ByteSize(512 << 10));
        assert_eq!(parse_byte_size("10MB").unwrap(), ByteSize(10_000_000));
        assert_eq!(parse_byte_size("1_024").unwrap(), ByteSize(1024));
        assert!(parse_byte_size("12 parsecs").is_err());
    }
}
