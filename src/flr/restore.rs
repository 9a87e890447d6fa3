//! Restore to the original location: the items an operator selected in the
//! browser, packed in one tar archive (item K under `K/<its name>`), go back
//! onto the instance they were backed up from. The archive is staged in S3,
//! the instance fetches it from a short-lived presigned URL in one SSM Run
//! Command (`restore.sh`), unpacks it where the filesystem is mounted, and
//! prints one result line per item, which become the [`ItemOutcome`]s.
//!
//! The steps are public ([`stage`], [`send`], [`wait`], [`outcomes`],
//! [`Staged::remove`]) so a test can run the script itself between them;
//! [`restore`] runs them all and always removes the staged archive.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::cloud::{AwsError, Cloud, Scope};

/// Where a point came from (its tags `instance`, `account`, `region`), and
/// where its archive is staged on the way back.
#[derive(Debug, Clone)]
pub struct Target {
    /// The instance, `i-…`.
    pub instance: String,
    /// The instance's account and region.
    pub scope: Scope,
    /// The bucket the archive is staged in.
    pub bucket: String,
    /// Key prefix of staged archives, e.g. `skiff-flr/<session>/`.
    pub prefix: String,
    pub bucket_scope: Scope,
}

/// One selected item: its number in the archive (`K/<name>`) and its path
/// relative to the filesystem's root, as bytes (`etc/ssh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub index: usize,
    pub path: Vec<u8>,
}

/// One outcome per selected item, as the browser shows it.
pub use super::server::ItemOutcome;

/// Times of a restore.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long the presigned URL works (default 15 minutes).
    pub url_lifetime: Duration,
    /// How long SSM tries to deliver the command to the instance (its
    /// `TimeoutSeconds`; default 2 minutes: an instance whose agent is
    /// online takes it in seconds).
    pub delivery: Duration,
    /// How long the script may run (`executionTimeout`; default 10 minutes).
    pub execution: Duration,
    /// The first pause between polls of the invocation, doubled up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            url_lifetime: Duration::from_secs(15 * 60),
            delivery: Duration::from_secs(120),
            execution: Duration::from_secs(600),
            poll_first: Duration::from_millis(500),
            poll_max: Duration::from_secs(10),
        }
    }
}

/// The SSM document the script runs in.
pub const DOCUMENT: &str = "AWS-RunShellScript";

/// The most an archive may hold: one S3 PutObject.
pub const MAX_ARCHIVE: u64 = 5 << 30;

/// GetCommandInvocation returns only this much of the script's output.
const OUTPUT_KEPT: usize = 24_000;

/// The script's constant part.
const TEMPLATE: &str = include_str!("restore.sh");

/// Writes the items of `archive` back onto the target instance, next to
/// their originals (`<path>.restored-<time>`) or over them (`overwrite`):
/// one outcome per item. Refuses bad input before anything is staged.
pub async fn restore(
    cloud: &Cloud,
    t: &Target,
    fs_uuid: Option<&str>,
    archive: &Path,
    items: &[Item],
    overwrite: bool,
    now: DateTime<Utc>,
) -> Result<Vec<ItemOutcome>, String> {
    let limits = Limits::default();
    check(t, fs_uuid, archive, items)?;
    let staged = stage(cloud, t, archive, &limits).await?;
    let result = async {
        let text = script(&staged.url, fs_uuid, items, overwrite, &stamp(now));
        let id = send(cloud, t, &text, &comment(items), &limits).await?;
        let inv = wait(cloud, t, &id, &limits).await?;
        outcomes(t, items, &inv)
    }
    .await;
    staged.remove().await;
    result
}

/// The checks made before any side effect: the instance id, the
/// filesystem's UUID, the archive, and every item's path and number.
pub fn check(
    t: &Target,
    fs_uuid: Option<&str>,
    archive: &Path,
    items: &[Item],
) -> Result<(), String> {
    let hex = t.instance.strip_prefix("i-").unwrap_or("");
    if hex.is_empty() || hex.len() > 17 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "instance: {:?} is not an EC2 instance id (i- and hexadecimal digits)",
            t.instance
        ));
    }
    if let Some(u) = fs_uuid {
        if u.is_empty() || !u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("fs_uuid: {u:?} is not a filesystem UUID"));
        }
    }
    if items.is_empty() {
        return Err("items: nothing is selected to restore".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Err(why) = check_path(&item.path) {
            return Err(format!(
                "items[{i}].path {:?}: {why}",
                String::from_utf8_lossy(&item.path)
            ));
        }
        if !seen.insert(item.index) {
            return Err(format!(
                "items[{i}].index: {} is used by another item",
                item.index
            ));
        }
    }
    let meta = std::fs::metadata(archive)
        .and_then(|m| std::fs::File::open(archive).map(|_| m))
        .map_err(|e| format!("archive {}: {e}", archive.display()))?;
    if !meta.is_file() {
        return Err(format!("archive {}: not a file", archive.display()));
    }
    if meta.len() > MAX_ARCHIVE {
        return Err(format!(
            "archive {}: {} bytes; one restore takes at most 5 GiB (restore fewer items at once)",
            archive.display(),
            meta.len()
        ));
    }
    Ok(())
}

/// A path relative to the filesystem's root, naming something in it.
fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("the filesystem's root is not an item: select what is in it");
    }
    if path.starts_with(b"/") {
        return Err("expected a path relative to the filesystem's root");
    }
    if path.contains(&0) {
        return Err("a path holds no NUL byte");
    }
    for part in path.split(|b| *b == b'/') {
        if part.is_empty() || part == b"." || part == b".." {
            return Err("empty, `.` and `..` parts are refused");
        }
    }
    Ok(())
}

/// The item's own name: where the archive holds it, under `K/`.
fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

/// The suffix's time: `20240102T030405Z`.
pub fn stamp(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%SZ").to_string()
}

/// SSM's comment (at most 100 characters): skiff, and the items.
pub fn comment(items: &[Item]) -> String {
    let names: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8_lossy(&i.path).replace(char::is_control, "?"))
        .collect();
    let full = format!("skiff flr restore: {}", names.join(", "));
    if full.chars().count() <= 100 {
        return full;
    }
    let mut short: String = full.chars().take(99).collect();
    short.push('…');
    short
}

/// The POSIX sh script that restores `items` on the instance: the values,
/// base64-encoded, then `restore.sh`. No name reaches the shell's parser.
pub fn script(
    url: &str,
    fs_uuid: Option<&str>,
    items: &[Item],
    overwrite: bool,
    stamp: &str,
) -> String {
    let enc = |b: &[u8]| B64.encode(b);
    let triples: Vec<String> = items
        .iter()
        .map(|i| format!("{} {} {}", i.index, enc(&i.path), enc(name_of(&i.path))))
        .collect();
    format!(
        "#!/bin/sh\n\
         # skiff: restore {n} item(s) of a backup to their original location\n\
         URL_B64='{url}'\n\
         UUID_B64='{uuid}'\n\
         STAMP_B64='{stamp}'\n\
         OVERWRITE={overwrite}\n\
         ITEMS='{items}'\n\
         {TEMPLATE}",
        n = items.len(),
        url = enc(url.as_bytes()),
        uuid = enc(fs_uuid.unwrap_or("").as_bytes()),
        stamp = enc(stamp.as_bytes()),
        overwrite = u8::from(overwrite),
        items = triples.join(" "),
    )
}

/// The archive in S3, and a presigned GET of it.
pub struct Staged {
    pub bucket: String,
    pub key: String,
    pub url: String,
    s3: aws_sdk_s3::Client,
    removed: bool,
}

/// Uploads the archive to `s3://bucket/prefix<uuid>.tar` and presigns a GET.
pub async fn stage(
    cloud: &Cloud,
    t: &Target,
    archive: &Path,
    limits: &Limits,
) -> Result<Staged, String> {
    let s3 = cloud.s3(&t.bucket_scope).await;
    let key = format!("{}{}.tar", t.prefix, uuid::Uuid::new_v4());
    let body = ByteStream::from_path(archive)
        .await
        .map_err(|e| format!("archive {}: {e}", archive.display()))?;
    s3.put_object()
        .bucket(&t.bucket)
        .key(&key)
        .body(body)
        .content_type("application/x-tar")
        .send()
        .await
        .map_err(|e| {
            format!(
                "staging the archive in s3://{}/{key}: {}",
                t.bucket,
                AwsError::from_sdk("s3:PutObject", e)
            )
        })?;
    let mut staged = Staged {
        bucket: t.bucket.clone(),
        key,
        url: String::new(),
        s3,
        removed: false,
    };
    let presigned = async {
        let cfg = PresigningConfig::expires_in(limits.url_lifetime)
            .map_err(|e| format!("presigning: {e}"))?;
        staged
            .s3
            .get_object()
            .bucket(&staged.bucket)
            .key(&staged.key)
            .presigned(cfg)
            .await
            .map_err(|e| {
                format!(
                    "presigning s3://{}/{}: {}",
                    staged.bucket,
                    staged.key,
                    AwsError::from_sdk("s3:GetObject", e)
                )
            })
    }
    .await;
    match presigned {
        Ok(req) => {
            staged.url = req.uri().to_string();
            Ok(staged)
        }
        Err(e) => {
            staged.remove().await;
            Err(e)
        }
    }
}

impl Staged {
    /// Deletes the staged archive; a failure is logged (the URL expires anyway).
    pub async fn remove(mut self) {
        self.removed = true;
        if let Err(e) = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            tracing::warn!(
                "flr restore: the staged archive s3://{}/{} stays: {}",
                self.bucket,
                self.key,
                AwsError::from_sdk("s3:DeleteObject", e)
            );
        }
    }
}

impl Drop for Staged {
    /// A restore dropped midway (its caller went away) still removes its archive.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (s3, bucket, key) = (self.s3.clone(), self.bucket.clone(), self.key.clone());
        rt.spawn(async move {
            let _ = s3.delete_object().bucket(bucket).key(key).send().await;
        });
    }
}

/// Sends the script to the instance as one Run Command; its command id.
pub async fn send(
    cloud: &Cloud,
    t: &Target,
    script: &str,
    comment: &str,
    limits: &Limits,
) -> Result<String, String> {
    let ssm = cloud.ssm(&t.scope).await;
    let out = ssm
        .send_command()
        .instance_ids(&t.instance)
        .document_name(DOCUMENT)
        .comment(comment)
        .timeout_seconds(limits.delivery.as_secs().max(30) as i32)
        .parameters("commands", script.lines().map(str::to_string).collect())
        .parameters("executionTimeout", vec![limits.execution.as_secs().to_string()])
        .send()
        .await
        .map_err(|e| {
            let e = AwsError::from_sdk("ssm:SendCommand", e);
            if e.code.as_deref() == Some("InvalidInstanceId") {
                format!(
                    "instance {} ({}) does not take SSM commands: its SSM agent must be running and its instance role must allow SSM (e.g. AmazonSSMManagedInstanceCore); {e}",
                    t.instance, t.scope
                )
            } else {
                format!("sending the restore to instance {} ({}): {e}", t.instance, t.scope)
            }
        })?;
    out.command()
        .and_then(|c| c.command_id())
        .map(str::to_string)
        .ok_or_else(|| format!("ssm:SendCommand to {} returned no command id", t.instance))
}

/// How the command ended on the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command_id: String,
    /// `Success`, `Failed`, `TimedOut`, `Cancelled`…
    pub status: String,
    pub details: String,
    pub stdout: String,
    pub stderr: String,
}

/// Polls the command's invocation until it ends, at most delivery +
/// execution time + 30 s; past that it is cancelled and an error names it.
pub async fn wait(
    cloud: &Cloud,
    t: &Target,
    command_id: &str,
    limits: &Limits,
) -> Result<Invocation, String> {
    let ssm = cloud.ssm(&t.scope).await;
    let deadline = Instant::now() + limits.delivery + limits.execution + Duration::from_secs(30);
    let mut pause = limits.poll_first;
    let mut last = "not yet known".to_string();
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(limits.poll_max);
        match ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(&t.instance)
            .send()
            .await
        {
            Ok(out) => {
                let status = out.status().map(|s| s.as_str()).unwrap_or("").to_string();
                if !matches!(
                    status.as_str(),
                    "Pending" | "InProgress" | "Delayed" | "Cancelling" | ""
                ) {
                    return Ok(Invocation {
                        command_id: command_id.to_string(),
                        status,
                        details: out.status_details().unwrap_or("").to_string(),
                        stdout: out.standard_output_content().unwrap_or("").to_string(),
                        stderr: out.standard_error_content().unwrap_or("").to_string(),
                    });
                }
                last = status;
            }
            Err(e) => {
                let e = AwsError::from_sdk("ssm:GetCommandInvocation", e);
                // Just after SendCommand the invocation may not exist yet.
                if !(e.retryable || e.code.as_deref() == Some("InvocationDoesNotExist")) {
                    return Err(format!(
                        "SSM command {command_id} on instance {}: {e}",
                        t.instance
                    ));
                }
            }
        }
        if Instant::now() >= deadline {
            let _ = ssm.cancel_command().command_id(command_id).send().await;
            return Err(format!(
                "SSM command {command_id} on instance {} did not finish in {} s (status {last}); it was cancelled",
                t.instance,
                (limits.delivery + limits.execution).as_secs() + 30
            ));
        }
    }
}

/// One outcome per item from the script's output. A command that printed
/// nothing and did not succeed is an error naming it and its status.
pub fn outcomes(t: &Target, items: &[Item], inv: &Invocation) -> Result<Vec<ItemOutcome>, String> {
    let results = parse(&inv.stdout);
    if results.is_empty() && inv.status != "Success" {
        let why = [inv.details.trim(), last_lines(&inv.stderr, 3).trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        return Err(format!(
            "SSM command {} on instance {} ended {}{}",
            inv.command_id,
            t.instance,
            inv.status,
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        ));
    }
    let mut missing = "no result from the instance".to_string();
    if inv.stdout.chars().count() >= OUTPUT_KEPT {
        missing.push_str(" (SSM keeps only the first 24,000 characters of its output)");
    } else if inv.status != "Success" {
        missing.push_str(&format!(
            " (SSM command {} ended {})",
            inv.command_id, inv.status
        ));
    }
    Ok(items
        .iter()
        .map(|item| {
            let path = String::from_utf8_lossy(&item.path).into_owned();
            match results.get(&item.index) {
                Some((ok, text)) => ItemOutcome {
                    path,
                    ok: *ok,
                    detail: text.clone(),
                },
                None => ItemOutcome {
                    path,
                    ok: false,
                    detail: missing.clone(),
                },
            }
        })
        .collect())
}

/// The script's result lines, by item number: whether it was restored, and
/// where to or why not. Other lines are ignored.
pub fn parse(stdout: &str) -> std::collections::BTreeMap<usize, (bool, String)> {
    let mut out = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let mut words = line.trim_end().split(' ');
        if words.next() != Some("skiff-restore") {
            continue;
        }
        let ok = match words.next() {
            Some("ok") => true,
            Some("failed") => false,
            _ => continue,
        };
        let Some(Ok(index)) = words.next().map(str::parse::<usize>) else {
            continue;
        };
        let Some(Ok(text)) = words.next().map(|w| B64.decode(w)) else {
            continue;
        };
        if words.next().is_some() {
            continue;
        }
        out.insert(index, (ok, String::from_utf8_lossy(&text).into_owned()));
    }
    out
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
