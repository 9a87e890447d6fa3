//! A repository's S3 endpoint: the address every S3 request for the
//! repository goes to (an S3 interface endpoint's, for workers in private
//! subnets), and the VPC endpoint it names, which the launch preflight
//! follows.
//!
//! Written as a URL (`https://bucket.vpce-….s3.REGION.vpce.amazonaws.com`,
//! or any address naming its `vpce-…`), as the table `create_endpoint`
//! returned (its regional DNS name becomes the URL), or as `{url = …,
//! account = …, region = …}` when the URL alone does not say where the
//! endpoint lives.

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    pub url: String,
    /// The VPC endpoint (`vpce-…`) behind the URL, when it names one.
    pub endpoint: Option<String>,
    /// The account (a name of skiff.toml) and region the endpoint is in,
    /// when known.
    pub account: Option<String>,
    pub region: Option<String>,
}

impl S3Endpoint {
    /// Reads an address: `http(s)://HOST[:PORT][/PATH]`, without
    /// credentials, query or fragment.
    pub fn parse(url: &str) -> Result<S3Endpoint, String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(u.scheme(), "https" | "http") {
            return Err(format!("{url:?}: expected an https:// address"));
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err(format!("{url:?}: the address names no host"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "{url:?}: an endpoint address carries no credentials"
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(format!(
                "{url:?}: an endpoint address has no query or fragment"
            ));
        }
        // A path ends in '/', as the SDK puts the bucket right after it.
        let url = match u.path() {
            "" | "/" => url.trim_end_matches('/').to_string(),
            _ => format!("{}/", url.trim_end_matches('/')),
        };
        Ok(S3Endpoint {
            endpoint: endpoint_in(&u),
            region: region_in(u.host_str().unwrap_or_default()),
            account: None,
            url,
        })
    }

    /// The address of an S3 interface endpoint as `create_endpoint`
    /// describes it: `https://bucket.` and its regional DNS name (AWS's
    /// documented name for bucket requests through the endpoint).
    fn from_endpoint_table(t: &serde_json::Value) -> Result<S3Endpoint, String> {
        let s = |k: &str| t.get(k).and_then(|v| v.as_str());
        let id = s("id").ok_or("the endpoint table has no id")?;
        if s("service") != Some("s3") {
            return Err(format!(
                "{id} is an endpoint for {}, not S3",
                s("service").unwrap_or("another service")
            ));
        }
        if s("endpoint_type") == Some("Gateway") {
            return Err(format!(
                "{id} is a gateway endpoint, which has no address of its own and is not reachable over peering; give an S3 interface endpoint"
            ));
        }
        let names: Vec<&str> = t
            .get("dns_names")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        // The regional name is the shortest: zonal ones add the zone.
        let regional = names
            .iter()
            .map(|n| n.trim_start_matches("*."))
            .min_by_key(|n| n.len())
            .ok_or_else(|| {
                format!(
                    "{id} has no DNS names (state {})",
                    s("state").unwrap_or("?")
                )
            })?;
        let mut e = S3Endpoint::parse(&format!("https://bucket.{regional}"))?;
        e.endpoint = Some(id.to_string());
        e.account = s("account").map(str::to_string);
        e.region = s("region").map(str::to_string).or(e.region);
        Ok(e)
    }
}

/// `vpce-<hex>` in a host label (AWS's names: `vpce-0abc…-xyz.s3…`) or a
/// path segment of the address.
fn endpoint_in(u: &url::Url) -> Option<String> {
    let host = u.host_str().unwrap_or_default();
    let segments = u.path_segments().into_iter().flatten();
    host.split('.').chain(segments).find_map(|part| {
        let hex = part.strip_prefix("vpce-")?;
        let hex = hex.split('-').next().unwrap_or_default();
        ((8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("vpce-{hex}"))
    })
}

/// The region of an AWS endpoint name (`….s3.REGION.vpce.amazonaws.com`).
fn region_in(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let i = labels.iter().position(|l| *l == "vpce")?;
    (i >= 1 && labels.get(i + 1) == Some(&"amazonaws") && super::valid_region(labels[i - 1]))
        .then(|| labels[i - 1].to_string())
}

impl std::fmt::Display for S3Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Some(id) if !self.url.contains(id.as_str()) => write!(f, "{} ({id})", self.url),
            _ => f.write_str(&self.url),
        }
    }
}

impl<'de> Deserialize<'de> for S3Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let fail = |m: String| de::Error::custom(m);
        match &v {
            serde_json::Value::String(s) => S3Endpoint::parse(s).map_err(fail),
            serde_json::Value::Object(m) if m.get("kind").and_then(|k| k.as_str()) == Some("endpoint") => {
                S3Endpoint::from_endpoint_table(&v).map_err(fail)
            }
            serde_json::Value::Object(m) => {
                const FIELDS: &[&str] = &["url", "endpoint", "account", "region"];
                if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                    return Err(de::Error::unknown_field(k, FIELDS));
                }
                let s = |k: &str| -> Result<Option<String>, D::Error> {
                    match m.get(k) {
                        None | Some(serde_json::Value::Null) => Ok(None),
                        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(fail(format!("{k}: expected a string"))),
                    }
                };
                let url = s("url")?.ok_or_else(|| de::Error::missing_field("url"))?;
                let mut e = S3Endpoint::parse(&url).map_err(fail)?;
                if let Some(id) = s("endpoint")? {
                    e.endpoint = Some(id);
                }
                e.account = s("account")?;
                e.region = s("region")?.or(e.region);
                Ok(e)
            }
            _ => Err(fail(
                "expected the endpoint's URL, the table create_endpoint returned, or {url = …, account = …, region = …}".into(),
            )),
        }
    }
}

impl Serialize for S3Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("url", &self.url)?;
        for (k, v) in [
            ("endpoint", &self.endpoint),
            ("account", &self.account),
            ("region", &self.region),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_aws_address_names_its_endpoint_and_region() {
        let e = S3Endpoint::parse(
            "https://bucket.vpce-0a1b2c3d4e5f60718-abcdefgh.s3.eu-west-1.vpce.amazonaws.com/",
        )
        .unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("vpce-0a1b2c3d4e5f60718"));
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert!(!e.url.ends_with('/'));
        let path = S3Endpoint::parse("http://127.0.0.1:5000/skiff/vpce/vpce-1234abcd").unwrap();
        assert_eq!(path.url, "http://127.0.0.1:5000/skiff/vpce/vpce-1234abcd/");
        let odd =
            S3Endpoint::parse("https://bucket.vpce-12345678.s3.mars.vpce.amazonaws.com").unwrap();
        assert_eq!(odd.region, None, "not a region name");
        let p = S3Endpoint::parse("http://127.0.0.1:5000/skiff/vpce/vpce-1234abcd").unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("vpce-1234abcd"));
        assert_eq!(p.region, None);
    }

    #[test]
    fn bad_addresses_are_refused_saying_why() {
        for (url, why) in [
            ("s3.amazonaws.com", "not a URL"),
            ("ftp://x.example", "https://"),
            ("https://u:secret@x.example", "no credentials"),
            ("https://x.example/?a=1", "no query"),
        ] {
            let e = S3Endpoint::parse(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn the_table_of_create_endpoint_gives_the_regional_bucket_address() {
        let t = json!({"kind": "endpoint", "id": "vpce-0123456789abcdef0", "service": "s3",
            "endpoint_type": "Interface", "account": "repository", "region": "us-east-1",
            "dns_names": ["*.vpce-0123456789abcdef0-x1.s3.us-east-1.vpce.amazonaws.com",
                          "*.vpce-0123456789abcdef0-x1-us-east-1a.s3.us-east-1.vpce.amazonaws.com"]});
        let e: S3Endpoint = serde_json::from_value(t.clone()).unwrap();
        assert_eq!(
            e.url,
            "https://bucket.vpce-0123456789abcdef0-x1.s3.us-east-1.vpce.amazonaws.com"
        );
        assert_eq!(e.account.as_deref(), Some("repository"));
        // As a task carries it, and back.
        let back: S3Endpoint = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        let mut gw = t.clone();
        gw["endpoint_type"] = json!("Gateway");
        let err = serde_json::from_value::<S3Endpoint>(gw).unwrap_err();
        assert!(err.to_string().contains("gateway endpoint"), "{err}");
        let mut sqs = t;
        sqs["service"] = json!("sqs");
        let err = serde_json::from_value::<S3Endpoint>(sqs).unwrap_err();
        assert!(err.to_string().contains("for sqs, not S3"), "{err}");
    }
}
