//! The option types operations share: where data is (a location with the
//! account, region and password that reach it), and which parent a copy
//! builds on. Read from Lua tables, task JSON or command-line arguments
//! alike; written back for a worker's task.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::cloud::S3Endpoint;
use crate::mover::Location;
use crate::repo::password::PasswordSource;
use crate::repo::RepoUrl;

/// A copy's end: `"file:…"`, or `{location = "…", account = …, region = …,
/// password = …, s3_endpoint = …}` (a repository's own password source and
/// S3 endpoint, when the two repositories of a copy differ in them).
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub location: Location,
    pub account: Option<String>,
    pub region: Option<String>,
    pub password: Option<PasswordSource>,
    pub s3_endpoint: Option<S3Endpoint>,
}

impl Place {
    pub fn at(location: Location) -> Place {
        Place {
            location,
            account: None,
            region: None,
            password: None,
            s3_endpoint: None,
        }
    }
}

const PLACE_FIELDS: &[&str] = &["location", "account", "region", "password", "s3_endpoint"];

impl<'de> Deserialize<'de> for Place {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Place;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a location string or a {location = …, account = …, region = …} table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Place, E> {
                Ok(Place::at(s.parse().map_err(E::custom)?))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Place, A::Error> {
                let (mut location, mut account, mut region, mut password, mut s3_endpoint) =
                    (None::<String>, None, None, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "location" => location = Some(m.next_value()?),
                        "account" => account = Some(m.next_value()?),
                        "region" => region = Some(m.next_value()?),
                        "password" => password = Some(m.next_value()?),
                        "s3_endpoint" => s3_endpoint = Some(m.next_value()?),
                        _ => return Err(de::Error::unknown_field(&k, PLACE_FIELDS)),
                    }
                }
                let location = location.ok_or_else(|| de::Error::missing_field("location"))?;
                Ok(Place {
                    location: location.parse().map_err(de::Error::custom)?,
                    account,
                    region,
                    password,
                    s3_endpoint,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Place {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.account.is_none()
            && self.region.is_none()
            && self.password.is_none()
            && self.s3_endpoint.is_none()
        {
            return s.serialize_str(&self.location.to_string());
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("location", &self.location.to_string())?;
        if let Some(a) = &self.account {
            m.serialize_entry("account", a)?;
        }
        if let Some(r) = &self.region {
            m.serialize_entry("region", r)?;
        }
        if let Some(p) = &self.password {
            m.serialize_entry("password", p)?;
        }
        if let Some(e) = &self.s3_endpoint {
            m.serialize_entry("s3_endpoint", e)?;
        }
        m.end()
    }
}

/// A repository's location: a directory or `s3://BUCKET/PREFIX`, with or
/// without `repo:` in front.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoLocation(pub RepoUrl);

impl RepoLocation {
    pub fn parse(s: &str) -> Result<RepoLocation, String> {
        RepoUrl::parse(s.strip_prefix("repo:").unwrap_or(s)).map(RepoLocation)
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.0, RepoUrl::S3 { .. })
    }
}

impl<'de> Deserialize<'de> for RepoLocation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RepoLocation::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for RepoLocation {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// `parent = "id"` or `parent = false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParentArg {
    Id(String),
    Flag(bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_as_written() {
        let s: Place = serde_json::from_value(serde_json::json!("file:/a")).unwrap();
        assert_eq!(serde_json::to_value(&s).unwrap(), "file:/a");
        let t = serde_json::json!({"location": "repo:s3://bkt/p", "region": "eu-west-1",
            "password": {"ssm": "/pw"},
            "s3_endpoint": {"url": "https://bucket.vpce-0123abcd-x.s3.eu-west-1.vpce.amazonaws.com",
                "endpoint": "vpce-0123abcd", "account": "repository", "region": "eu-west-1"}});
        let p: Place = serde_json::from_value(t.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), t);
        let e = serde_json::from_value::<Place>(serde_json::json!("disk.img")).unwrap_err();
        assert!(e.to_string().contains("is not a location"), "{e}");
    }
}
