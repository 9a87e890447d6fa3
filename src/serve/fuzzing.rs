//! Entry points for fuzzers (`tests/fuzz.rs`, `fuzz/`) of the control
//! socket's protocol: [`requests`] reads bytes as a connection reads them
//! (lines, then requests); [`Server`] runs a real engine in-process and
//! [`Server::session`] sends bytes to its socket as a client would, checking
//! what the protocol promises. A broken promise panics, as a crash does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::control::{self, Op, Request};
use super::ServeConfig;
use crate::cloud::Cloud;
use crate::config::Config;
use crate::host::VmOptions;

pub use crate::repo::fuzzing::Outcome;

/// Reads `input` as the server reads a connection: line by line, each
/// line a request or refused with an answer.
pub fn requests(input: &[u8]) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let mut r = BufReader::new(input);
        let mut buf = Vec::new();
        let mut ops = Vec::new();
        let mut refused = None;
        while let Some(line) = control::read_line(&mut r, &mut buf)
            .await
            .map_err(|e| e.to_string())?
        {
            if line == control::Line::TooLong {
                control::skip_line(&mut r)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            match control::request_of(&line) {
                None => {}
                Some(Ok(req)) => {
                    // What a client sends (the same type, serialized), the
                    // server reads as the same operation (a float may come
                    // back a last digit apart: serde_json parses floats fast,
                    // not exactly).
                    let again = serde_json::to_string(&req).expect("a request serializes");
                    let back = control::parse_request(&again).expect("a request reads back");
                    let v = serde_json::to_value(&req.op).expect("an op serializes");
                    let w = serde_json::to_value(&back.op).expect("an op serializes");
                    assert_eq!(v["op"], w["op"]);
                    ops.push(v["op"].as_str().unwrap_or_default().to_string());
                }
                Some(Err(answer)) => {
                    refused.get_or_insert(answer["error"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        ops.sort();
        ops.dedup();
        Ok(format!(
            "ops {}; first refusal: {}",
            ops.join(" "),
            refused.unwrap_or_default()
        ))
    })
}

/// The one policy the fuzzed engine serves: it runs when asked and does nothing.
const POLICY: &str = r#"policy{ name = "fuzz", schedule = "@yearly", select = { ids = { "i-1" } },
  repository = "/srv/skiff", retention = { keep_last = 1 }, run = function(ctx) end }
"#;

/// How long a session may take after the client has sent everything and
/// closed its end, before the server is said to hang.
pub const SESSION_LIMIT: Duration = Duration::from_secs(3);

/// Bytes a session sends as a line that never ends: more than a fuzzer's
/// limit on one allocation when the input is nothing but the flood, a few
/// times the longest request line after other bytes (a cheaper flood, as
/// most inputs that flood are mutations).
pub const FLOOD: (usize, usize) = (40 << 20, 4 * control::MAX_REQUEST_LINE);

/// A real `skiff serve` engine in-process, serving one policy from `dir`.
pub struct Server {
    rt: tokio::runtime::Runtime,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    engine: Option<tokio::task::JoinHandle<Result<(), super::ServeError>>>,
}

impl Server {
    /// Starts the engine on `dir` (policies in `dir/policies`, state in
    /// `dir/state`) and waits until its socket answers.
    pub fn start(dir: &Path) -> Result<Server, String> {
        let policies = dir.join("policies");
        let state = dir.join("state");
        std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
        std::fs::write(policies.join("fuzz.lua"), POLICY).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut cfg = ServeConfig::new(
            Arc::new(Config::default()),
            Arc::new(Cloud::offline()),
            VmOptions {
                search_dirs: vec![policies.clone()],
                ..Default::default()
            },
            state.clone(),
        );
        cfg.reap = false;
        let (stop, stopped) = oneshot::channel::<()>();
        let engine = rt.spawn(async move {
            super::run(cfg, &policies, async {
                let _ = stopped.await;
            })
            .await
        });
        let socket = control::socket_path(&state);
        let server = Server {
            rt,
            socket,
            stop: Some(stop),
            engine: Some(engine),
        };
        server.rt.block_on(async {
            for _ in 0..600 {
                if let Ok(mut s) = UnixStream::connect(&server.socket).await {
                    let status = json!({"id": 0, "op": "policies"}).to_string() + "\n";
                    s.write_all(status.as_bytes())
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut line = String::new();
                    BufReader::new(s)
                        .read_line(&mut line)
                        .await
                        .map_err(|e| e.to_string())?;
                    if line.contains("\"fuzz\"") {
                        return Ok(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err("the engine did not serve its policy within 30 s".to_string())
        })?;
        Ok(server)
    }

    /// One connection: sends `input[1..]` (and, when the low four bits of
    /// `input[0]` are set, a line that never ends after it, [`FLOOD`]
    /// bytes), closes the sending end and reads every answer.
    /// Panics when the server breaks the protocol: an answer line that is
    /// not a JSON object with `ok` or `event`, a request left unanswered
    /// (or answered twice) before the connection ended, or a connection
    /// still open [`SESSION_LIMIT`] after the client's end closed.
    pub fn session(&self, input: &[u8]) -> Outcome {
        let (flood, sent) = match input.split_first() {
            Some((b, rest)) => (b & 0xf == 0xf, rest),
            None => (false, input),
        };
        let flood_bytes = if sent.is_empty() { FLOOD.0 } else { FLOOD.1 };
        let expected = expected_answers(sent, flood);
        self.rt.block_on(async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (r, mut w) = stream.into_split();
            let sent = sent.to_vec();
            let writer = tokio::spawn(async move {
                // The server may close first (it refused a line): not a failure.
                if w.write_all(&sent).await.is_err() {
                    return;
                }
                if flood {
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut n = 0;
                    while n < flood_bytes {
                        if w.write_all(&chunk).await.is_err() {
                            return;
                        }
                        n += chunk.len();
                    }
                }
                let _ = w.shutdown().await;
            });
            let read = tokio::time::timeout(SESSION_LIMIT, read_answers(r));
            let answers = match read.await {
                Ok(a) => a.map_err(|e| format!("reading answers: {e}"))?,
                Err(_) => panic!(
                    "the server did not close the connection within {SESSION_LIMIT:?} after the client's end closed"
                ),
            };
            let _ = writer.await;
            check_answers(&answers, expected);
            Ok(format!(
                "{} answers, {} events; refused: {}",
                answers.oks,
                answers.events,
                answers.errors.join("; ")
            ))
        })
    }

    /// Inputs for [`Server::session`] and [`requests`]: what the client of
    /// `skiff repl --attach` writes, a few operations per connection.
    pub fn seeds() -> Vec<Vec<u8>> {
        let line = |id: i64, op: Op| {
            let mut l = serde_json::to_vec(&Request { id: json!(id), op }).expect("a request");
            l.push(b'\n');
            l
        };
        let runs = |policy: Option<&str>, limit| Op::Runs {
            policy: policy.map(str::to_string),
            limit,
        };
        let sessions: Vec<Vec<Vec<u8>>> = vec![
            vec![line(1, Op::Status), line(2, Op::Policies)],
            vec![
                line(
                    1,
                    Op::Run {
                        policy: "fuzz".into(),
                    },
                ),
                line(
                    2,
                    Op::Wait {
                        run: 1,
                        timeout: Some(0.5),
                    },
                ),
                line(3, Op::RunInfo { run: 1 }),
            ],
            vec![
                line(1, runs(Some("fuzz"), Some(5))),
                line(2, runs(None, None)),
            ],
            vec![line(7, Op::Status), line(8, Op::Subscribe)],
            vec![
                b"{\"id\": \"x\", \"op\": \"nope\"}\n\n".to_vec(),
                line(2, Op::Status),
            ],
        ];
        let mut out = Vec::new();
        for s in sessions {
            let body = s.concat();
            out.push([&[0u8][..], &body].concat());
        }
        out.push(vec![0xf]);
        out.push(vec![0xf, b'{']);
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(engine) = self.engine.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), engine).await });
        }
    }
}

#[derive(Default)]
struct Answers {
    oks: usize,
    refused: usize,
    events: usize,
    /// The first few refusals' errors.
    errors: Vec<String>,
    bad_lines: Vec<String>,
}

/// Answer lines until the server closes the connection; only the first
/// lines that break the protocol are kept.
async fn read_answers(r: tokio::net::unix::OwnedReadHalf) -> std::io::Result<Answers> {
    let mut a = Answers::default();
    // An answer is at most a few MiB (a history page); bounded per line.
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(64 << 20)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(a);
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) if v.get("event").is_some() => a.events += 1,
            Ok(v) if v.get("ok") == Some(&Value::Bool(true)) => a.oks += 1,
            Ok(v) if v.get("ok") == Some(&Value::Bool(false)) => {
                a.refused += 1;
                if a.errors.len() < 3 {
                    a.errors
                        .push(v["error"].as_str().unwrap_or("?").to_string());
                }
            }
            _ if a.bad_lines.len() < 3 => a
                .bad_lines
                .push(String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()),
            _ => {}
        }
    }
}

/// How many answers the server owes for `sent` (followed by a flood when
/// `flood`): one per line that is not blank (whatever it holds), up to and
/// including the first `subscribe`, after which the connection carries
/// events only.
fn expected_answers(sent: &[u8], flood: bool) -> usize {
    let mut n = 0;
    let mut parts: Vec<&[u8]> = sent.split(|b| *b == b'\n').collect();
    // Text after the last newline is a line too, and the flood extends it
    // (or, after a newline, is a line of its own).
    if flood {
        if let Some(last) = parts.last_mut() {
            *last = b"x";
        }
    }
    for line in parts {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            continue;
        }
        n += 1;
        if matches!(
            std::str::from_utf8(line).ok().map(control::parse_request),
            Some(Ok(Request {
                op: Op::Subscribe,
                ..
            }))
        ) {
            break;
        }
    }
    n
}

fn check_answers(a: &Answers, expected: usize) {
    assert!(
        a.bad_lines.is_empty(),
        "the server sent lines that are not protocol JSON: {:?}",
        a.bad_lines
    );
    assert_eq!(
        a.oks + a.refused,
        expected,
        "the server answered {} of {expected} requests before closing the connection",
        a.oks + a.refused
    );
}
