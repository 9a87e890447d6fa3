//! A path inside one mounted filesystem, as a visitor names it: relative,
//! without `..`, kept as raw bytes (Linux names need not be UTF-8), with a
//! lossless form for URLs and a readable one for pages and messages.

use super::TreeError;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// Longest path the kernel resolves (PATH_MAX, with its NUL).
const MAX_PATH: usize = 4095;
/// Longest name of one component (NAME_MAX).
const MAX_NAME: usize = 255;

/// A normalised relative path: components joined by `/`, no empty, `.` or
/// `..` component; the empty path is the filesystem's root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// The filesystem's root.
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// A path as text (already percent-decoded by the caller).
    pub fn parse(text: &str) -> Result<RelPath, TreeError> {
        RelPath::from_bytes(text.as_bytes())
    }

    /// A path as bytes, refused before the filesystem is touched when it is
    /// absolute, has `..`, an empty component (but a trailing `/`), a NUL, or
    /// is longer than the kernel resolves. `.` components are dropped.
    pub fn from_bytes(bytes: &[u8]) -> Result<RelPath, TreeError> {
        let refuse = |why: &str| TreeError::Refused {
            path: lossy(bytes),
            why: why.to_string(),
        };
        if bytes.contains(&0) {
            return Err(refuse("a path may not contain a NUL byte"));
        }
        if bytes.first() == Some(&b'/') {
            return Err(refuse(
                "absolute paths are refused; give a path inside the filesystem",
            ));
        }
        if bytes.len() > MAX_PATH {
            return Err(refuse("path is longer than 4095 bytes"));
        }
        let body = bytes.strip_suffix(b"/").unwrap_or(bytes);
        let mut out = RelPath::root();
        if body.is_empty() {
            return Ok(out);
        }
        for part in body.split(|b| *b == b'/') {
            match part {
                b"" => return Err(refuse("empty path component (`//`)")),
                b".." => return Err(refuse("`..` is refused")),
                b"." => {}
                name if name.len() > MAX_NAME => {
                    return Err(refuse("a name is longer than 255 bytes"))
                }
                name => out.push_bytes(name),
            }
        }
        Ok(out)
    }

    /// The lossless URL form: each component percent-encoded (every byte but
    /// `A-Z a-z 0-9 - . _ ~`), joined by literal `/`.
    pub fn to_url(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for (i, part) in self.components().enumerate() {
            if i > 0 {
                out.push('/');
            }
            for &b in part {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        out
    }

    /// Reads what [`RelPath::to_url`] wrote (the raw, still encoded text).
    /// An encoded separator (`%2F`) or NUL (`%00`) is refused: `to_url` never
    /// writes one, so it can only come from someone probing.
    pub fn from_url(text: &str) -> Result<RelPath, TreeError> {
        let mut bytes = Vec::with_capacity(text.len());
        let raw = text.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != b'%' {
                bytes.push(raw[i]);
                i += 1;
                continue;
            }
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(TreeError::Refused {
                    path: lossy(raw),
                    why: "bad percent-encoding".to_string(),
                });
            };
            if b == b'/' || b == 0 {
                return Err(TreeError::Refused {
                    path: lossy(raw),
                    why: "encoded `/` or NUL is refused".to_string(),
                });
            }
            bytes.push(b);
            i += 3;
        }
        RelPath::from_bytes(&bytes)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }

    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|b| *b == b'/').filter(|c| !c.is_empty())
    }

    /// The last component (empty for the root).
    pub fn name(&self) -> &OsStr {
        OsStr::from_bytes(self.components().last().unwrap_or(b""))
    }

    /// The folder holding this path (the root's parent is the root).
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|b| *b == b'/') {
            Some(i) => RelPath(self.0[..i].to_vec()),
            None => RelPath::root(),
        }
    }

    /// This path with one more component (a name read from a directory, so
    /// it holds no `/`).
    pub fn join(&self, name: &OsStr) -> RelPath {
        let mut out = self.clone();
        out.push_bytes(name.as_bytes());
        out
    }

    fn push_bytes(&mut self, name: &[u8]) {
        if !self.0.is_empty() {
            self.0.push(b'/');
        }
        self.0.extend_from_slice(name);
    }

    /// Whether `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    /// This path relative to `base` (which it must start with).
    pub fn strip_prefix(&self, base: &RelPath) -> Option<RelPath> {
        if !self.starts_with(base) {
            return None;
        }
        let rest = &self.0[base.0.len()..];
        Some(RelPath(rest.strip_prefix(b"/").unwrap_or(rest).to_vec()))
    }

    /// The path for `openat2`, relative to the root's fd (`.` for the root).
    pub(crate) fn to_cstring(&self) -> CString {
        let bytes = if self.0.is_empty() {
            b".".to_vec()
        } else {
            self.0.clone()
        };
        CString::new(bytes).expect("RelPath holds no NUL")
    }
}

/// The readable form: `/` and the path, invalid UTF-8 shown as U+FFFD and
/// control characters as `?`, so a hostile name cannot forge log lines.
/// Lossy; links and forms use [`RelPath::to_url`].
impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", lossy(&self.0))
    }
}

/// Bytes as readable text (see `Display for RelPath`).
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_bad_paths_are_refused() {
        for bad in [
            "..",
            "a/../../x",
            "a/..",
            "/etc/passwd",
            "/",
            "a//b",
            "a\0b",
            "../x",
        ] {
            let err = RelPath::parse(bad).unwrap_err();
            assert!(matches!(err, TreeError::Refused { .. }), "{bad:?}: {err}");
        }
        assert!(RelPath::parse(&"x".repeat(256)).is_err());
        assert!(RelPath::parse(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(RelPath::parse("").unwrap(), RelPath::root());
        assert_eq!(RelPath::parse(".").unwrap(), RelPath::root());
        assert_eq!(RelPath::parse("./").unwrap(), RelPath::root());
        assert_eq!(RelPath::parse("a/./b/").unwrap().as_bytes(), b"a/b");
        // Backslash is an ordinary character of a Linux name.
        assert_eq!(RelPath::parse("a\\..\\b").unwrap().as_bytes(), b"a\\..\\b");
        let p = RelPath::parse("etc/ssh/sshd_config").unwrap();
        assert_eq!(p.name(), "sshd_config");
        assert_eq!(p.parent().as_bytes(), b"etc/ssh");
        assert_eq!(p.parent().parent().parent(), RelPath::root());
        assert_eq!(p.to_string(), "/etc/ssh/sshd_config");
        let etc = RelPath::parse("etc").unwrap();
        assert!(p.starts_with(&etc) && !RelPath::parse("etcx").unwrap().starts_with(&etc));
        assert_eq!(p.strip_prefix(&etc).unwrap().as_bytes(), b"ssh/sshd_config");
    }

    #[test]
    fn odd_names_round_trip_through_the_url_form() {
        let names: [&[u8]; 5] = [
            b"with space/and%percent",
            "caf\u{e9}/\u{65e5}\u{672c}".as_bytes(),
            b"bad\xff\xfeutf8/x",
            b"q?a#b&c=d+e",
            b"back\\slash/new\nline",
        ];
        for raw in names {
            let p = RelPath::from_bytes(raw).unwrap();
            let url = p.to_url();
            assert!(url.bytes().all(|b| b.is_ascii_graphic()), "{url}");
            assert_eq!(RelPath::from_url(&url).unwrap(), p, "{url}");
        }
        let p = RelPath::from_bytes(b"bad\xff/new\nline").unwrap();
        assert_eq!(p.to_string(), "/bad\u{fffd}/new?line");
    }

    #[test]
    fn encoded_traversal_is_refused() {
        for bad in [
            "%2e%2e/x", "a/%2E%2E", "a%2Fb", "a%2fb", "%2Fetc", "a%00", "a%zz", "a%4",
        ] {
            assert!(RelPath::from_url(bad).is_err(), "{bad}");
        }
        assert_eq!(RelPath::from_url("a%20b").unwrap().as_bytes(), b"a b");
    }
}
