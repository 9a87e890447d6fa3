//! What a worker instance runs at boot, as data: a cloud-config document
//! (JSON, which is YAML) built from typed values. cloud-init writes three
//! files — the agent's environment, its systemd unit and the boot script —
//! and runs the script with the agent's URL and SHA-256 as arguments. The
//! unit and the script are constant text kept beside this file; no value is
//! ever spliced into shell or unit text.

use serde::{Deserialize, Serialize};

/// The systemd unit of `skiff agent` (constant; values come from `ENV_FILE`).
pub const UNIT: &str = include_str!("boot/skiff-agent.service");
/// The boot script cloud-init runs once (constant; values are its arguments).
pub const BOOT_SCRIPT: &str = include_str!("boot/boot.sh");

pub const ENV_FILE: &str = "/etc/skiff/agent.env";
pub const UNIT_FILE: &str = "/etc/systemd/system/skiff-agent.service";
pub const SCRIPT_FILE: &str = "/usr/local/lib/skiff/boot.sh";

/// Where the agent binary comes from: a URL (a presigned S3 GET) and the
/// SHA-256 the boot script checks before running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSource {
    pub url: String,
    pub sha256: String,
}

/// What one worker's agent needs to find its work.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    pub worker_id: &'a str,
    pub task_queue: &'a str,
    pub reply_queue: &'a str,
    pub region: &'a str,
    pub agent: &'a AgentSource,
}

/// cloud-init's `write_files` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteFile {
    pub path: String,
    pub permissions: String,
    pub owner: String,
    pub content: String,
}

/// The parts of cloud-config skiff uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudConfig {
    pub write_files: Vec<WriteFile>,
    /// Commands as argument lists: cloud-init quotes each argument itself.
    pub runcmd: Vec<Vec<String>>,
}

const HEADER: &str = "#cloud-config\n";

impl CloudConfig {
    /// The user data document.
    pub fn render(&self) -> String {
        format!(
            "{HEADER}{}\n",
            serde_json::to_string_pretty(self).expect("cloud-config serializes")
        )
    }

    /// Reads a document [`CloudConfig::render`] made.
    pub fn parse(user_data: &str) -> Result<CloudConfig, String> {
        let body = user_data
            .strip_prefix(HEADER)
            .ok_or("user data does not start with #cloud-config")?;
        serde_json::from_str(body).map_err(|e| format!("cloud-config: {e}"))
    }
}

/// A value written into the agent's environment file: systemd reads
/// `KEY=VALUE` lines, so a value is kept to characters that need no quoting.
fn env_value(name: &str, v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 2048
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+=,".contains(&b));
    if ok {
        Ok(format!("{name}={v}\n"))
    } else {
        Err(format!(
            "{name}: {v:?} has characters a worker's environment file cannot hold"
        ))
    }
}

/// The cloud-config of one worker.
pub fn cloud_config(b: &Boot<'_>) -> Result<CloudConfig, String> {
    let sha_ok = b.agent.sha256.len() == 64
        && b.agent
            .sha256
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !sha_ok {
        return Err(format!(
            "{:?} is not a SHA-256 (64 hex digits)",
            b.agent.sha256
        ));
    }
    let env = [
        env_value("SKIFF_WORKER_ID", b.worker_id)?,
        env_value("SKIFF_TASK_QUEUE", b.task_queue)?,
        env_value("SKIFF_REPLY_QUEUE", b.reply_queue)?,
        env_value("SKIFF_REGION", b.region)?,
        "SKIFF_LOG=info\n".to_string(),
    ]
    .concat();
    let file = |path: &str, permissions: &str, content: &str| WriteFile {
        path: path.into(),
        permissions: permissions.into(),
        owner: "root:root".into(),
        content: content.into(),
    };
    Ok(CloudConfig {
        write_files: vec![
            file(ENV_FILE, "0600", &env),
            file(UNIT_FILE, "0644", UNIT),
            file(SCRIPT_FILE, "0755", BOOT_SCRIPT),
        ],
        runcmd: vec![vec![
            "/bin/bash".into(),
            SCRIPT_FILE.into(),
            b.agent.url.clone(),
            b.agent.sha256.clone(),
        ]],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> AgentSource {
        AgentSource {
            url: "https://bucket.s3.eu-west-1.amazonaws.com/a?X-Amz-Signature=ab&x=$(reboot)"
                .into(),
            sha256: "0".repeat(64),
        }
    }

    #[test]
    fn values_are_data_and_the_document_parses_back() {
        let a = agent();
        let boot = Boot {
            worker_id: "w1",
            task_queue: "https://sqs.eu-west-1.amazonaws.com/1/skiff-w-w1",
            reply_queue: "https://sqs.eu-west-1.amazonaws.com/1/skiff-r-j1",
            region: "eu-west-1",
            agent: &a,
        };
        let cc = cloud_config(&boot).unwrap();
        let text = cc.render();
        assert!(text.starts_with("#cloud-config\n{"));
        assert_eq!(CloudConfig::parse(&text).unwrap(), cc);
        // The URL travels as one argument, whatever it holds.
        assert_eq!(cc.runcmd[0][2], a.url);
        let env = &cc.write_files[0];
        assert_eq!(
            (env.path.as_str(), env.permissions.as_str()),
            (ENV_FILE, "0600")
        );
        assert!(env
            .content
            .contains("SKIFF_TASK_QUEUE=https://sqs.eu-west-1.amazonaws.com/1/skiff-w-w1\n"));
        // The unit leaves $SERVICE_RESULT to the shell systemd starts.
        assert!(cc.write_files[1]
            .content
            .contains(r#""$$SERVICE_RESULT" = success"#));
    }

    #[test]
    fn values_that_would_need_quoting_are_refused() {
        let a = agent();
        let boot = Boot {
            worker_id: "w1\nSKIFF_REGION=evil",
            task_queue: "q",
            reply_queue: "r",
            region: "eu-west-1",
            agent: &a,
        };
        let e = cloud_config(&boot).unwrap_err();
        assert!(e.starts_with("SKIFF_WORKER_ID:"), "{e}");
        let bad = AgentSource {
            url: "u".into(),
            sha256: "$(id)".into(),
        };
        let e = cloud_config(&Boot {
            agent: &bad,
            worker_id: "w",
            ..boot
        })
        .unwrap_err();
        assert!(e.contains("is not a SHA-256"), "{e}");
    }
}
