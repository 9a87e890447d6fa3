//! Restore points: one sealed, compressed JSON object per point under
//! `points/`, named by its id and bound to it by the AAD.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::crypto;
use super::error::{RepoError, Result};
use super::format::Point;
use super::{open_meta, seal_meta, Repo};

pub(super) fn point_aad(id: &str) -> Vec<u8> {
    format!("skiff point {id}").into_bytes()
}

/// A new point id: 16 hex digits.
pub fn new_point_id() -> String {
    hex::encode(crypto::random::<8>())
}

/// Point files are at most this large (a point is a few hundred bytes of
/// JSON and its tags); a bigger file is not read.
const MAX_POINT_FILE: u64 = 16 << 20;

/// Whether `name` is a point file's name: `points/` and 16 hex digits.
fn is_point_name(name: &str) -> bool {
    name.strip_prefix("points/").is_some_and(|b| {
        b.len() == 16
            && b.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// A file in `points/` that is not a readable point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unreadable {
    pub name: String,
    pub message: String,
    /// Whether `repo repair` removes it: a foreign name, or content that does
    /// not authenticate. A point that authenticates but does not parse was
    /// written by another version of skiff, and is left alone.
    pub removable: bool,
}

impl Repo {
    /// Every restore point, oldest first. Files in `points/` that are not
    /// readable points are skipped, each with a warning naming it.
    pub async fn points(&self) -> Result<Vec<Point>> {
        Ok(self.scan_points().await?.0)
    }

    /// Every restore point, oldest first, and the files in `points/` that
    /// are not readable points (warned about once each).
    pub async fn scan_points(&self) -> Result<(Vec<Point>, Vec<Unreadable>)> {
        let listed = self.backend.list("points").await?;
        let read: Vec<Option<std::result::Result<Point, Unreadable>>> = futures::stream::iter(
            listed
                .into_iter()
                .map(|l| async move { self.read_point_listed(&l).await }),
        )
        .buffer_unordered(self.settings.metadata_concurrency)
        .try_collect()
        .await?;
        let mut points = Vec::new();
        let mut unreadable = Vec::new();
        for r in read.into_iter().flatten() {
            match r {
                Ok(p) => points.push(p),
                Err(u) => {
                    let hint = if u.removable {
                        "`skiff repo repair` removes it"
                    } else {
                        "written by another version of skiff? left alone"
                    };
                    self.skip(&u.name, &u.message, hint);
                    unreadable.push(u);
                }
            }
        }
        points.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        unreadable.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((points, unreadable))
    }

    /// A point file as listed: the point, or why it is not one; None when
    /// it was removed since it was listed.
    async fn read_point_listed(
        &self,
        l: &super::backend::Listed,
    ) -> Result<Option<std::result::Result<Point, Unreadable>>> {
        let unreadable = |message: String, removable: bool| {
            Ok(Some(Err(Unreadable {
                name: l.name.clone(),
                message,
                removable,
            })))
        };
        if !is_point_name(&l.name) {
            return unreadable(
                "not a restore point (a foreign file: its name is not 16 hex digits)".into(),
                true,
            );
        }
        if l.size > MAX_POINT_FILE {
            return unreadable(
                format!("{} bytes: larger than any restore point", l.size),
                true,
            );
        }
        let sealed = match self.backend.get(&l.name).await {
            Ok(b) => b,
            Err(RepoError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match self.decode_point(&l.name, &sealed) {
            Ok(p) => Ok(Some(Ok(p))),
            Err((message, removable)) => unreadable(message, removable),
        }
    }

    /// A point from its sealed bytes; or why not, and whether the file is
    /// damaged (does not authenticate) rather than of another version.
    fn decode_point(
        &self,
        name: &str,
        sealed: &[u8],
    ) -> std::result::Result<Point, (String, bool)> {
        let id = name.rsplit('/').next().unwrap_or(name).to_string();
        let plain = open_meta(&self.key, &point_aad(&id), sealed, name, "repo.read_point")
            .map_err(|e| match e {
                RepoError::Corrupt { message, .. } => (message, true),
                e => (e.to_string(), true),
            })?;
        let p: Point =
            serde_json::from_slice(&plain).map_err(|e| (format!("unreadable: {e}"), false))?;
        if p.id != id {
            return Err((format!("names itself {}", p.id), false));
        }
        Ok(p)
    }

    async fn read_point_file(&self, name: &str) -> Result<Point> {
        let sealed = self.backend.get(name).await?;
        self.decode_point(name, &sealed)
            .map_err(|(m, _)| RepoError::corrupt("repo.read_point", name, m))
    }

    /// A point by id or unique id prefix (at least 4 characters).
    pub async fn find_point(&self, id: &str) -> Result<Point> {
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "point {id:?}: expected a point id (or a unique prefix of at least 4 hex digits)"
            )));
        }
        let listed = self.backend.list("points").await?;
        let id = id.to_ascii_lowercase();
        let matching: Vec<_> = listed
            .iter()
            .filter(|l| is_point_name(&l.name))
            .filter(|l| {
                l.name
                    .rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with(&id))
            })
            .collect();
        match matching.as_slice() {
            [one] => self.read_point_file(&one.name).await,
            [] => Err(RepoError::NotFound {
                op: "repo.points",
                message: format!("{}: no restore point {id}", self.url),
            }),
            many => Err(RepoError::Invalid(format!(
                "point prefix {id:?} is ambiguous: {} points match",
                many.len()
            ))),
        }
    }

    /// The newest point of a volume.
    pub async fn latest_point(&self, volume: &str) -> Result<Option<Point>> {
        Ok(self
            .points()
            .await?
            .into_iter()
            .rev()
            .find(|p| p.volume == volume))
    }

    /// Writes a point; call only once everything it references is durable and indexed.
    pub async fn write_point(&self, p: &Point) -> Result<()> {
        let sealed = seal_meta(
            &self.key,
            &point_aad(&p.id),
            &serde_json::to_vec(p).expect("point JSON"),
        );
        self.backend
            .put(&format!("points/{}", p.id), Bytes::from(sealed))
            .await
    }

    pub async fn delete_point(&self, id: &str) -> Result<()> {
        self.backend.delete(&format!("points/{id}")).await
    }
}
