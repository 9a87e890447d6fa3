//! Retention: which restore points to keep, by grandfather-father-son rules
//! applied to each volume's points separately. A point is kept when any rule
//! keeps it; the rest are forgotten (their data goes at the next prune).

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use super::error::{RepoError, Result};
use super::format::Point;
use super::lease::Lease;
use super::Repo;

/// How many points to keep: the newest `keep_last`, and the newest point of
/// each of the last `keep_daily` days (weeks, months, years) that have one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepOptions {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
}

impl KeepOptions {
    pub fn is_empty(&self) -> bool {
        *self == KeepOptions::default()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub point: Point,
    pub keep: bool,
    /// The rules that keep it: `last`, `daily`, `weekly`, `monthly`, `yearly`.
    pub reasons: Vec<&'static str>,
}

fn parse_time(p: &Point) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&p.time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            RepoError::corrupt(
                "repo.forget",
                format!("point {}", p.id),
                format!("bad time {:?}: {e}", p.time),
            )
        })
}

/// Applies the rules to each volume's points; returns one decision per point, newest first.
pub fn select(points: &[Point], keep: &KeepOptions) -> Result<Vec<Decision>> {
    let mut dated: Vec<(DateTime<Utc>, &Point)> = points
        .iter()
        .map(|p| Ok((parse_time(p)?, p)))
        .collect::<Result<_>>()?;
    dated.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
    let mut volumes: Vec<&str> = dated.iter().map(|(_, p)| p.volume.as_str()).collect();
    volumes.sort();
    volumes.dedup();
    type Bucket = fn(&DateTime<Utc>, &Point) -> String;
    let rules: [(&'static str, u32, Bucket); 5] = [
        ("last", keep.keep_last, |_, p| p.id.clone()),
        ("daily", keep.keep_daily, |t, _| {
            t.format("%Y-%m-%d").to_string()
        }),
        ("weekly", keep.keep_weekly, |t, _| {
            let w = t.iso_week();
            format!("{}-{}", w.year(), w.week())
        }),
        ("monthly", keep.keep_monthly, |t, _| {
            t.format("%Y-%m").to_string()
        }),
        ("yearly", keep.keep_yearly, |t, _| {
            t.format("%Y").to_string()
        }),
    ];
    let mut out = Vec::with_capacity(dated.len());
    for volume in volumes {
        let mut left: Vec<u32> = rules.iter().map(|r| r.1).collect();
        let mut last: Vec<Option<String>> = vec![None; rules.len()];
        for (t, p) in dated.iter().filter(|(_, p)| p.volume == volume) {
            let mut reasons = Vec::new();
            for (i, (name, _, bucket)) in rules.iter().enumerate() {
                let b = bucket(t, p);
                if left[i] > 0 && last[i].as_deref() != Some(b.as_str()) {
                    left[i] -= 1;
                    last[i] = Some(b);
                    reasons.push(*name);
                }
            }
            out.push(Decision {
                point: (*p).clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out.sort_by(|a, b| {
        b.point
            .time
            .cmp(&a.point.time)
            .then_with(|| b.point.id.cmp(&a.point.id))
    });
    Ok(out)
}

/// Forgets the points the rules do not keep (of one volume, or of all).
/// With `dry_run`, only reports.
pub async fn forget(
    repo: &Repo,
    keep: &KeepOptions,
    volume: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Decision>> {
    let only = Only {
        volume: volume.map(str::to_string),
        ..Default::default()
    };
    forget_only(repo, keep, &only, dry_run, std::time::Duration::ZERO).await
}

/// Which points a forget considers; the others are neither kept nor removed.
#[derive(Debug, Clone, Default)]
pub struct Only {
    /// Only this volume's points.
    pub volume: Option<String>,
    /// Only points carrying every one of these tags (a policy's own points
    /// in a repository that several policies share).
    pub tags: std::collections::BTreeMap<String, String>,
}

impl Only {
    fn admits(&self, p: &Point) -> bool {
        self.volume.as_ref().is_none_or(|v| &p.volume == v)
            && self.tags.iter().all(|(k, v)| p.tags.get(k) == Some(v))
    }
}

/// As `forget`, over the points `only` admits, waiting up to `wait` for
/// another writer's lease.
pub async fn forget_only(
    repo: &Repo,
    keep: &KeepOptions,
    only: &Only,
    dry_run: bool,
    wait: std::time::Duration,
) -> Result<Vec<Decision>> {
    if keep.is_empty() {
        return Err(RepoError::Invalid(
            "no keep rule given (keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly): refusing to forget every point".into(),
        ));
    }
    let lease = if dry_run {
        None
    } else {
        Some(Lease::acquire_waiting(repo, "skiff forget", wait).await?)
    };
    let run = async {
        let mut points = repo.points().await?;
        points.retain(|p| only.admits(p));
        let decisions = select(&points, keep)?;
        if let Some(lease) = &lease {
            lease.ensure().await?;
            for d in decisions.iter().filter(|d| !d.keep) {
                repo.delete_point(&d.point.id).await?;
            }
        }
        Ok(decisions)
    };
    let result = run.await;
    if let Some(l) = lease {
        l.release().await?;
    }
    result
}

/// Forgets the points named by id or unique id prefix (at least 4 hex
/// digits, as `repo points` prints them). Every id is resolved before
/// anything is removed: an unknown or ambiguous one is an error naming it,
/// and nothing changes. With `dry_run`, only reports.
pub async fn forget_points(
    repo: &Repo,
    ids: &[String],
    dry_run: bool,
    wait: std::time::Duration,
) -> Result<Vec<Decision>> {
    if ids.is_empty() {
        return Err(RepoError::Invalid("no point id given".into()));
    }
    for id in ids {
        if id.len() < 4 || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Invalid(format!(
                "point {id:?}: expected a point id (16 hex digits, or a unique prefix of at least 4)"
            )));
        }
    }
    let lease = if dry_run {
        None
    } else {
        Some(Lease::acquire_waiting(repo, "skiff forget", wait).await?)
    };
    let run = async {
        let (points, unreadable) = repo.scan_points().await?;
        let mut chosen: Vec<&Point> = Vec::new();
        for id in ids {
            let prefix = id.to_ascii_lowercase();
            let matching: Vec<&Point> = points
                .iter()
                .filter(|p| p.id.starts_with(&prefix))
                .collect();
            match matching.as_slice() {
                [one] => chosen.push(one),
                [] => {
                    let damaged = unreadable.iter().find(|u| {
                        u.name
                            .rsplit('/')
                            .next()
                            .is_some_and(|n| n.starts_with(&prefix))
                    });
                    return Err(match damaged {
                        Some(u) => RepoError::corrupt(
                            "repo.forget",
                            &u.name,
                            format!("{} (point {id}); `skiff repo repair` removes it", u.message),
                        ),
                        None => RepoError::NotFound {
                            op: "repo.forget",
                            message: format!(
                                "{}: no restore point {id}; nothing was forgotten",
                                repo.url()
                            ),
                        },
                    });
                }
                many => {
                    return Err(RepoError::Invalid(format!(
                        "point prefix {id:?} is ambiguous: {} match ({}); nothing was forgotten",
                        many.len(),
                        many.iter()
                            .map(|p| p.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        chosen.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        chosen.dedup_by(|a, b| a.id == b.id);
        if let Some(lease) = &lease {
            lease.ensure().await?;
            for p in &chosen {
                repo.delete_point(&p.id).await?;
            }
        }
        Ok(chosen
            .into_iter()
            .map(|p| Decision {
                point: p.clone(),
                keep: false,
                reasons: Vec::new(),
            })
            .collect())
    };
    let result = run.await;
    if let Some(l) = lease {
        l.release().await?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: &str, volume: &str, time: &str) -> Point {
        Point {
            version: 1,
            id: id.into(),
            volume: volume.into(),
            size: 1,
            block_size: 524288,
            time: time.into(),
            parent: None,
            source: "file:x".into(),
            snapshot: None,
            tags: Default::default(),
            root: String::new(),
            depth: 1,
            host: "h".into(),
            stats: Default::default(),
        }
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.point.id.as_str())
            .collect()
    }

    #[test]
    fn gfs_selection() {
        // Two points a day for 60 days ending 2024-03-31 (a Sunday).
        let mut points = Vec::new();
        let end = DateTime::parse_from_rfc3339("2024-03-31T22:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for d in 0..60 {
            for h in [2, 14] {
                let t = end - chrono::Duration::days(d) - chrono::Duration::hours(20 - h);
                points.push(point(&format!("p{d:02}{h:02}"), "vol", &t.to_rfc3339()));
            }
        }
        let keep = KeepOptions {
            keep_last: 3,
            keep_daily: 5,
            keep_weekly: 3,
            keep_monthly: 2,
            ..Default::default()
        };
        let d = select(&points, &keep).unwrap();
        assert_eq!(d.len(), 120);
        let k = kept(&d);
        // last 3: p0014 p0002 p0114; daily: newest of the 5 latest days; weekly: newest
        // of the last 3 ISO weeks (Sundays 03-31, 03-24, 03-17); monthly: March, February.
        assert_eq!(
            k,
            vec!["p0014", "p0002", "p0114", "p0214", "p0314", "p0414", "p0714", "p1414", "p3114"]
        );
        let first = &d[0];
        assert_eq!(first.reasons, vec!["last", "daily", "weekly", "monthly"]);
    }

    #[test]
    fn volumes_are_separate_and_yearly_works() {
        let points = vec![
            point("a1", "a", "2022-06-01T00:00:00Z"),
            point("a2", "a", "2023-06-01T00:00:00Z"),
            point("a3", "a", "2023-07-01T00:00:00Z"),
            point("b1", "b", "2023-01-01T00:00:00Z"),
        ];
        let d = select(
            &points,
            &KeepOptions {
                keep_yearly: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(kept(&d), vec!["a3", "b1"]);
        let d = select(
            &points,
            &KeepOptions {
                keep_yearly: 5,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(kept(&d), vec!["a3", "b1", "a1"]);
    }

    #[tokio::test]
    async fn forget_refuses_without_rules_and_deletes_the_rest() {
        let (_, repo) = crate::repo::testutil::memory_repo().await;
        for (i, t) in [
            "2024-01-01T00:00:00Z",
            "2024-01-02T00:00:00Z",
            "2024-01-03T00:00:00Z",
        ]
        .iter()
        .enumerate()
        {
            repo.write_point(&point(&format!("000000000000000{i}"), "v", t))
                .await
                .unwrap();
        }
        let e = forget(&repo, &KeepOptions::default(), None, false)
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("no keep rule given"), "{e}");
        let keep = KeepOptions {
            keep_last: 1,
            ..Default::default()
        };
        let dry = forget(&repo, &keep, None, true).await.unwrap();
        assert_eq!(dry.iter().filter(|d| !d.keep).count(), 2);
        assert_eq!(
            repo.points().await.unwrap().len(),
            3,
            "a dry run changes nothing"
        );
        forget(&repo, &keep, None, false).await.unwrap();
        let left: Vec<String> = repo
            .points()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(left, vec!["0000000000000002"]);
    }
}
