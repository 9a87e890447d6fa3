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

impl Repo {
    /// Every restore point, oldest first.
    pub async fn points(&self) -> Result<Vec<Point>> {
        let listed = self.backend.list("points").await?;
        let mut points: Vec<Point> = futures::stream::iter(
            listed
                .into_iter()
                .map(|l| async move { self.read_point_file(&l.name).await }),
        )
        .buffer_unordered(self.settings.metadata_concurrency)
        .try_collect()
        .await?;
        points.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        Ok(points)
    }

    async fn read_point_file(&self, name: &str) -> Result<Point> {
        let id = name.rsplit('/').next().unwrap_or(name).to_string();
        let sealed = self.backend.get(name).await?;
        let plain = open_meta(&self.key, &point_aad(&id), &sealed, name, "repo.read_point")?;
        let p: Point = serde_json::from_slice(&plain)
            .map_err(|e| RepoError::corrupt("repo.read_point", name, format!("unreadable: {e}")))?;
        if p.id != id {
            return Err(RepoError::corrupt(
                "repo.read_point",
                name,
                format!("names itself {}", p.id),
            ));
        }
        Ok(p)
    }

    /// A point by id or unique id prefix (at least 4 characters).
    pub async fn find_point(&self, id: &str) -> Result<Point> {
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "point {id:?}: expected a point id (or a unique prefix of at least 4 hex digits)"
            )));
        }
        let listed = self.backend.list("points").await?;
        let matching: Vec<_> = listed
            .iter()
            .filter(|l| l.name.rsplit('/').next().is_some_and(|n| n.starts_with(id)))
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
