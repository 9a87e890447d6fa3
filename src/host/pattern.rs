//! Lua 5.4's string patterns, ported from lstrlib.c (5.4.9) with the same
//! results and error messages, but every step counted: C's matcher runs
//! where no hook reaches, so `string.find(("a"):rep(3e4), ".-.-.-.-.-.-b")`
//! ran for minutes whatever the budget. Here the steps are charged to the
//! call's budget every [`CHARGE_EVERY`], which also checks its deadline,
//! cancel and signals. The Lua halves (argument checks, the `gsub` loop for
//! function and table replacements) are in `guard.lua`.

const MAXCCALLS: usize = 200;
const MAXCAPTURES: usize = 32;
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;
const ESC: u8 = b'%';
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Steps counted between two charges to the budget.
const CHARGE_EVERY: u64 = 1024;

/// Why matching did not finish: a pattern error (raised as Lua raises it),
/// a stop (the budget, deadline, …) with its message, or a result larger
/// than the VM's memory limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    Error(String),
    Stop(String),
    Memory,
}

fn error<T>(m: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Error(m.into()))
}

/// A capture: a substring (byte range) or a position (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    Str(usize, usize),
    Pos(usize),
}

/// Counts steps and asks `charge` (with the count) whether to go on.
pub trait Meter {
    fn charge(&mut self, steps: u64) -> Result<(), String>;
}

impl<F: FnMut(u64) -> Result<(), String>> Meter for F {
    fn charge(&mut self, steps: u64) -> Result<(), String> {
        self(steps)
    }
}

struct Matcher<'a, M: Meter> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, isize); MAXCAPTURES],
    depth: usize,
    steps: u64,
    meter: &'a mut M,
}

fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace: also \v, which Rust's is_ascii_whitespace leaves out.
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() {
        res
    } else {
        !res
    }
}

impl<'a, M: Meter> Matcher<'a, M> {
    fn new(src: &'a [u8], pat: &'a [u8], meter: &'a mut M) -> Self {
        Matcher {
            src,
            pat,
            level: 0,
            capture: [(0, 0); MAXCAPTURES],
            depth: MAXCCALLS,
            steps: 0,
            meter,
        }
    }

    fn reprep(&mut self) {
        self.depth = MAXCCALLS;
        self.level = 0;
    }

    /// Counts `n` steps; charges them once enough have gathered.
    fn step(&mut self, n: u64) -> Result<(), Fail> {
        self.steps += n;
        if self.steps >= CHARGE_EVERY {
            let steps = std::mem::take(&mut self.steps);
            self.meter.charge(steps).map_err(Fail::Stop)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Fail> {
        let steps = std::mem::take(&mut self.steps);
        self.meter.charge(steps).map_err(Fail::Stop)
    }

    /// The subject's byte at `i`; C reads the terminating NUL at the end.
    fn s_at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    fn p_at(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    fn check_capture(&self, l: u8) -> Result<usize, Fail> {
        let l = l as i32 - b'1' as i32;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CAP_UNFINISHED {
            return error(format!("invalid capture index %{}", l + 1));
        }
        Ok(l as usize)
    }

    fn capture_to_close(&self) -> Result<usize, Fail> {
        (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CAP_UNFINISHED)
            .map_or_else(|| error("invalid pattern capture"), Ok)
    }

    fn class_end(&mut self, mut p: usize) -> Result<usize, Fail> {
        let start = p;
        let c = self.pat[p];
        p += 1;
        let end = match c {
            ESC => {
                if p == self.pat.len() {
                    return error("malformed pattern (ends with '%')");
                }
                p + 1
            }
            b'[' => {
                if self.p_at(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p == self.pat.len() {
                        return error("malformed pattern (missing ']')");
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p_at(p) == b']' {
                        break;
                    }
                }
                p + 1
            }
            _ => p,
        };
        self.step((end - start) as u64 / 8)?;
        Ok(end)
    }

    fn bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            let pc = self.pat[p];
            if pc == ESC {
                p += 1;
                if match_class(c, self.p_at(p)) {
                    return sig;
                }
            } else if self.p_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
        !sig
    }

    fn single_match(&mut self, s: usize, p: usize, ep: usize) -> Result<bool, Fail> {
        if s >= self.src.len() {
            return Ok(false);
        }
        let c = self.src[s];
        Ok(match self.pat[p] {
            b'.' => true,
            ESC => match_class(c, self.p_at(p + 1)),
            b'[' => {
                self.step((ep - p) as u64 / 8)?;
                self.bracket_class(c, p, ep - 1)
            }
            pc => pc == c,
        })
    }

    fn match_balance(&mut self, mut s: usize, p: usize) -> Result<Option<usize>, Fail> {
        if p + 1 >= self.pat.len() {
            return error("malformed pattern (missing arguments to '%b')");
        }
        if self.s_at(s) != self.pat[p] {
            return Ok(None);
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        let mut cont: u64 = 1;
        loop {
            s += 1;
            if s >= self.src.len() {
                return Ok(None);
            }
            self.step(1)?;
            let c = self.src[s];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                cont += 1;
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        let mut i = 0;
        while self.single_match(s + i, p, ep)? {
            i += 1;
            self.step(1)?;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Fail> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single_match(s, p, ep)? {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, Fail> {
        if self.level >= MAXCAPTURES {
            return error("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        let l = self.capture_to_close()?;
        self.capture[l].1 = (s - self.capture[l].0) as isize;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CAP_UNFINISHED;
        }
        Ok(r)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> Result<Option<usize>, Fail> {
        let l = self.check_capture(l)?;
        let (init, len) = self.capture[l];
        // A position capture has no text: it never matches (as in C, where
        // its length reads as a huge size).
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.step(len as u64 / 8)?;
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, Fail> {
        if self.depth == 0 {
            return error("pattern too complex");
        }
        self.depth -= 1;
        let r = self.match_here(s, p);
        self.depth += 1;
        r
    }

    fn match_here(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Fail> {
        loop {
            self.step(1)?;
            if p == self.pat.len() {
                return Ok(Some(s));
            }
            match self.pat[p] {
                b'(' => {
                    return if self.p_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CAP_POSITION)
                    } else {
                        self.start_capture(s, p + 1, CAP_UNFINISHED)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                b'$' if p + 1 == self.pat.len() => {
                    return Ok((s == self.src.len()).then_some(s));
                }
                ESC if self.p_at(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(n) => {
                        s = n;
                        p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                ESC if self.p_at(p + 1) == b'f' => {
                    p += 2;
                    if self.p_at(p) != b'[' {
                        return error("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if !self.bracket_class(previous, p, ep - 1)
                        && self.bracket_class(self.s_at(s), p, ep - 1)
                    {
                        p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                ESC if self.p_at(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.p_at(p + 1))? {
                        Some(n) => {
                            s = n;
                            p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p_at(ep);
                    if !self.single_match(s, p, ep)? {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(r) = self.do_match(s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            p = ep + 1;
                        }
                        b'+' => return self.max_expand(s + 1, p, ep),
                        b'*' => return self.max_expand(s, p, ep),
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    /// The match `s..e` as found: where, and the raw capture slots.
    fn found(&self, s: usize, e: usize) -> Found {
        Found {
            start: s,
            end: e,
            slots: self.capture[..self.level].to_vec(),
        }
    }
}

/// `init` (1-based, negative from the end) as a 0-based start; `None` when
/// it starts after the end of a subject `len` long.
pub fn start_of(init: i64, len: usize) -> Option<usize> {
    let pos = if init > 0 {
        init as u64
    } else if init == 0 || init < -(len as i64) {
        1
    } else {
        (len as i64 + init + 1) as u64
    };
    let start = pos - 1;
    (start <= len as u64).then_some(start as usize)
}

fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|c| SPECIALS.contains(c))
}

/// A match: where it is, and its captures as the matcher left them (read
/// lazily, as C does: an unfinished capture is an error only when used).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    slots: Vec<(usize, isize)>,
}

impl Found {
    /// Capture `i` (0-based); without captures, capture 0 is the whole match.
    pub fn capture(&self, i: usize) -> Result<Cap, Fail> {
        if i >= self.slots.len() {
            if i != 0 {
                return error(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Cap::Str(self.start, self.end));
        }
        let (init, len) = self.slots[i];
        match len {
            CAP_UNFINISHED => error("unfinished capture"),
            CAP_POSITION => Ok(Cap::Pos(init + 1)),
            len => Ok(Cap::Str(init, init + len as usize)),
        }
    }

    /// Every capture; with none, the whole match if `whole`, else nothing.
    pub fn captures(&self, whole: bool) -> Result<Vec<Cap>, Fail> {
        let n = if self.slots.is_empty() && whole {
            1
        } else {
            self.slots.len()
        };
        (0..n).map(|i| self.capture(i)).collect()
    }
}

/// `string.find` (`find`) and `string.match`: the first match at or after
/// `init` (1-based, negative from the end).
pub fn find(
    src: &[u8],
    pat: &[u8],
    init: i64,
    plain: bool,
    find: bool,
    meter: &mut impl Meter,
) -> Result<Option<Found>, Fail> {
    let Some(init) = start_of(init, src.len()) else {
        return Ok(None);
    };
    if find && (plain || no_specials(pat)) {
        let hay = &src[init..];
        meter.charge(hay.len() as u64 / 16).map_err(Fail::Stop)?;
        return Ok(memchr::memmem::find(hay, pat).map(|i| Found {
            start: init + i,
            end: init + i + pat.len(),
            slots: Vec::new(),
        }));
    }
    let (anchor, pat) = split_anchor(pat);
    scan(src, pat, init, None, anchor, meter)
}

/// The next match from `from` (0-based) whose end is not `last` — the rule
/// that keeps `gmatch` and `gsub` from matching an empty string twice at
/// one place. With `anchor`, only a match at `from` counts.
pub fn scan(
    src: &[u8],
    pat: &[u8],
    from: usize,
    last: Option<usize>,
    anchor: bool,
    meter: &mut impl Meter,
) -> Result<Option<Found>, Fail> {
    let mut m = Matcher::new(src, pat, meter);
    let mut at = from;
    while at <= src.len() {
        m.reprep();
        if let Some(e) = m.do_match(at, 0)? {
            if Some(e) != last {
                let found = m.found(at, e);
                m.flush()?;
                return Ok(Some(found));
            }
        }
        if anchor {
            break;
        }
        at += 1;
    }
    m.flush()?;
    Ok(None)
}

/// A pattern without its anchor (`^`), and whether it had one.
pub fn split_anchor(pat: &[u8]) -> (bool, &[u8]) {
    match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    }
}

/// Appends a string replacement (`%0`–`%9`, `%%`) for the match `found`.
fn add_s(out: &mut Vec<u8>, src: &[u8], repl: &[u8], found: &Found) -> Result<(), Fail> {
    let mut i = 0;
    while let Some(k) = memchr::memchr(ESC, &repl[i..]) {
        out.extend_from_slice(&repl[i..i + k]);
        let p = i + k + 1;
        match repl.get(p).copied().unwrap_or(0) {
            ESC => out.push(ESC),
            b'0' => out.extend_from_slice(&src[found.start..found.end]),
            d @ b'1'..=b'9' => match found.capture((d - b'1') as usize)? {
                Cap::Str(a, b) => out.extend_from_slice(&src[a..b]),
                Cap::Pos(n) => out.extend_from_slice(n.to_string().as_bytes()),
            },
            _ => return error("invalid use of '%' in replacement string"),
        }
        i = p + 1;
    }
    out.extend_from_slice(&repl[i..]);
    Ok(())
}

/// `string.gsub` with a string (or number) replacement: the result and
/// the number of replacements. The result is built outside Lua's
/// allocator, so it may grow to `max_len` bytes (the VM's memory limit).
pub fn gsub_string(
    src: &[u8],
    pat: &[u8],
    repl: &[u8],
    max: i64,
    max_len: usize,
    meter: &mut impl Meter,
) -> Result<(Vec<u8>, i64), Fail> {
    let (anchor, pat) = split_anchor(pat);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut last = None;
    let mut n = 0;
    while n < max {
        let Some(found) = scan(src, pat, pos, last, anchor, meter)? else {
            break;
        };
        n += 1;
        out.extend_from_slice(&src[pos..found.start]);
        add_s(&mut out, src, repl, &found)?;
        if out.len() > max_len {
            return Err(Fail::Memory);
        }
        meter
            .charge((found.end - pos + repl.len()) as u64 / 16 + 1)
            .map_err(Fail::Stop)?;
        pos = found.end;
        last = Some(found.end);
        if anchor {
            break;
        }
    }
    if out.len() + (src.len() - pos) > max_len {
        return Err(Fail::Memory);
    }
    out.extend_from_slice(&src[pos..]);
    Ok((out, n))
}
