//! Finding entries by name below a folder: a case-insensitive glob (`*`,
//! `?`, `[abc]`, `[a-z]`, `[!abc]`), or a substring when the pattern has no
//! glob character. Depth-first in directory order, one open directory per
//! level, never through a link or into another mount, and bounded in hits,
//! entries looked at, depth and time.

use super::{sys, Entry, RelPath, Root, TreeError};
use std::time::{Duration, Instant};

/// Bounds of one search (the defaults suit one page of results).
#[derive(Debug, Clone)]
pub struct SearchLimits {
    /// Hits returned (default 1,000).
    pub max_results: usize,
    /// Directory entries looked at (default 1,000,000).
    pub max_visited: u64,
    /// Folder levels below the start (default 256; also bounds open fds).
    pub max_depth: usize,
    /// Wall time (default 10 s).
    pub max_time: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        SearchLimits {
            max_results: 1_000,
            max_visited: 1_000_000,
            max_depth: 256,
            max_time: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct SearchResult {
    /// Sorted by path.
    pub hits: Vec<(RelPath, Entry)>,
    /// A limit stopped the search: there may be more.
    pub truncated: bool,
}

/// Longest pattern accepted (a name is at most 255 bytes).
const MAX_PATTERN: usize = 255;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Lit(char),
    Any,
    Star,
    /// `[...]`: ranges, negated with `!` or `^`.
    Class(bool, Vec<(char, char)>),
}

/// A compiled pattern.
#[derive(Debug)]
pub(crate) enum Matcher {
    Substring(String),
    Glob(Vec<Token>),
}

impl Matcher {
    pub(crate) fn new(pattern: &str) -> Result<Matcher, TreeError> {
        let refuse = |why: &str| TreeError::Refused {
            path: pattern.to_string(),
            why: why.to_string(),
        };
        if pattern.is_empty() {
            return Err(refuse("empty search pattern"));
        }
        if pattern.len() > MAX_PATTERN {
            return Err(refuse("search pattern is longer than 255 bytes"));
        }
        let lower = pattern.to_lowercase();
        if !lower.contains(['*', '?', '[']) {
            return Ok(Matcher::Substring(lower));
        }
        let chars: Vec<char> = lower.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => match class(&chars[i + 1..]) {
                    Some((token, used)) => {
                        tokens.push(token);
                        i += used;
                    }
                    // An unclosed `[` is an ordinary character.
                    None => tokens.push(Token::Lit('[')),
                },
                c => tokens.push(Token::Lit(c)),
            }
            i += 1;
        }
        Ok(Matcher::Glob(tokens))
    }

    /// Whether a name matches, compared in lower case (invalid UTF-8 as U+FFFD).
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        let name = String::from_utf8_lossy(name).to_lowercase();
        match self {
            Matcher::Substring(s) => name.contains(s.as_str()),
            Matcher::Glob(tokens) => glob(tokens, &name.chars().collect::<Vec<_>>()),
        }
    }
}

/// The class after a `[`: its token and how many chars it used (with `]`).
fn class(rest: &[char]) -> Option<(Token, usize)> {
    let negated = matches!(rest.first(), Some('!' | '^'));
    let mut i = usize::from(negated);
    let mut ranges = Vec::new();
    // A `]` right after `[` or `[!` is a member.
    let mut first = true;
    while i < rest.len() {
        let c = rest[i];
        if c == ']' && !first {
            return Some((Token::Class(negated, ranges), i + 1));
        }
        first = false;
        if rest.get(i + 1) == Some(&'-') && rest.get(i + 2).is_some_and(|e| *e != ']') {
            ranges.push((c, rest[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

/// Matching with one remembered `*` to return to: O(name × pattern).
fn glob(tokens: &[Token], name: &[char]) -> bool {
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(Token::Any) => true,
            Some(Token::Lit(c)) => *c == name[n],
            Some(Token::Class(neg, ranges)) => {
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&name[n])) != *neg
            }
            None => false,
        };
        if step {
            t += 1;
            n += 1;
        } else if let Some((st, sn)) = star {
            t = st + 1;
            n = sn + 1;
            star = Some((st, sn + 1));
        } else {
            return false;
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

impl Root {
    /// Entries below `start` whose name matches `pattern`.
    pub fn search(
        &self,
        start: &RelPath,
        pattern: &str,
        limits: &SearchLimits,
    ) -> Result<SearchResult, TreeError> {
        let matcher = Matcher::new(pattern)?;
        let deadline = Instant::now() + limits.max_time;
        let (dir, top) = self.open_dir(start)?;
        let mut stack = vec![(dir, start.clone())];
        let mut hits = Vec::new();
        let mut visited = 0u64;
        let mut truncated = false;
        'walk: while let Some(depth) = stack.len().checked_sub(1) {
            let (dir, path) = &mut stack[depth];
            let Some(next) = dir.next_entry() else {
                stack.pop();
                continue;
            };
            // An unreadable folder is passed over, as `find` would.
            let Ok(ent) = next else {
                stack.pop();
                continue;
            };
            visited += 1;
            if visited > limits.max_visited || (visited % 256 == 0 && Instant::now() > deadline) {
                truncated = true;
                break;
            }
            let child = path.join(&ent.name);
            let name = sys::c_name(&ent.name);
            let mut is_dir = ent.d_type == libc::DT_DIR;
            if matcher.matches(ent.name.as_encoded_bytes()) {
                if let Ok(entry) = self.entry_at(dir.fd(), &name, ent.name.clone()) {
                    is_dir = entry.is_dir();
                    hits.push((child.clone(), entry));
                    if hits.len() >= limits.max_results {
                        truncated = true;
                        break 'walk;
                    }
                }
            } else if ent.d_type == libc::DT_UNKNOWN {
                is_dir = sys::lstat_at(dir.fd(), &name)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
            }
            if !is_dir {
                continue;
            }
            if depth >= limits.max_depth {
                truncated = true;
                continue;
            }
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            let Ok(fd) = sys::open_beneath(dir.fd(), &name, flags) else {
                continue; // another mount (EXDEV), gone, or unreadable
            };
            let same_fs = sys::lstat_at(std::os::fd::AsFd::as_fd(&fd), c"")
                .is_ok_and(|st| st.st_dev == top.dev);
            if let (true, Ok(sub)) = (same_fs, sys::DirStream::new(fd)) {
                stack.push((sub, child));
            }
        }
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(SearchResult { hits, truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_case_insensitively() {
        let table: &[(&str, &str, bool)] = &[
            ("conf", "sshd_CONFIG", true),
            ("conf", "passwd", false),
            ("*.conf", "Resolv.CONF", true),
            ("*.conf", "resolv.conf.bak", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[abc]x", "bx", true),
            ("[!abc]x", "bx", false),
            ("[a-c]*", "Cat", true),
            ("[]]", "]", true),
            ("*a*b*c*", "xaxbxcx", true),
            ("*a*b*c*", "xaxcxbx", false),
            ("f[", "f[", true),
            ("caf\u{c9}*", "caf\u{e9}.txt", true),
            ("**", "", true),
        ];
        for (pattern, name, want) in table {
            let m = Matcher::new(pattern).unwrap();
            assert_eq!(m.matches(name.as_bytes()), *want, "{pattern} ~ {name}");
        }
        assert!(Matcher::new("").is_err());
        assert!(Matcher::new(&"*".repeat(300)).is_err());
    }

    #[test]
    fn a_long_hostile_name_matches_quickly() {
        let m = Matcher::new(&"*a".repeat(100)).unwrap();
        let name = "a".repeat(99) + "b";
        let t = Instant::now();
        assert!(!m.matches(name.as_bytes()));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
