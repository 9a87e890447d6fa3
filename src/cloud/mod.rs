//! Cloud clients: one SDK configuration per (account, region), accounts reached
//! by assuming their role through STS from the ambient credentials (the
//! standard AWS chain, `AWS_ENDPOINT_URL` included).

mod error;
pub mod owner;
mod s3_endpoint;
pub mod tags;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

pub use error::{is_retryable_code, AwsError};
pub use s3_endpoint::S3Endpoint;

pub use crate::config::{account_id_of_role, DEFAULT_ACCOUNT};
use crate::config::{AccountConfig, Config};

/// Where a call goes: an account named in `skiff.toml` (or `default`) and a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "account {}, region {}", self.account, self.region)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("unknown account {name:?}: {known}")]
    UnknownAccount { name: String, known: String },
    #[error("no region: pass region = \"…\", set `region` in skiff.toml or AWS_REGION")]
    NoRegion,
    #[error("invalid region {0:?}: expected a name such as \"us-east-1\"")]
    BadRegion(String),
}

/// The area codes AWS region names start with, and the directions that
/// come before their number.
const REGION_AREAS: &[&str] = &[
    "af", "ap", "ca", "cn", "eu", "eusc", "il", "me", "mx", "sa", "us",
];
const REGION_DIRECTIONS: &[&str] = &[
    "north",
    "south",
    "east",
    "west",
    "central",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
];

/// A name of AWS's form: an area, an optional partition (`gov`, `iso`…), a
/// direction and a number — `us-east-1`, `us-gov-west-1`, `ap-southeast-4`;
/// not `mars-north-9`.
fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    (3..=4).contains(&parts.len())
        && REGION_AREAS.contains(first)
        && REGION_DIRECTIONS.contains(&parts[parts.len() - 2])
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Connect and read timeouts for every call of a client.
fn timeouts(connect: f64, read: f64) -> aws_smithy_types::timeout::TimeoutConfig {
    aws_smithy_types::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs_f64(connect))
        .read_timeout(std::time::Duration::from_secs_f64(read))
        .build()
}

pub struct Cloud {
    base: SdkConfig,
    config: Arc<Config>,
    sessions: Mutex<HashMap<Scope, SdkConfig>>,
    account_ids: tokio::sync::Mutex<HashMap<String, String>>,
}

/// Attempts per S3 request (see [`Cloud::s3`]).
pub const S3_ATTEMPTS: u32 = 10;

impl Cloud {
    /// Loads the ambient AWS configuration (environment, profiles, SSO, IMDS…).
    pub async fn load(config: Arc<Config>) -> Cloud {
        let t = config.aws;
        let base = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts(t.connect_timeout, t.read_timeout))
            .load()
            .await;
        Self::with_base(base, config)
    }

    /// For operations that touch no AWS (local images and repositories):
    /// no ambient configuration is read, and a client built from it has
    /// neither credentials nor a region.
    pub fn offline() -> Cloud {
        let base = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        Self::with_base(base, Arc::new(Config::default()))
    }

    pub fn with_base(base: SdkConfig, config: Arc<Config>) -> Cloud {
        Cloud {
            base,
            config,
            sessions: Mutex::new(HashMap::new()),
            account_ids: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The one address every service is reached at, when one is configured
    /// (`AWS_ENDPOINT_URL`: an emulator or a gateway).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.base.endpoint_url()
    }

    /// The same credentials and settings, reaching these further accounts
    /// by their roles (a worker given another account's role with a task).
    pub fn with_accounts(&self, accounts: &BTreeMap<String, AccountConfig>) -> Cloud {
        let mut config = (*self.config).clone();
        config
            .accounts
            .extend(accounts.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self::with_base(self.base.clone(), Arc::new(config))
    }

    /// Names of every account a script may use, `default` first.
    pub fn account_names(&self) -> Vec<String> {
        std::iter::once(DEFAULT_ACCOUNT.to_string())
            .chain(self.config.accounts.keys().cloned())
            .collect()
    }

    /// Resolves optional account and region arguments to a scope, applying the
    /// defaults: the config's `default_account`, then the account's region,
    /// the config's region, and the ambient region.
    pub fn scope(&self, account: Option<&str>, region: Option<&str>) -> Result<Scope, ScopeError> {
        let account = account
            .or(self.config.default_account.as_deref())
            .unwrap_or(DEFAULT_ACCOUNT);
        let account_region = if account == DEFAULT_ACCOUNT {
            None
        } else {
            let Some(acc) = self.config.accounts.get(account) else {
                let known = if self.config.accounts.is_empty() {
                    "skiff.toml declares no [accounts]".to_string()
                } else {
                    format!(
                        "skiff.toml declares {}",
                        self.config
                            .accounts
                            .keys()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(ScopeError::UnknownAccount {
                    name: account.to_string(),
                    known,
                });
            };
            acc.region.as_deref()
        };
        let region = region
            .or(account_region)
            .or(self.config.region.as_deref())
            .or(self.base.region().map(|r| r.as_ref()))
            .ok_or(ScopeError::NoRegion)?;
        if !valid_region(region) {
            return Err(ScopeError::BadRegion(region.to_string()));
        }
        Ok(Scope {
            account: account.to_string(),
            region: region.to_string(),
        })
    }

    /// The SDK configuration for a scope; role sessions are created once per scope.
    pub async fn sdk(&self, scope: &Scope) -> SdkConfig {
        if let Some(c) = self.sessions.lock().unwrap().get(scope) {
            return c.clone();
        }
        let region = Region::new(scope.region.clone());
        let mut builder = self.base.to_builder();
        builder.set_region(Some(region.clone()));
        if let Some(acc) = self.config.accounts.get(&scope.account) {
            let mut provider = AssumeRoleProvider::builder(acc.role_arn.clone())
                .session_name("skiff")
                .region(region)
                .configure(&self.base);
            if let Some(ext) = &acc.external_id {
                provider = provider.external_id(ext.clone());
            }
            let provider = provider.build().await;
            builder.set_credentials_provider(Some(SharedCredentialsProvider::new(provider)));
        }
        let sdk = builder.build();
        self.sessions
            .lock()
            .unwrap()
            .insert(scope.clone(), sdk.clone());
        sdk
    }

    pub async fn ec2(&self, scope: &Scope) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk(scope).await)
    }

    pub async fn sts(&self, scope: &Scope) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk(scope).await)
    }

    /// The EBS direct-API client. Its SDK retries are off: the data mover
    /// retries throttling and 5xx itself, with backoff, and the two would multiply.
    pub async fn ebs(&self, scope: &Scope) -> aws_sdk_ebs::Client {
        let conf = aws_sdk_ebs::config::Builder::from(&self.sdk(scope).await)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled())
            .build();
        aws_sdk_ebs::Client::from_conf(conf)
    }

    /// S3, path-style when a custom endpoint is configured (S3-compatible
    /// stores and local endpoints rarely resolve bucket subdomains). A
    /// repository makes many requests per command, so a transient 5xx or
    /// SlowDown is retried up to `S3_ATTEMPTS` times with the SDK's backoff,
    /// not the default 3: at a 5 % error rate, 3 attempts leave one request
    /// in 8,000 failing, which a long backup or prune meets. The SDK's
    /// process-wide retry quota is replaced by an unlimited one: it drains
    /// under a sustained error rate (each retry costs 5–14 tokens), after
    /// which requests fail on their first error, so one flaky stretch would
    /// fail whole backups, including unrelated ones in the same process.
    /// Each request still backs off exponentially and stops after
    /// `S3_ATTEMPTS`.
    pub async fn s3(&self, scope: &Scope) -> aws_sdk_s3::Client {
        self.s3_via(scope, None).await
    }

    /// As [`Cloud::s3`], every request going to `endpoint` when one is
    /// given (a repository's S3 interface endpoint), path-style: the
    /// endpoint's address already names the bucket request type.
    pub async fn s3_via(&self, scope: &Scope, endpoint: Option<&S3Endpoint>) -> aws_sdk_s3::Client {
        let sdk = self.sdk(scope).await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(sdk.endpoint_url().is_some() || endpoint.is_some())
            .retry_config(
                aws_smithy_types::retry::RetryConfig::standard().with_max_attempts(S3_ATTEMPTS),
            )
            .retry_partition(
                aws_sdk_s3::config::retry::RetryPartition::custom("skiff-s3")
                    .token_bucket(aws_sdk_s3::config::retry::TokenBucket::unlimited())
                    .build(),
            );
        if let Some(e) = endpoint {
            conf = conf.endpoint_url(&e.url);
        }
        aws_sdk_s3::Client::from_conf(conf.build())
    }

    /// The 12-digit id of an account: from its role ARN, or for `default`
    /// from STS GetCallerIdentity (asked once).
    pub async fn account_id(&self, scope: &Scope) -> Result<String, AwsError> {
        if let Some(acc) = self.config.accounts.get(&scope.account) {
            if let Some(id) = account_id_of_role(&acc.role_arn) {
                return Ok(id.to_string());
            }
        }
        let mut ids = self.account_ids.lock().await;
        if let Some(id) = ids.get(&scope.account) {
            return Ok(id.clone());
        }
        let out = self
            .sts(scope)
            .await
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
        let id = out.account().unwrap_or_default().to_string();
        ids.insert(scope.account.clone(), id.clone());
        Ok(id)
    }

    pub async fn ssm(&self, scope: &Scope) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk(scope).await)
    }

    /// SQS, whose long polls wait 20 s by design: its read timeout is at
    /// least 30 s whatever `[aws] read_timeout` says.
    pub async fn sqs(&self, scope: &Scope) -> aws_sdk_sqs::Client {
        let t = self.config.aws;
        let conf = aws_sdk_sqs::config::Builder::from(&self.sdk(scope).await)
            .timeout_config(timeouts(t.connect_timeout, t.read_timeout.max(30.0)))
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    pub async fn iam(&self, scope: &Scope) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk(scope).await)
    }

    /// Current credentials of a scope, for handing to a local agent process.
    pub async fn credentials(
        &self,
        scope: &Scope,
    ) -> Result<aws_credential_types::Credentials, String> {
        use aws_credential_types::provider::ProvideCredentials;
        let sdk = self.sdk(scope).await;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| "no credentials are configured".to_string())?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| e.to_string())
    }

    /// The account name that workers run in by default (`[workers] account`,
    /// else the config's default account).
    pub fn backup_account(&self) -> String {
        self.config
            .workers
            .account
            .clone()
            .or_else(|| self.config.default_account.clone())
            .unwrap_or_else(|| DEFAULT_ACCOUNT.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(toml: &str) -> Cloud {
        let config = Config::parse(toml, std::path::Path::new("skiff.toml")).unwrap();
        let base = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        Cloud::with_base(base, Arc::new(config))
    }

    #[test]
    fn scope_defaults() {
        let c = cloud(
            "region = \"eu-west-1\"\n[accounts.repo]\nrole_arn = \"arn:aws:iam::222222222222:role/r\"\nregion = \"us-west-2\"\n",
        );
        assert_eq!(
            c.scope(None, None).unwrap(),
            Scope {
                account: "default".into(),
                region: "eu-west-1".into()
            }
        );
        assert_eq!(c.scope(Some("repo"), None).unwrap().region, "us-west-2");
        assert_eq!(
            c.scope(Some("repo"), Some("ap-south-1")).unwrap().region,
            "ap-south-1"
        );
        assert_eq!(
            c.scope(Some("prod"), None).unwrap_err().to_string(),
            "unknown account \"prod\": skiff.toml declares \"repo\""
        );
        assert_eq!(
            c.scope(None, Some("useast1")).unwrap_err().to_string(),
            "invalid region \"useast1\": expected a name such as \"us-east-1\""
        );
    }

    #[test]
    fn no_region_anywhere() {
        let c = cloud("");
        assert!(matches!(c.scope(None, None), Err(ScopeError::NoRegion)));
    }
}
