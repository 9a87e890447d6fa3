//! One file-level recovery session: a point exposed as an image (through
//! the same FUSE file `skiff mount` serves), its partitions found, each
//! filesystem the kernel reads mounted read-only through a loop device, and
//! the browser serving them over TLS with the session's own certificate —
//! until [`Session::close`], which undoes all of it in reverse. Nothing of
//! the point is written to disk: the image is read from the repository on
//! demand into a bounded memory cache, and the mount points are empty
//! folders removed at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::attach::{Attached, State};
use super::cert::SessionCert;
use super::disk;
use super::server::{self, Audit, Fs, Restorer, Serving, Shared};
use super::tree::Root;
use crate::mover::image::PointImage;

/// The longest session: its certificate is valid for a day.
pub const MAX_TTL: Duration = Duration::from_secs(12 * 3600);

/// How a session is opened.
pub struct Opts {
    /// Where to listen (`127.0.0.1:0` for `--local`, `0.0.0.0:443` on a worker).
    pub listen: SocketAddr,
    /// The addresses the browser may use: the certificate's names. The first
    /// is the one the printed URL uses.
    pub names: Vec<String>,
    pub token_sha256: [u8; 32],
    /// An id for the run history (who did what).
    pub session: String,
    pub ttl: Duration,
    /// A folder under which the session makes its own private folder.
    pub work: PathBuf,
    /// Who may connect (empty: anyone who reaches the listener).
    pub admit: Vec<crate::network::Cidr>,
}

/// What the operator is told.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Opened {
    /// `https://NAME:PORT/`, without the token.
    #[serde(rename = "address")]
    pub url: String,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// SHA-256 of the certificate's public key, base64 (Chromium's SPKI list).
    pub spki_sha256: String,
    pub certificate_pem: String,
    /// One line per partition: what it is and whether it is browsable.
    pub partitions: Vec<String>,
    pub expires: String,
}

pub struct Session {
    dir: PathBuf,
    fuse: Option<fuser::BackgroundSession>,
    attached: Option<Attached>,
    serving: Option<Serving>,
}

/// A `2h`, `90m`, `45s`, `1d` span (at most [`MAX_TTL`]).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a span like 30m, 2h or 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" | "" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    if secs == 0 {
        return Err(format!("{s:?}: a session must last some time"));
    }
    let d = Duration::from_secs(secs);
    if d > MAX_TTL {
        return Err(format!(
            "{s:?} is longer than a session may last ({} h)",
            MAX_TTL.as_secs() / 3600
        ));
    }
    Ok(d)
}

/// Undoes what sessions of processes that died without closing them
/// (SIGKILL, a crash) left under `work`: their filesystems, loop devices
/// (cleared with the last unmount) and FUSE image, then their folder.
fn reap_stale(work: &Path) {
    let Ok(dirs) = std::fs::read_dir(work) else {
        return;
    };
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for d in dirs.flatten() {
        let dir = d.path();
        if !d.file_name().to_string_lossy().starts_with("skiff-flr-") {
            continue;
        }
        let alive = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if alive {
            continue;
        }
        let prefix = format!("{}/", dir.display());
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        // Filesystems first (deepest path first), the image under them last.
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let c = std::ffi::CString::new(m).unwrap_or_default();
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                tracing::warn!("flr: cannot unmount {m} left by an ended session");
            }
        }
        tracing::info!(
            "flr: removed what an ended session left in {}",
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn find_image(dir: &Path) -> Option<PathBuf> {
    for v in std::fs::read_dir(dir).ok()?.flatten() {
        for p in std::fs::read_dir(v.path()).ok()?.flatten() {
            let img = p.path().join("image");
            if img.is_file() {
                return Some(img);
            }
        }
    }
    None
}

impl Session {
    /// Exposes `image`, mounts its filesystems and starts serving them.
    pub async fn open(
        image: Arc<PointImage>,
        opts: Opts,
        audit: Arc<dyn Audit>,
        restorer: Option<Arc<dyn Restorer>>,
    ) -> Result<(Session, Opened), String> {
        let work = opts.work.clone();
        let _ = tokio::task::spawn_blocking(move || reap_stale(&work)).await;
        let dir = opts.work.join(format!("skiff-flr-{}", opts.session));
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir.join("image"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join("pid"), std::process::id().to_string())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::create_dir_all(dir.join("fs")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut session = Session {
            dir: dir.clone(),
            fuse: None,
            attached: None,
            serving: None,
        };
        match session.start(image, opts, audit, restorer).await {
            Ok(opened) => Ok((session, opened)),
            Err(e) => {
                session.close().await;
                Err(e)
            }
        }
    }

    async fn start(
        &mut self,
        image: Arc<PointImage>,
        opts: Opts,
        audit: Arc<dyn Audit>,
        restorer: Option<Arc<dyn Restorer>>,
    ) -> Result<Opened, String> {
        let point = image.point().clone();
        let fs = crate::mount::RepoFs::new(vec![image], tokio::runtime::Handle::current());
        let at = self.dir.join("image");
        let fuse = crate::mount::mount(fs, &at).map_err(|e| {
            format!(
                "cannot expose the point as an image (FUSE on {}): {e}; a file-level recovery host needs /dev/fuse",
                at.display()
            )
        })?;
        self.fuse = Some(fuse);
        let mut img = None;
        for _ in 0..100 {
            img = find_image(&at);
            if img.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let img =
            img.ok_or_else(|| format!("the point's image did not appear under {}", at.display()))?;
        let under = self.dir.join("fs");
        let (layout, attached) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&img).map_err(|e| format!("{}: {e}", img.display()))?;
            let layout = disk::partitions(&file).map_err(|e| format!("partition table: {e}"))?;
            let attached = Attached::mount_all(&img, &layout, &under).map_err(|e| e.to_string())?;
            Ok::<_, String>((layout, attached))
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut filesystems = Vec::new();
        let mut lines = Vec::new();
        for m in &attached.mounts {
            let part = layout.partitions.iter().find(|p| p.index == m.index);
            let mut label = match &m.fs {
                Some(f) => f.kind.name().to_string(),
                None => "no filesystem found".to_string(),
            };
            if let Some(l) =
                m.fs.as_ref()
                    .and_then(|f| f.label.as_deref())
                    .filter(|l| !l.is_empty())
            {
                label.push_str(&format!(" \"{l}\""));
            }
            if let Some(p) = part {
                label.push_str(&format!(
                    ", {} ({})",
                    super::pages::size(p.size),
                    p.type_name
                ));
            }
            let root = match &m.state {
                State::Mounted { at, .. } => {
                    Root::open(at).map(Arc::new).map_err(|e| e.to_string())
                }
                State::Skipped { reason } => Err(reason.clone()),
            };
            lines.push(match &root {
                Ok(_) => format!("{}: {label}", m.index),
                Err(why) => format!("{}: {label} — not browsable: {why}", m.index),
            });
            filesystems.push(Fs {
                index: m.index,
                label,
                uuid: m.fs.as_ref().and_then(|f| f.uuid.clone()),
                root,
            });
        }
        self.attached = Some(attached);
        let cert = SessionCert::generate(&opts.names)?;
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let expires =
            (chrono::Utc::now() + opts.ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let shared = Arc::new(Shared {
            token_sha256: opts.token_sha256,
            session: opts.session.clone(),
            title: format!("{} · point {} of {}", point.volume, point.id, point.time),
            expires: expires.clone(),
            filesystems,
            audit,
            restorer,
            admit: opts.admit,
        });
        self.serving = Some(server::serve(listener, cert.config.clone(), shared));
        let host = &opts.names[0];
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        Ok(Opened {
            url: format!("https://{host}:{port}/"),
            fingerprint: cert.fingerprint,
            spki_sha256: cert.spki_sha256,
            certificate_pem: cert.pem,
            partitions: lines,
            expires,
        })
    }

    /// Stops serving, unmounts every filesystem, detaches the loop devices,
    /// unmounts the image and removes the session's folder. Problems are
    /// logged; the rest is still undone.
    pub async fn close(mut self) {
        if let Some(s) = self.serving.take() {
            s.stop().await;
        }
        let attached = self.attached.take();
        let fuse = self.fuse.take();
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(a) = attached {
                if let Err(e) = a.release() {
                    tracing::warn!("flr: {e}");
                }
            }
            drop(fuse);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("flr: {}: {e}", dir.display());
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_spans_within_the_limit() {
        assert_eq!(parse_ttl("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_ttl("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("45s").unwrap(), Duration::from_secs(45));
        assert!(parse_ttl("2d").is_err());
        assert!(parse_ttl("0m").is_err());
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("3w").is_err());
    }
}
