//! What a request asks for, decoded byte by byte: the query's and a
//! form's values (names may be any bytes, so no UTF-8 is assumed), the
//! selected paths — refused, through [`RelPath`], when absolute or holding
//! `..`, an encoded `/` or NUL — and who asked.

use std::net::SocketAddr;

use axum::http::request::Parts;

use super::tree::RelPath;

/// The peer's address, put on each request by the server.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// `application/x-www-form-urlencoded` pairs (a query or a form body),
/// percent-decoded to bytes.
pub fn pairs(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let dec = |x: &[u8]| -> Vec<u8> {
        let plus: Vec<u8> = x
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&plus).collect()
    };
    body.split(|b| *b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = it.next().unwrap_or_default();
            (dec(k), dec(it.next().unwrap_or_default()))
        })
        .collect()
}

/// The query's values for `key`.
pub fn query_values(req: &Parts, key: &str) -> Vec<Vec<u8>> {
    let q = req.uri.query().unwrap_or("");
    pairs(q.as_bytes())
        .into_iter()
        .filter(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v)
        .collect()
}

pub fn query_str(req: &Parts, key: &str) -> Option<String> {
    query_values(req, key)
        .into_iter()
        .next()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub fn client(req: &Parts) -> String {
    req.extensions
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default()
}

/// The path in a URL after its prefix: repeated slashes are one, as in
/// any path; the rest is [`RelPath::from_url`]'s.
pub fn rel_from_url(raw: &str) -> Result<RelPath, String> {
    let joined = raw
        .split('/')
        .filter(|c| !c.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    RelPath::from_url(&joined).map_err(|e| e.to_string())
}

/// A path given as a (decoded) query or form value.
pub fn rel_from_value(v: &[u8]) -> Result<RelPath, String> {
    RelPath::from_bytes(v).map_err(|e| e.to_string())
}

/// The `item` values of the query: what a person selected.
pub fn selected(req: &Parts) -> Result<Vec<RelPath>, String> {
    let items = query_values(req, "item");
    if items.is_empty() {
        return Err("select at least one file or folder".into());
    }
    items.iter().map(|b| rel_from_value(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_in_any_encoding_is_refused() {
        assert_eq!(rel_from_url("a%20b/c").unwrap().as_bytes(), b"a b/c");
        assert!(rel_from_url("a/../b").is_err());
        assert!(rel_from_url("a/%2e%2e/b").is_err());
        assert!(rel_from_url("a%2Fb").is_err());
        assert!(rel_from_url("a%2f..%2fb").is_err());
        assert!(rel_from_url("a%00b").is_err());
        assert_eq!(rel_from_url("//a//b/").unwrap().as_bytes(), b"a/b");
        assert!(rel_from_value(b"/etc/passwd").is_err());
        assert!(rel_from_value(b"x/../../y").is_err());
    }

    #[test]
    fn pairs_are_bytes() {
        assert_eq!(
            pairs(b"item=a%2Fb+c&overwrite=1&download&x=%FF"),
            vec![
                (b"item".to_vec(), b"a/b c".to_vec()),
                (b"overwrite".to_vec(), b"1".to_vec()),
                (b"download".to_vec(), Vec::new()),
                (b"x".to_vec(), vec![0xFF]),
            ]
        );
    }
}
