//! Where a repository password comes from: an environment variable (by
//! default `SKIFF_PASSWORD`), a file, or an SSM SecureString parameter.
//! Never from a script's source text.

use std::path::PathBuf;

use super::error::{RepoError, Result};
use crate::cloud::AwsError;

pub const DEFAULT_ENV: &str = "SKIFF_PASSWORD";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
    /// An SSM parameter name, read with decryption.
    Ssm(String),
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
            PasswordSource::Ssm(n) => write!(f, "SSM parameter {n}"),
        }
    }
}

impl PasswordSource {
    pub fn needs_ssm(&self) -> bool {
        matches!(self, PasswordSource::Ssm(_))
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
            PasswordSource::Ssm(name) => {
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
}
