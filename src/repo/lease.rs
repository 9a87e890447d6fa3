//! One writer per repository: the `lease` object names its holder and an
//! expiry. It is created only if absent (S3 `If-None-Match: *`, an flock'd
//! compare locally), refreshed while the holder writes (compare-and-swap on
//! its version), and taken over only once expired — or at once when its
//! holder was a process on this host that no longer exists.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::backend::{Backend, LeaseTag};
use super::crypto::Key;
use super::error::{RepoError, Result};
use super::format;
use super::Repo;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// How long a lease lasts without a refresh (default 10 minutes).
    pub duration: Duration,
    /// How often the holder refreshes it (default every 2 minutes).
    pub refresh: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            duration: Duration::from_secs(600),
            refresh: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LeaseDoc {
    /// What holds it, e.g. `skiff copy`.
    purpose: String,
    host: String,
    pid: u32,
    /// Random: tells this holder's lease from a successor's.
    token: String,
    acquired: String,
    /// Unix seconds.
    expires: i64,
}

impl LeaseDoc {
    fn holder(&self) -> String {
        format!("{} (pid {} on {})", self.purpose, self.pid, self.host)
    }

    fn expires_text(&self) -> String {
        chrono::DateTime::from_timestamp(self.expires, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| self.expires.to_string())
    }
}

pub(super) const LEASE_AAD: &[u8] = b"skiff lease";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

struct Shared {
    backend: Backend,
    key: Key,
    location: String,
    doc: Mutex<LeaseDoc>,
    tag: Mutex<LeaseTag>,
    lost: Mutex<Option<String>>,
    released: AtomicBool,
    duration: Duration,
}

/// A held lease; refreshed in the background until released.
pub struct Lease {
    shared: Arc<Shared>,
    refresher: tokio::task::JoinHandle<()>,
}

enum Found {
    Ours,
    Held(LeaseDoc),
    Free,
}

impl Lease {
    /// Takes the lease, waiting up to `wait` for its holder to let go (a
    /// zero wait fails at once, naming the holder).
    pub async fn acquire_waiting(repo: &Repo, purpose: &str, wait: Duration) -> Result<Lease> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut told = false;
        loop {
            match Self::acquire(repo, purpose).await {
                Err(RepoError::Locked { holder, .. }) if tokio::time::Instant::now() < deadline => {
                    if !told {
                        tracing::info!("{}: waiting for {holder} to finish", repo.url());
                        told = true;
                    }
                    let jitter = rand::random::<u64>() % 500;
                    tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
                }
                other => return other,
            }
        }
    }

    /// Takes the repository's lease for `purpose`, or fails naming the holder and expiry.
    pub async fn acquire(repo: &Repo, purpose: &str) -> Result<Lease> {
        let backend = repo.backend().clone();
        let key = repo.key().clone();
        let settings = repo.settings.lease.clone();
        let host = format::hostname();
        let pid = std::process::id();
        for _ in 0..8 {
            let doc = LeaseDoc {
                purpose: purpose.to_string(),
                host: host.clone(),
                pid,
                token: hex::encode(super::crypto::random::<16>()),
                acquired: format::now_rfc3339(),
                expires: now() + settings.duration.as_secs() as i64,
            };
            let sealed =
                Bytes::from(key.seal(LEASE_AAD, &serde_json::to_vec(&doc).expect("lease JSON")));
            let current = backend.read_lease().await?;
            let expect = match &current {
                None => None,
                Some((bytes, tag)) => match key
                    .open(LEASE_AAD, bytes)
                    .ok()
                    .and_then(|p| serde_json::from_slice::<LeaseDoc>(&p).ok())
                {
                    Some(held) => {
                        let stale = held.expires < now()
                            || (held.host == host && held.pid != pid && !process_alive(held.pid));
                        if !stale {
                            return Err(RepoError::Locked {
                                location: repo.url().to_string(),
                                holder: held.holder(),
                                expires: held.expires_text(),
                            });
                        }
                        tracing::warn!(
                            "{}: taking over the stale lease of {}",
                            repo.url(),
                            held.holder()
                        );
                        Some(tag.clone())
                    }
                    None => {
                        tracing::warn!("{}: replacing an unreadable lease object", repo.url());
                        Some(tag.clone())
                    }
                },
            };
            if !backend.write_lease(sealed, expect.as_ref()).await? {
                continue; // someone else moved first: look again
            }
            let Some((_, tag)) = backend.read_lease().await? else {
                continue;
            };
            let shared = Arc::new(Shared {
                backend,
                key,
                location: repo.url().to_string(),
                doc: Mutex::new(doc),
                tag: Mutex::new(tag),
                lost: Mutex::new(None),
                released: AtomicBool::new(false),
                duration: settings.duration,
            });
            let s = shared.clone();
            let every = settings.refresh;
            let refresher = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if s.released.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Err(e) = refresh(&s).await {
                        tracing::warn!("{}: lease refresh failed: {e}", s.location);
                        if matches!(e, RepoError::LeaseLost { .. }) {
                            return;
                        }
                    }
                }
            });
            return Ok(Lease { shared, refresher });
        }
        Err(RepoError::Locked {
            location: repo.url().to_string(),
            holder: "another writer (the lease kept changing)".into(),
            expires: "unknown".into(),
        })
    }

    /// Fails if the lease was lost; otherwise extends it. Call before each
    /// step that makes written data visible (index files, points, deletions).
    pub async fn ensure(&self) -> Result<()> {
        if let Some(holder) = self.shared.lost.lock().unwrap().clone() {
            return Err(RepoError::LeaseLost {
                location: self.shared.location.clone(),
                holder,
            });
        }
        refresh(&self.shared).await
    }

    /// Gives the lease up.
    pub async fn release(self) -> Result<()> {
        self.shared.released.store(true, Ordering::SeqCst);
        self.refresher.abort();
        release(&self.shared).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.refresher.abort();
        if !self.shared.released.swap(true, Ordering::SeqCst) {
            // Dropped on an error path: give the lease back if a runtime is still there.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                let s = self.shared.clone();
                h.spawn(async move {
                    let _ = release(&s).await;
                });
            }
        }
    }
}

async fn look(s: &Shared) -> Result<(Found, Option<LeaseTag>)> {
    let token = s.doc.lock().unwrap().token.clone();
    match s.backend.read_lease().await? {
        None => Ok((Found::Free, None)),
        Some((bytes, tag)) => {
            let doc = s
                .key
                .open(LEASE_AAD, &bytes)
                .ok()
                .and_then(|p| serde_json::from_slice::<LeaseDoc>(&p).ok());
            match doc {
                Some(d) if d.token == token => Ok((Found::Ours, Some(tag))),
                Some(d) => Ok((Found::Held(d), Some(tag))),
                None => Ok((Found::Free, Some(tag))),
            }
        }
    }
}

async fn refresh(s: &Shared) -> Result<()> {
    let (found, tag) = look(s).await?;
    match found {
        Found::Ours => {
            let doc = {
                let mut d = s.doc.lock().unwrap();
                d.expires = now() + s.duration.as_secs() as i64;
                d.clone()
            };
            let sealed = Bytes::from(
                s.key
                    .seal(LEASE_AAD, &serde_json::to_vec(&doc).expect("lease JSON")),
            );
            if s.backend.write_lease(sealed, tag.as_ref()).await? {
                if let Some((_, t)) = s.backend.read_lease().await? {
                    *s.tag.lock().unwrap() = t;
                }
                return Ok(());
            }
            lose(s, "another writer".into())
        }
        Found::Held(d) => lose(s, d.holder()),
        Found::Free => lose(s, "nobody (the lease was removed)".into()),
    }
}

fn lose(s: &Shared, holder: String) -> Result<()> {
    *s.lost.lock().unwrap() = Some(holder.clone());
    Err(RepoError::LeaseLost {
        location: s.location.clone(),
        holder,
    })
}

async fn release(s: &Shared) -> Result<()> {
    if let (Found::Ours, Some(tag)) = look(s).await? {
        s.backend.delete_lease(&tag).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testutil::memory_repo;

    #[tokio::test]
    async fn second_writer_is_refused_until_release() {
        let (_, repo) = memory_repo().await;
        let a = Lease::acquire(&repo, "skiff copy").await.unwrap();
        let err = Lease::acquire(&repo, "skiff prune").await.err().unwrap();
        let msg = err.to_string();
        assert!(
            msg.starts_with("mem is locked by skiff copy (pid "),
            "{msg}"
        );
        assert!(msg.contains(" until 20"), "{msg}");
        a.ensure().await.unwrap();
        a.release().await.unwrap();
        let b = Lease::acquire(&repo, "skiff prune").await.unwrap();
        b.release().await.unwrap();
    }

    #[tokio::test]
    async fn expired_lease_is_taken_over_and_the_loser_notices() {
        let (_, mut repo) = memory_repo().await;
        Arc::get_mut(&mut repo).unwrap().settings.lease.duration = Duration::from_secs(0);
        let a = Lease::acquire(&repo, "first").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let b = Lease::acquire(&repo, "second").await.unwrap();
        let err = a.ensure().await.unwrap_err();
        assert!(matches!(err, RepoError::LeaseLost { .. }), "{err}");
        assert!(err.to_string().contains("taken over by second"), "{err}");
        drop(a);
        b.ensure().await.unwrap();
        b.release().await.unwrap();
    }
}
