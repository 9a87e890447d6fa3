//! A small fuzzer that runs on stable Rust: structured mutations of a seed
//! corpus with a seeded PRNG, inputs kept when they end in an outcome not
//! seen before (a cheap stand-in for coverage), and three detectors — a
//! panic anywhere in the process (the hook records it), memory (a counting
//! global allocator: one allocation above [`SINGLE_LIMIT`], or live bytes
//! growing by more than [`LIVE_LIMIT`] during one input) and time (a
//! watchdog thread: an input running longer than its limit ends the process
//! after printing it). A failing input is saved under `fuzz/artifacts/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// One allocation larger than this, while an input runs, is a finding: no
/// parser needs it for inputs of this size (a block is 512 KiB, a pack 32 MiB
/// but packs are never read whole).
pub const SINGLE_LIMIT: usize = 32 << 20;
/// Live bytes growing by more than this while one input runs is a finding.
pub const LIVE_LIMIT: usize = 256 << 20;
/// Inputs never grow beyond this.
const MAX_INPUT: usize = 2 << 20;
/// Inputs kept per target, seeds included.
const MAX_CORPUS: usize = 2000;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BIGGEST: AtomicUsize = AtomicUsize::new(0);

/// Counts live bytes and notes the largest allocation made while armed.
pub struct Counting;

/// Where the first allocation above the limit was made, during this input.
static BIG_AT: Mutex<Option<std::backtrace::Backtrace>> = Mutex::new(None);
/// Where live memory first grew past the limit, during this input.
static GREW_AT: Mutex<Option<std::backtrace::Backtrace>> = Mutex::new(None);
/// Live bytes when the input started.
static BASELINE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static IN_NOTE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Counting {
    fn note(size: usize) {
        if ARMED.load(Ordering::Relaxed) {
            BIGGEST.fetch_max(size, Ordering::Relaxed);
            if size > SINGLE_LIMIT {
                Self::capture(&BIG_AT);
            }
        }
    }

    fn grew(by: usize) {
        let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        let peak = PEAK.fetch_max(live, Ordering::Relaxed);
        if live > peak
            && ARMED.load(Ordering::Relaxed)
            && live.saturating_sub(BASELINE.load(Ordering::Relaxed)) > LIVE_LIMIT
        {
            Self::capture(&GREW_AT);
        }
    }

    /// Notes where this allocation is made, the first time in an input.
    fn capture(slot: &Mutex<Option<std::backtrace::Backtrace>>) {
        if !IN_NOTE.with(|c| c.replace(true)) {
            // Capturing allocates (small amounts): not noted again.
            if let Ok(mut at) = slot.try_lock() {
                if at.is_none() {
                    *at = Some(std::backtrace::Backtrace::force_capture());
                }
            }
            IN_NOTE.with(|c| c.set(false));
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::note(layout.size());
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::note(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// The input being run, for the watchdog and the panic hook.
struct Current {
    target: String,
    input: Arc<Vec<u8>>,
    started: Instant,
    limit: Duration,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);
static PANIC: Mutex<Option<String>> = Mutex::new(None);
static SETUP: Once = Once::new();

fn install() {
    SETUP.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ARMED.load(Ordering::SeqCst) {
                let mut slot = PANIC.lock().unwrap_or_else(|e| e.into_inner());
                if slot.is_none() {
                    let thread = std::thread::current();
                    *slot = Some(format!(
                        "{info} (thread {})",
                        thread.name().unwrap_or("unnamed")
                    ));
                }
            } else {
                default(info);
            }
        }));
        std::thread::Builder::new()
            .name("fuzz watchdog".into())
            .spawn(watchdog)
            .expect("the watchdog thread");
    });
}

fn watchdog() {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cur.as_ref() {
            if ARMED.load(Ordering::SeqCst) && c.started.elapsed() > c.limit {
                let path = save(&c.target, &c.input);
                eprintln!(
                    "\nfuzz {}: an input has run for more than {:?} (a hang); saved as {}\n{}",
                    c.target,
                    c.limit,
                    path.display(),
                    hex_excerpt(&c.input)
                );
                std::process::exit(101);
            }
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn name_of(input: &[u8]) -> String {
    hex::encode(&skiff::repo::crypto::sha256(input)[..8])
}

/// Saves a failing input under `fuzz/artifacts/<target>/`.
fn save(target: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("artifacts").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name_of(input));
    let _ = std::fs::write(&path, input);
    path
}

fn hex_excerpt(input: &[u8]) -> String {
    if input.len() <= 2048 {
        format!("input ({} bytes): {}", input.len(), hex::encode(input))
    } else {
        format!(
            "input ({} bytes), first 2048: {}…",
            input.len(),
            hex::encode(&input[..2048])
        )
    }
}

/// Regression inputs checked in under `fuzz/corpus/<target>/`, by name.
pub fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let p = e.path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// What one input did.
enum Verdict {
    Fine(String),
    Failed(String),
}

/// Runs one input under the detectors.
fn run_one(
    target: &str,
    limit: Duration,
    run: &dyn Fn(&[u8]) -> Result<String, String>,
    input: &Arc<Vec<u8>>,
) -> Verdict {
    *CURRENT.lock().unwrap() = Some(Current {
        target: target.to_string(),
        input: input.clone(),
        started: Instant::now(),
        limit,
    });
    let before = LIVE.load(Ordering::SeqCst);
    BASELINE.store(before, Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    BIGGEST.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(input)));
    ARMED.store(false, Ordering::SeqCst);
    *CURRENT.lock().unwrap() = None;
    let panicked = PANIC.lock().unwrap().take();
    let biggest = BIGGEST.load(Ordering::SeqCst);
    let grew = PEAK.load(Ordering::SeqCst).saturating_sub(before);
    if let Some(p) = panicked {
        return Verdict::Failed(format!("panicked: {p}"));
    }
    let big_at = BIG_AT.lock().unwrap().take();
    if biggest > SINGLE_LIMIT {
        return Verdict::Failed(format!(
            "allocated {biggest} bytes at once (limit {SINGLE_LIMIT}); the first such allocation:\n{}",
            big_at.map(|b| short_trace(&b.to_string())).unwrap_or_default()
        ));
    }
    let grew_at = GREW_AT.lock().unwrap().take();
    if grew > LIVE_LIMIT {
        return Verdict::Failed(format!(
            "live memory grew by {grew} bytes (limit {LIVE_LIMIT}); where it passed the limit:\n{}",
            grew_at
                .map(|b| short_trace(&b.to_string()))
                .unwrap_or_default()
        ));
    }
    match result {
        Ok(Ok(s)) => Verdict::Fine(format!("ok: {s}")),
        Ok(Err(e)) => Verdict::Fine(format!("err: {e}")),
        Err(_) => Verdict::Failed("panicked".into()),
    }
}

/// A backtrace's frames in skiff's own code.
fn short_trace(full: &str) -> String {
    let lines: Vec<&str> = full.lines().collect();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("skiff::") && !l.contains("fuzzing::") {
            out.push_str(l.trim());
            if let Some(at) = lines
                .get(i + 1)
                .filter(|n| n.trim_start().starts_with("at "))
            {
                out.push_str(&format!(" ({})", at.trim().trim_start_matches("at ")));
            }
            out.push('\n');
        }
    }
    out
}

/// An outcome with its numbers, ids and quoted text blanked, so inputs
/// that differ only in a count, an id or a value end alike.
fn signature(outcome: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let id = word.len() >= 16 && word.bytes().all(|b| b.is_ascii_hexdigit());
        if word.bytes().any(|b| b.is_ascii_digit()) || id {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    // Quoted text (field names, values) is the input's, not the parser's:
    // all of it, from the first quote to the last of the same kind.
    let mut text = outcome.to_string();
    for q in ['`', '"'] {
        if let (Some(a), Some(b)) = (text.find(q), text.rfind(q)) {
            if a < b {
                text.replace_range(a + 1..b, "");
            }
        }
    }
    for c in text.chars().take(300) {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    // The start of a message says what went wrong; the rest is detail.
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(100).collect()
}

/// SplitMix64: small, fast, and the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    12,
    16,
    31,
    32,
    33,
    44,
    47,
    48,
    49,
    64,
    127,
    128,
    255,
    256,
    1023,
    1024,
    4095,
    4096,
    4097,
    65535,
    65536,
    131_084,
    524_287,
    524_288,
    524_289,
    1 << 20,
    (1 << 20) + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    1 << 32,
    (1 << 32) + 1,
    2_147_483_648 * 512,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];

const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "256",
    "4096",
    "8192",
    "65536",
    "524288",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "1e309",
    "-1e309",
    "0.5",
    "-0",
    "1.7976931348623157e308",
    "100000000000000000000000000000",
];

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "false",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "\n",
    " ",
    "{}",
    "[]",
    "\"\"",
    "\u{feff}",
    "\u{10ffff}",
    "\u{0}",
];

/// Mutates `input` with one to four structured mutations; `other` is
/// another input of the same target, for splicing.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], dict: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(14) {
            0 | 1 => {
                // Flip a few bits.
                if !v.is_empty() {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(v.len());
                        v[i] ^= 1 << rng.below(8);
                    }
                }
            }
            2 => {
                // A byte set to an edge value or a random one.
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    v[i] = match rng.below(6) {
                        0 => 0,
                        1 => 0xff,
                        2 => 0x7f,
                        3 => 0x80,
                        4 => v[i].wrapping_add(1),
                        _ => rng.next() as u8,
                    };
                }
            }
            3 => {
                // Random bytes inserted.
                let at = rng.below(v.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
            4 => {
                // A range deleted.
                if !v.is_empty() {
                    let at = rng.below(v.len());
                    let n = 1 + rng.below((v.len() - at).min(64));
                    v.drain(at..at + n);
                }
            }
            5 => {
                // A range duplicated elsewhere.
                if !v.is_empty() {
                    let at = rng.below(v.len());
                    let n = 1 + rng.below((v.len() - at).min(256));
                    let piece = v[at..at + n].to_vec();
                    let to = rng.below(v.len() + 1);
                    v.splice(to..to, piece);
                }
            }
            6 => {
                // Truncated.
                if !v.is_empty() {
                    let n = rng.below(v.len());
                    v.truncate(n);
                }
            }
            7 | 8 => {
                // An interesting integer over a field: where a small number
                // lies (a length or a count), or anywhere.
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                if v.len() >= width {
                    let at = if rng.chance(2) {
                        small_number_at(rng, &v).unwrap_or_else(|| rng.below(v.len() - width + 1))
                    } else {
                        rng.below(v.len() - width + 1)
                    };
                    let at = at.min(v.len() - width);
                    let bytes = if rng.chance(4) {
                        value.to_be_bytes()[8 - width..].to_vec()
                    } else {
                        value.to_le_bytes()[..width].to_vec()
                    };
                    v[at..at + width].copy_from_slice(&bytes);
                }
            }
            9 => {
                // A decimal number replaced (JSON fields).
                if let Some((at, n)) = digits_at(rng, &v) {
                    let num = NUMBERS[rng.below(NUMBERS.len())].as_bytes();
                    v.splice(at..at + n, num.iter().copied());
                }
            }
            10 => {
                // A token inserted or written over the input.
                let tok: &[u8] = if !dict.is_empty() && rng.chance(2) {
                    dict[rng.below(dict.len())]
                } else {
                    JSON_TOKENS[rng.below(JSON_TOKENS.len())].as_bytes()
                };
                let at = rng.below(v.len() + 1);
                if rng.chance(2) {
                    v.splice(at..at, tok.iter().copied());
                } else {
                    let end = (at + tok.len()).min(v.len());
                    v.splice(at..end, tok.iter().copied());
                }
            }
            11 => {
                // Spliced with another input: this one's start, that one's end.
                if !other.is_empty() {
                    let a = rng.below(v.len() + 1);
                    let b = rng.below(other.len());
                    v.truncate(a);
                    v.extend_from_slice(&other[b..]);
                }
            }
            12 => {
                // A range of another input written over this one.
                if !other.is_empty() && !v.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(64));
                    let to = rng.below(v.len());
                    let end = (to + n).min(v.len());
                    v[to..end].copy_from_slice(&other[from..from + (end - to)]);
                }
            }
            _ => {
                // A long run of one byte (a string or a body that goes on).
                let at = rng.below(v.len() + 1);
                let n = 1 + rng.below(4096);
                let b = [b'a', 0, 0xff, b'9', b' '][rng.below(5)];
                v.splice(at..at, std::iter::repeat_n(b, n));
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}

/// Where a little-endian u32 holding a small non-zero number lies (likely
/// a length or a count), tried at a few random places.
fn small_number_at(rng: &mut Rng, v: &[u8]) -> Option<usize> {
    if v.len() < 4 {
        return None;
    }
    for _ in 0..32 {
        let at = rng.below(v.len() - 3);
        let n = u32::from_le_bytes(v[at..at + 4].try_into().unwrap());
        if n > 0 && (n as usize) < v.len().max(4096) {
            return Some(at);
        }
    }
    None
}

/// A run of ASCII digits (where it starts, how long), looked for from a random place.
fn digits_at(rng: &mut Rng, v: &[u8]) -> Option<(usize, usize)> {
    if v.is_empty() {
        return None;
    }
    let start = rng.below(v.len());
    let at = (start..v.len())
        .chain(0..start)
        .find(|&i| v[i].is_ascii_digit())?;
    let n = v[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    Some((at, n))
}

/// How long a target runs, from `SKIFF_FUZZ_SECONDS` (default 10).
pub fn budget() -> Duration {
    let secs = std::env::var("SKIFF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs.max(0.0))
}

/// The PRNG's seed: `SKIFF_FUZZ_SEED`, else from the clock (printed, so a run can be repeated).
fn seed_for(target: &str) -> u64 {
    match std::env::var("SKIFF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => s,
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            t ^ u64::from_le_bytes(
                skiff::repo::crypto::sha256(target.as_bytes())[..8]
                    .try_into()
                    .unwrap(),
            )
        }
    }
}

/// Everything about a target the fuzzer needs.
pub struct Target<'a> {
    pub name: &'a str,
    /// The entry point: `Ok` or `Err` are both fine ends; a panic is not.
    pub run: &'a dyn Fn(&[u8]) -> Result<String, String>,
    pub seeds: Vec<Vec<u8>>,
    /// Tokens worth inserting (field names, magic numbers).
    pub dict: Vec<&'a [u8]>,
    /// Longer than this, an input is a hang.
    pub limit: Duration,
}

fn failed(target: &str, input: &[u8], why: &str, origin: &str) -> ! {
    let path = save(target, input);
    panic!(
        "fuzz {target}: {origin} {why}\nsaved as {} — keep it as a regression input by moving it to fuzz/corpus/{target}/\n{}",
        path.display(),
        hex_excerpt(input)
    );
}

/// Only one target runs at a time: the detectors watch the whole process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held by a test for all it does (its setup allocates too): no other
/// test's work is taken for its inputs'.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replays the checked-in regression inputs and the seeds, then mutates
/// for `budget`; panics with the first failing input. Call it holding
/// [`exclusive`].
pub fn fuzz(t: Target<'_>, budget: Duration) {
    install();
    let fail = |input: &[u8], why: &str, origin: &str| failed(t.name, input, why, origin);
    // A slow machine (or a debugger) may need more time per input.
    let limit = std::env::var("SKIFF_FUZZ_INPUT_LIMIT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(t.limit, Duration::from_secs_f64);
    let verbose = std::env::var_os("SKIFF_FUZZ_VERBOSE").is_some();
    let mut outcomes: HashSet<String> = HashSet::new();
    let mut corpus: Vec<Arc<Vec<u8>>> = Vec::new();
    for (name, input) in regressions(t.name) {
        let input = Arc::new(input);
        match run_one(t.name, limit, t.run, &input) {
            Verdict::Failed(why) => fail(&input, &why, &format!("regression input {name}")),
            Verdict::Fine(o) => {
                if verbose {
                    eprintln!("fuzz {}: regression input {name}: {o}", t.name);
                }
                outcomes.insert(signature(&o));
            }
        }
        corpus.push(input);
    }
    for input in t.seeds {
        let input = Arc::new(input);
        let took = Instant::now();
        match run_one(t.name, limit, t.run, &input) {
            Verdict::Failed(why) => fail(&input, &why, "seed"),
            Verdict::Fine(o) => {
                if verbose {
                    eprintln!("fuzz {}: seed ({:?}): {o}", t.name, took.elapsed());
                }
                outcomes.insert(signature(&o));
            }
        }
        corpus.push(input);
    }
    if corpus.is_empty() {
        corpus.push(Arc::new(Vec::new()));
    }
    let seeded = corpus.len();
    let seed = seed_for(t.name);
    let mut rng = Rng::new(seed);
    let start = Instant::now();
    let mut inputs = 0u64;
    while start.elapsed() < budget {
        let a = corpus[rng.below(corpus.len())].clone();
        let b = corpus[rng.below(corpus.len())].clone();
        let input = Arc::new(mutate(&mut rng, &a, &b, &t.dict));
        inputs += 1;
        match run_one(t.name, limit, t.run, &input) {
            Verdict::Failed(why) => fail(
                &input,
                &why,
                &format!("input {inputs} (SKIFF_FUZZ_SEED={seed})"),
            ),
            Verdict::Fine(o) => {
                if outcomes.len() < 100_000 && outcomes.insert(signature(&o)) {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        let i = seeded + rng.below(MAX_CORPUS - seeded);
                        corpus[i] = input;
                    }
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if verbose {
        let mut seen: Vec<&String> = outcomes.iter().collect();
        seen.sort();
        for o in seen.iter().take(200) {
            eprintln!("fuzz {}: outcome {o}", t.name);
        }
    }
    eprintln!(
        "fuzz {}: {} inputs in {:.1} s ({:.0}/s), {} distinct outcomes, corpus {} ({} seeds), seed {seed}",
        t.name,
        inputs,
        seconds,
        inputs as f64 / seconds.max(1e-9),
        outcomes.len(),
        corpus.len(),
        seeded
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_blank_numbers_and_ids() {
        assert_eq!(
            signature("expected 12 entries, found 7 bytes in deadbeefcafe0011"),
            "expected # entries, found # bytes in #"
        );
        assert_eq!(signature("pack data/0a/0a1b: bad"), "pack data/#/#: bad");
        assert_eq!(
            signature("unknown field `x`y1`, expected `a` or `b` at line 1 column 40"),
            "unknown field `` at line # column #"
        );
        assert_eq!(signature("bad salt"), "bad salt");
    }
}
