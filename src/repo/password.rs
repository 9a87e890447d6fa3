//! Where a repository password comes from: an environment variable (by
//! default `SKIFF_PASSWORD`), a file, or an SSM SecureString parameter.
//! Never from a script's source text. One type for the CLI, Lua options,
//! policies and worker tasks: `{env = "VAR"}`, `{file = "…"}` or
//! `{ssm = "/name", account = …, region = …}`.

use std::path::PathBuf;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::error::{RepoError, Result};
use crate::cloud::AwsError;

pub const DEFAULT_ENV: &str = "SKIFF_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
    /// An SSM parameter, read with decryption.
    Ssm(SsmParameter),
}

/// An SSM SecureString parameter; account and region default to those of
/// the operation that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmParameter {
    pub name: String,
    pub account: Option<String>,
    pub region: Option<String>,
}

impl From<&str> for SsmParameter {
    fn from(name: &str) -> SsmParameter {
        SsmParameter {
            name: name.to_string(),
            account: None,
            region: None,
        }
    }
}

impl Default for PasswordSource {
    fn default() -> Self {
        PasswordSource::Env(DEFAULT_ENV.to_string())
    }
}

impl std::fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordSource::Env(v) => write!(f, "environment variable {v}"),
            PasswordSource::File(p) => write!(f, "file {}", p.display()),
            PasswordSource::Ssm(p) => write!(f, "SSM parameter {}", p.name),
        }
    }
}

impl Serialize for PasswordSource {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        match self {
            PasswordSource::Env(v) => m.serialize_entry("env", v)?,
            PasswordSource::File(p) => m.serialize_entry("file", p)?,
            PasswordSource::Ssm(p) => {
                m.serialize_entry("ssm", &p.name)?;
                if let Some(a) = &p.account {
                    m.serialize_entry("account", a)?;
                }
                if let Some(r) = &p.region {
                    m.serialize_entry("region", r)?;
                }
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for PasswordSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PasswordSource;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table {env = …}, {file = …} or {ssm = …}")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<PasswordSource, E> {
                Err(E::custom("expected where to read the password ({env = \"VAR\"}, {file = \"…\"} or {ssm = \"/name\"}), not the password itself"))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<PasswordSource, A::Error> {
                let (mut account, mut region) = (None, None);
                let mut sources = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "env" | "file" | "ssm" => sources.push((k, m.next_value::<String>()?)),
                        "account" => account = Some(m.next_value::<String>()?),
                        "region" => region = Some(m.next_value::<String>()?),
                        _ => {
                            return Err(de::Error::unknown_field(
                                &k,
                                &["env", "file", "ssm", "account", "region"],
                            ))
                        }
                    }
                }
                if sources.len() != 1 {
                    return Err(de::Error::custom(if sources.is_empty() {
                        "give one of env, file or ssm"
                    } else {
                        "give only one of env, file or ssm"
                    }));
                }
                let (kind, v) = sources.remove(0);
                if kind != "ssm" && (account.is_some() || region.is_some()) {
                    return Err(de::Error::custom(
                        "account and region apply to an ssm password only",
                    ));
                }
                if v.is_empty() {
                    return Err(de::Error::custom(format!(
                        "{kind}: expected a non-empty string"
                    )));
                }
                Ok(match kind.as_str() {
                    "env" => PasswordSource::Env(v),
                    "file" => PasswordSource::File(PathBuf::from(v)),
                    _ => PasswordSource::Ssm(SsmParameter {
                        name: v,
                        account,
                        region,
                    }),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl PasswordSource {
    pub fn needs_ssm(&self) -> bool {
        matches!(self, PasswordSource::Ssm(_))
    }

    /// The SSM parameter, when the password is read from one.
    pub fn ssm(&self) -> Option<&SsmParameter> {
        match self {
            PasswordSource::Ssm(p) => Some(p),
            _ => None,
        }
    }

    /// Reads the password; `ssm` is needed only for the SSM source.
    pub async fn read(&self, ssm: Option<&aws_sdk_ssm::Client>) -> Result<Vec<u8>> {
        let pw = match self {
            PasswordSource::Env(var) => match std::env::var_os(var) {
                Some(v) => v.into_encoded_bytes(),
                None => {
                    return Err(RepoError::Invalid(format!(
                        "no repository password: {var} is not set (give it in SKIFF_PASSWORD, a password file, or an SSM SecureString parameter)"
                    )));
                }
            },
            PasswordSource::File(path) => {
                warn_if_others_can_read(path);
                let mut b = tokio::fs::read(path).await.map_err(|e| {
                    RepoError::Invalid(format!("password file {}: {e}", path.display()))
                })?;
                if b.ends_with(b"\n") {
                    b.pop();
                    if b.ends_with(b"\r") {
                        b.pop();
                    }
                }
                b
            }
            PasswordSource::Ssm(SsmParameter { name, .. }) => {
                let client = ssm.ok_or_else(|| {
                    RepoError::Invalid(format!(
                        "SSM parameter {name}: no AWS configuration to read it with"
                    ))
                })?;
                let out = client
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ssm:GetParameter", e))?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(|v| v.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        };
        if pw.is_empty() {
            return Err(RepoError::Invalid(format!(
                "the repository password from the {self} is empty"
            )));
        }
        Ok(pw)
    }
}

/// A password file others can read is a repository others can open.
fn warn_if_others_can_read(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} can be read by other users (mode {mode:o}); chmod 600 it",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_and_env_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        assert_eq!(
            PasswordSource::File(f.clone()).read(None).await.unwrap(),
            b"hunter2"
        );
        std::fs::write(&f, "\n").unwrap();
        let e = PasswordSource::File(f).read(None).await.unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = PasswordSource::Env("SKIFF_TEST_NO_SUCH_VAR".into())
            .read(None)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no repository password: SKIFF_TEST_NO_SUCH_VAR is not set"),
            "{e}"
        );
        let e = PasswordSource::Ssm("/x".into())
            .read(None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("SSM parameter /x"), "{e}");
    }

    #[test]
    fn reads_and_writes_the_option_tables() {
        let read = |j: serde_json::Value| {
            serde_json::from_value::<PasswordSource>(j).map_err(|e| e.to_string())
        };
        let ssm = read(serde_json::json!({"ssm": "/p", "region": "eu-west-1"})).unwrap();
        assert_eq!(
            serde_json::to_value(&ssm).unwrap(),
            serde_json::json!({"ssm": "/p", "region": "eu-west-1"})
        );
        assert_eq!(
            read(serde_json::json!({"file": "/pw"})).unwrap(),
            PasswordSource::File("/pw".into())
        );
        assert!(read(serde_json::json!("hunter2"))
            .unwrap_err()
            .contains("not the password itself"));
        assert!(read(serde_json::json!({"env": "A", "file": "/b"}))
            .unwrap_err()
            .contains("give only one of env, file or ssm"));
        assert!(read(serde_json::json!({"env": "A", "region": "x"}))
            .unwrap_err()
            .contains("apply to an ssm password only"));
        assert!(read(serde_json::json!({"env": ""}))
            .unwrap_err()
            .contains("env: expected a non-empty string"));
    }
}
