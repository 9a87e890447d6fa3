//! Locations as users write them, the same in Lua and on the command line:
//! `file:PATH`, `ebs:SNAPSHOT_ID` (a source), `ebs:` (a sink: a new
//! snapshot), `repo:LOCATION[#POINT]` with LOCATION a directory or
//! `s3://BUCKET/PREFIX`.

use std::path::PathBuf;

use crate::repo::RepoUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// A snapshot to read, or None for a new one to write.
    Ebs(Option<String>),
    Repo {
        repo: RepoUrl,
        point: Option<String>,
    },
}

pub const FORMS: &str = "file:PATH, ebs:SNAPSHOT_ID, ebs: or repo:LOCATION[#POINT]";

impl std::str::FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Location, String> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!("{s:?} is not a location: expected {FORMS}"));
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(format!(
                        "{s:?}: file: needs a path, e.g. file:/dev/xvdf or file:disk.img"
                    ));
                }
                Ok(Location::File(PathBuf::from(rest)))
            }
            "ebs" => {
                if rest.is_empty() {
                    return Ok(Location::Ebs(None));
                }
                let valid = rest
                    .strip_prefix("snap-")
                    .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
                if !valid {
                    return Err(format!(
                        "{s:?}: expected ebs:snap-<hex> or ebs: (a new snapshot)"
                    ));
                }
                Ok(Location::Ebs(Some(rest.to_string())))
            }
            "repo" => {
                let (loc, point) = match rest.rsplit_once('#') {
                    Some((l, p)) => {
                        if p.is_empty() {
                            return Err(format!(
                                "{s:?}: nothing after '#': expected repo:LOCATION#POINT_ID"
                            ));
                        }
                        (l, Some(p.to_string()))
                    }
                    None => (rest, None),
                };
                let repo = RepoUrl::parse(loc).map_err(|e| format!("{s:?}: {e}"))?;
                Ok(Location::Repo { repo, point })
            }
            other => Err(format!(
                "{s:?}: unknown location type {other:?}: expected {FORMS}"
            )),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(p) => write!(f, "file:{}", p.display()),
            Location::Ebs(Some(s)) => write!(f, "ebs:{s}"),
            Location::Ebs(None) => write!(f, "ebs:"),
            Location::Repo {
                repo,
                point: Some(p),
            } => write!(f, "repo:{repo}#{p}"),
            Location::Repo { repo, point: None } => write!(f, "repo:{repo}"),
        }
    }
}

impl Location {
    pub fn needs_aws(&self) -> bool {
        matches!(
            self,
            Location::Ebs(_)
                | Location::Repo {
                    repo: RepoUrl::S3 { .. },
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Location, String> {
        s.parse()
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(
            p("file:/dev/xvdf").unwrap(),
            Location::File("/dev/xvdf".into())
        );
        assert_eq!(
            p("ebs:snap-0123abcd").unwrap(),
            Location::Ebs(Some("snap-0123abcd".into()))
        );
        assert_eq!(p("ebs:").unwrap(), Location::Ebs(None));
        assert_eq!(
            p("repo:/srv/r#0011aabb").unwrap(),
            Location::Repo {
                repo: RepoUrl::Local("/srv/r".into()),
                point: Some("0011aabb".into())
            }
        );
        assert_eq!(
            p("repo:s3://bkt/pre/fix").unwrap(),
            Location::Repo {
                repo: RepoUrl::S3 {
                    bucket: "bkt".into(),
                    prefix: "pre/fix".into()
                },
                point: None
            }
        );
        for s in [
            "file:/x",
            "ebs:snap-1f",
            "ebs:",
            "repo:/a#b1",
            "repo:s3://bkt/p",
        ] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_with_clear_messages() {
        assert_eq!(p("disk.img").unwrap_err(), "\"disk.img\" is not a location: expected file:PATH, ebs:SNAPSHOT_ID, ebs: or repo:LOCATION[#POINT]");
        assert_eq!(
            p("ebs:vol-123").unwrap_err(),
            "\"ebs:vol-123\": expected ebs:snap-<hex> or ebs: (a new snapshot)"
        );
        assert!(p("file:").unwrap_err().contains("needs a path"));
        assert!(p("repo:/r#").unwrap_err().contains("nothing after '#'"));
        assert!(p("nfs:/x")
            .unwrap_err()
            .contains("unknown location type \"nfs\""));
        assert!(p("repo:s3://B/x")
            .unwrap_err()
            .contains("invalid S3 bucket name"));
    }
}
