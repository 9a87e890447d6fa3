//! The control socket of a running `skiff serve`: a Unix socket in the state
//! dir (`serve.sock`) speaking JSON lines, used by `skiff repl --attach`,
//! `skiff policies` and anything else that wants live state.
//!
//! Each request is one JSON object on one line, `{"id": …, "op": …, …}`; each
//! answer is one line `{"id": …, "ok": true, "result": …}` or `{"id": …,
//! "ok": false, "error": "…"}`, in order; a line that is no request (not
//! JSON, not UTF-8, longer than [`MAX_REQUEST_LINE`]) is answered with an
//! error. After `subscribe`, the connection carries event lines `{"event":
//! …, …}` until either end closes it. The operations and events are
//! documented in docs/serve.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::history::{FileRecord, History, Outcome, PolicyRecord, RunRecord, Trigger};

pub const SOCKET_FILE: &str = "serve.sock";

/// The longest request line read (a request is a few hundred bytes).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub id: Value,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The engine: pid, folder, start time, counts.
    Status,
    /// Loaded policies and files (the `skiff policies` view).
    Policies,
    /// Start a run of a policy now.
    Run { policy: String },
    /// History, newest first.
    Runs {
        policy: Option<String>,
        limit: Option<usize>,
    },
    /// One run's record.
    RunInfo { run: i64 },
    /// Answers when the run has ended (or after `timeout` seconds, with its record as it is).
    Wait { run: i64, timeout: Option<f64> },
    /// Runs in progress with their recent log lines; then events on this connection.
    Subscribe,
}

/// What the engine broadcasts to subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: i64,
        policy: String,
        file: String,
        version: i64,
        trigger: Trigger,
        scheduled: DateTime<Utc>,
        started: DateTime<Utc>,
        job: String,
    },
    RunLog {
        run: i64,
        policy: String,
        line: String,
        at: DateTime<Utc>,
    },
    RunProgress {
        run: i64,
        policy: String,
        progress: Value,
        at: DateTime<Utc>,
    },
    RunFinished {
        run: i64,
        policy: String,
        outcome: Outcome,
        started: DateTime<Utc>,
        ended: DateTime<Utc>,
        points: Option<i64>,
        bytes: Option<i64>,
        error: Option<String>,
    },
    RunSkipped {
        run: i64,
        policy: String,
        scheduled: DateTime<Utc>,
        reason: String,
    },
    /// A file loaded and its new version is active.
    Loaded {
        file: String,
        version: i64,
        policies: Vec<String>,
        at: DateTime<Utc>,
    },
    /// A file failed to load; `keeping` is the version still active, if any.
    LoadFailed {
        file: String,
        error: String,
        keeping: Option<i64>,
        at: DateTime<Utc>,
    },
    /// A file was deleted: its policies stopped.
    Removed { file: String, policies: Vec<String> },
    /// Ctrl-C or SIGTERM: no new runs; running ones end.
    Stopping,
}

/// A policy as `skiff policies` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The policy as loaded (the same record the history keeps).
    #[serde(flatten)]
    pub policy: PolicyRecord,
    /// The run in progress, if any.
    pub running: Option<i64>,
    pub last: Option<RunRecord>,
}

/// A policy file as `skiff policies` shows it: the record the history keeps.
pub type FileStatus = FileRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoliciesView {
    /// From a running engine (else from the history's last-known state).
    pub live: bool,
    pub policies: Vec<PolicyStatus>,
    pub files: Vec<FileStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub pid: u32,
    pub dir: String,
    pub state_dir: String,
    pub started: DateTime<Utc>,
    pub files: usize,
    pub policies: usize,
    pub running: Vec<RunningView>,
    pub stopping: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningView {
    pub run: i64,
    pub policy: String,
    pub version: i64,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    /// The last lines the run logged (at most 100).
    pub lines: Vec<String>,
    pub progress: Option<Value>,
}

/// A request the engine itself answers.
pub enum Command {
    Status(oneshot::Sender<StatusView>),
    Policies(oneshot::Sender<PoliciesView>),
    Run(String, oneshot::Sender<Result<i64, String>>),
}

/// What connection handlers need.
#[derive(Clone)]
pub struct Hub {
    pub commands: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Event>,
    pub history: Arc<History>,
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_FILE)
}

/// Binds the control socket, refusing if another engine answers on it.
pub async fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(state_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another skiff serve answers on {}", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    // Whoever can connect can start runs: the owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections until the listener is dropped (the task aborted).
pub async fn serve(listener: UnixListener, hub: Hub) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let hub = hub.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, hub).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write_line(
    w: &mut (impl AsyncWriteExt + Unpin),
    v: &impl Serialize,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// A request line as the server reads it: the request, or the answer that
/// refuses it (echoing its `id` when the line is JSON with one).
pub fn parse_request(line: &str) -> Result<Request, Value> {
    serde_json::from_str(line).map_err(|e| {
        let id = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(Value::Null);
        json!({"id": id, "ok": false, "error": format!("bad request: {e}")})
    })
}

/// A line read off a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Without its `\n` (or `\r\n`).
    Text(String),
    NotUtf8,
    /// Longer than [`MAX_REQUEST_LINE`]: read no further (see [`skip_line`]).
    TooLong,
}

/// Reads the next line, keeping at most [`MAX_REQUEST_LINE`] bytes of it;
/// None at the end of the input. `buf` is scratch space.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok((!buf.is_empty()).then(|| finish_line(buf)));
        }
        let (n, end) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if buf.len() + n > MAX_REQUEST_LINE {
            return Ok(Some(Line::TooLong));
        }
        buf.extend_from_slice(&avail[..n]);
        r.consume(n + usize::from(end));
        if end {
            return Ok(Some(finish_line(buf)));
        }
    }
}

fn finish_line(buf: &mut Vec<u8>) -> Line {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    match std::str::from_utf8(buf) {
        Ok(s) => Line::Text(s.to_string()),
        Err(_) => Line::NotUtf8,
    }
}

/// Reads and drops the rest of a line; false when the input ended first.
pub async fn skip_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<bool> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(false);
        }
        match avail.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(true);
            }
            None => {
                let n = avail.len();
                r.consume(n);
            }
        }
    }
}

/// What the server makes of a line: a request, nothing (a blank line), or
/// the answer refusing it.
pub fn request_of(line: &Line) -> Option<Result<Request, Value>> {
    let refuse =
        |why: String| json!({"id": null, "ok": false, "error": format!("bad request: {why}")});
    match line {
        Line::Text(t) if t.trim().is_empty() => None,
        Line::Text(t) => Some(parse_request(t)),
        Line::NotUtf8 => Some(Err(refuse("the line is not UTF-8".into()))),
        Line::TooLong => Some(Err(refuse(format!(
            "a line longer than {MAX_REQUEST_LINE} bytes"
        )))),
    }
}

async fn connection(stream: UnixStream, hub: Hub) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut r, &mut buf).await? {
        let req = match request_of(&line) {
            None => continue,
            Some(Ok(r)) => r,
            Some(Err(answer)) => {
                write_line(&mut w, &answer).await?;
                // A line too long is answered at once; the rest of it is not kept.
                if line == Line::TooLong && !skip_line(&mut r).await? {
                    return Ok(());
                }
                continue;
            }
        };
        if matches!(req.op, Op::Subscribe) {
            // Subscribe before taking the snapshot, so no event falls between.
            let mut rx = hub.events.subscribe();
            let (tx, snap) = oneshot::channel();
            let _ = hub.commands.send(Command::Status(tx)).await;
            let running = snap.await.map(|s| s.running).unwrap_or_default();
            write_line(
                &mut w,
                &json!({"id": req.id, "ok": true, "result": {"running": running}}),
            )
            .await?;
            // From now on the connection carries events; what the client
            // sends is dropped, and its end closing ends the subscription.
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    more = r.fill_buf() => {
                        let n = more?.len();
                        if n == 0 {
                            return Ok(());
                        }
                        r.consume(n);
                        continue;
                    }
                };
                match ev {
                    Ok(ev) => write_line(&mut w, &ev).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        write_line(&mut w, &json!({"event": "lagged", "missed": n})).await?
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        let answer = answer(&hub, req.op).await;
        let out = match answer {
            Ok(result) => json!({"id": req.id, "ok": true, "result": result}),
            Err(error) => json!({"id": req.id, "ok": false, "error": error}),
        };
        write_line(&mut w, &out).await?;
    }
    Ok(())
}

async fn answer(hub: &Hub, op: Op) -> Result<Value, String> {
    let gone = || "skiff serve is stopping".to_string();
    match op {
        Op::Status => {
            let (tx, rx) = oneshot::channel();
            hub.commands
                .send(Command::Status(tx))
                .await
                .map_err(|_| gone())?;
            Ok(to_json(&rx.await.map_err(|_| gone())?))
        }
        Op::Policies => {
            let (tx, rx) = oneshot::channel();
            hub.commands
                .send(Command::Policies(tx))
                .await
                .map_err(|_| gone())?;
            Ok(to_json(&rx.await.map_err(|_| gone())?))
        }
        Op::Run { policy } => {
            let (tx, rx) = oneshot::channel();
            hub.commands
                .send(Command::Run(policy.clone(), tx))
                .await
                .map_err(|_| gone())?;
            let run = rx.await.map_err(|_| gone())??;
            Ok(json!({"run": run, "policy": policy}))
        }
        Op::Runs { policy, limit } => {
            let h = hub.history.clone();
            let runs = blocking(move || {
                h.runs(policy.as_deref(), limit.unwrap_or(20))
                    .map_err(|e| e.to_string())
            })
            .await?;
            Ok(to_json(&runs))
        }
        Op::RunInfo { run } => {
            let h = hub.history.clone();
            let r = blocking(move || h.run(run).map_err(|e| e.to_string())).await?;
            r.map(|r| to_json(&r))
                .ok_or_else(|| format!("no run {run} in the history"))
        }
        Op::Wait { run, timeout } => {
            let mut rx = hub.events.subscribe();
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs_f64(timeout.unwrap_or(3600.0).clamp(0.0, 86_400.0 * 7.0));
            loop {
                let h = hub.history.clone();
                let rec = blocking(move || h.run(run).map_err(|e| e.to_string()))
                    .await?
                    .ok_or_else(|| format!("no run {run} in the history"))?;
                if rec.outcome != Outcome::Running {
                    return Ok(to_json(&rec));
                }
                // Woken by the run's end, any other event, or a periodic recheck.
                let wake = tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                );
                tokio::select! {
                    ev = rx.recv() => {
                        if let Err(broadcast::error::RecvError::Closed) = ev {
                            return Err(gone());
                        }
                    }
                    _ = wake => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    let h = hub.history.clone();
                    let rec = blocking(move || h.run(run).map_err(|e| e.to_string())).await?;
                    return Ok(rec.map(|r| to_json(&r)).unwrap_or(Value::Null));
                }
            }
        }
        Op::Subscribe => unreachable!("handled by the connection"),
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A client of the control socket.
pub struct Client {
    reader: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: tokio::net::unix::OwnedWriteHalf,
    next_id: u64,
}

impl Client {
    /// Connects to the engine using `state_dir`; `None` when none is running.
    pub async fn connect(state_dir: &Path) -> Option<Client> {
        let stream = UnixStream::connect(socket_path(state_dir)).await.ok()?;
        let (r, w) = stream.into_split();
        Some(Client {
            reader: BufReader::new(r).lines(),
            writer: w,
            next_id: 1,
        })
    }

    /// Sends one request and reads its answer.
    pub async fn request(&mut self, op: Op) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        write_line(&mut self.writer, &Request { id: json!(id), op })
            .await
            .map_err(|e| format!("skiff serve: {e}"))?;
        loop {
            let line = self
                .reader
                .next_line()
                .await
                .map_err(|e| format!("skiff serve: {e}"))?
                .ok_or_else(|| "skiff serve closed the connection".to_string())?;
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("skiff serve sent a bad line: {e}"))?;
            if v.get("id") != Some(&json!(id)) {
                continue;
            }
            return if v.get("ok") == Some(&Value::Bool(true)) {
                Ok(v.get("result").cloned().unwrap_or(Value::Null))
            } else {
                Err(v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_string())
            };
        }
    }

    /// Subscribes: returns the runs in progress; then [`Client::next_event`].
    pub async fn subscribe(&mut self) -> Result<Vec<RunningView>, String> {
        let v = self.request(Op::Subscribe).await?;
        serde_json::from_value(v.get("running").cloned().unwrap_or(json!([])))
            .map_err(|e| e.to_string())
    }

    /// The next event line after [`Client::subscribe`]; `None` when the engine is gone.
    pub async fn next_event(&mut self) -> Option<Value> {
        let line = self.reader.next_line().await.ok()??;
        serde_json::from_str(&line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A connection handler on one end of a socket pair, with no engine
    /// behind it (requests the engine answers fail as when it is stopping).
    fn connected(dir: &Path) -> (UnixStream, tokio::task::JoinHandle<std::io::Result<()>>) {
        let (commands, _) = mpsc::channel(1);
        let hub = Hub {
            commands,
            events: broadcast::channel(16).0,
            history: Arc::new(History::open(dir).unwrap()),
        };
        let (client, server) = UnixStream::pair().unwrap();
        (client, tokio::spawn(connection(server, hub)))
    }

    /// Everything the server sends until it closes the connection (at most 10 s).
    async fn answers(client: UnixStream) -> Vec<Value> {
        let mut all = String::new();
        let mut client = BufReader::new(client);
        let read = client.read_to_string(&mut all);
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server closes the connection")
            .unwrap();
        all.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_line_that_never_ends_is_refused_without_being_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (client, server) = connected(dir.path());
        let (r, mut w) = client.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(serde_json::from_str::<Value>(&l).unwrap());
            }
        });
        // Far more than any request, and no newline: the answer comes while it is sent.
        let chunk = vec![b'x'; 1 << 16];
        let mut sent = 0;
        while rx.is_empty() && sent < 64 << 20 {
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an answer before the line ends")
            .unwrap();
        assert_eq!(
            first,
            json!({"id": null, "ok": false,
                   "error": format!("bad request: a line longer than {MAX_REQUEST_LINE} bytes")})
        );
        // Socket buffers hold a few hundred KiB of what was sent.
        assert!(sent < 8 << 20, "answered after {sent} bytes");
        // The rest of the line is skipped; the next line is a request again.
        w.write_all(b"more of the same line\n{\"id\": 2, \"op\": \"runs\"}\n")
            .await
            .unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            json!({"id": 2, "ok": true, "result": []})
        );
        assert_eq!(rx.recv().await, None);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn every_line_is_answered_even_one_that_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, server) = connected(dir.path());
        client
            .write_all(b"\xff\xfe{\"id\": 1}\n{\"id\": 2, \"op\": \"runs\"}\r\n\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let got = answers(client).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            json!({"id": null, "ok": false, "error": "bad request: the line is not UTF-8"})
        );
        assert_eq!(got[1], json!({"id": 2, "ok": true, "result": []}));
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_subscriber_that_hangs_up_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, server) = connected(dir.path());
        client
            .write_all(b"{\"id\": 1, \"op\": \"subscribe\"}\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let got = answers(client).await;
        assert_eq!(
            got,
            vec![json!({"id": 1, "ok": true, "result": {"running": []}})]
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the handler ends when its client hangs up")
            .unwrap()
            .unwrap();
    }
}
