//! The session's HTTPS server (axum over rustls): the token on every
//! request, then the filesystems' pages, downloads, archives and restores.
//!
//! The token comes as `?t=` (the URL skiff prints), an `Authorization:
//! Bearer` header, or the `skiff_flr` cookie set on the first visit
//! (`HttpOnly; Secure; SameSite=Strict`). Only its SHA-256 is kept, and
//! the comparison takes the same time whatever the guess. Paths come from
//! the raw request path, decoded byte by byte: an encoded `/`, `.`, `..`
//! or NUL is refused before the filesystem is asked, and [`super::tree`]
//! opens what remains beneath its mount without following links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::archive;
use super::pages::{self, esc};
use super::tree::{self, Kind, RelPath, Root};

pub const COOKIE: &str = "skiff_flr";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Entries a listing page shows.
const PAGE: usize = 500;
/// Files previewed inline at most this large.
const PREVIEW_MAX: usize = 256 << 10;
/// Connections served at once; more wait.
const CONNECTIONS: usize = 64;

/// One filesystem of the point, as the browser offers it.
pub struct Fs {
    /// The partition's number (as the kernel numbers them; 0 for a disk without a table).
    pub index: u32,
    /// What the partitions page says of it (kind, label, size).
    pub label: String,
    /// Its filesystem UUID, which finds it on the original instance.
    pub uuid: Option<String>,
    /// Mounted and browsable, or why not.
    pub root: Result<Arc<Root>, String>,
}

/// Something a person did, for the run history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    pub session: String,
    pub action: String,
    pub partition: u32,
    pub paths: Vec<String>,
    pub bytes: u64,
    pub outcome: String,
    pub client: String,
    pub time: String,
}

pub trait Audit: Send + Sync {
    fn record(&self, r: AuditRecord);
}

/// The outcome of restoring one selected item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemOutcome {
    pub path: String,
    pub ok: bool,
    /// Where it was written, or why not.
    pub detail: String,
}

/// Writes items of a filesystem back onto the original instance.
pub trait Restorer: Send + Sync {
    fn restore<'a>(
        &'a self,
        fs: &'a Fs,
        items: Vec<RelPath>,
        overwrite: bool,
    ) -> BoxFuture<'a, Result<Vec<ItemOutcome>, String>>;
}

/// What the pages need to know of the session.
pub struct Shared {
    pub token_sha256: [u8; 32],
    pub session: String,
    /// One line shown on every page (the point, its volume and time).
    pub title: String,
    pub expires: String,
    pub filesystems: Vec<Fs>,
    pub audit: Arc<dyn Audit>,
    pub restorer: Option<Arc<dyn Restorer>>,
    /// The addresses served (the session's `allow`; empty: any). On a
    /// worker its security group already admits only these; this is the
    /// same rule again, in the server.
    pub admit: Vec<crate::network::Cidr>,
}

/// A running server; dropping it or calling [`Serving::stop`] closes the
/// listener and every connection.
pub struct Serving {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `shared` over TLS on `listener` until stopped.
pub fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
) -> Serving {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let app = axum::Router::new()
        .fallback(route)
        .with_state(shared)
        .layer(axum::middleware::map_response(harden));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        let limit = Arc::new(Semaphore::new(CONNECTIONS));
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stopped => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("flr: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            conns.spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(t)) => t,
                    _ => return,
                };
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(Peer(peer));
                        let app = app.clone();
                        async move {
                            use tower::ServiceExt;
                            app.oneshot(req.map(Body::new)).await
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        conns.shutdown().await;
    });
    Serving {
        addr,
        stop: Some(stop),
        task,
    }
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Headers every response carries.
async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=86400"),
    );
    r
}

/// The token a request presents: query `t`, bearer header or cookie.
fn presented(req: &Parts) -> (Option<String>, bool) {
    if let Some(q) = req.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k == "t" {
                return (Some(v.into_owned()), true);
            }
        }
    }
    let h = &req.headers;
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return (Some(t.trim().to_string()), false);
        }
    }
    for c in h.get_all(header::COOKIE) {
        for part in c.to_str().unwrap_or("").split(';') {
            if let Some(t) = part.trim().strip_prefix(&format!("{COOKIE}=")) {
                return (Some(t.to_string()), false);
            }
        }
    }
    (None, false)
}

/// Whether `token` is the session's, in constant time.
pub fn token_matches(token: &str, expected_sha256: &[u8; 32]) -> bool {
    let got = digest::digest(&digest::SHA256, token.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(got.as_ref(), expected_sha256).is_ok()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn refuse(s: &Shared, status: StatusCode, what: &str) -> Response {
    html(
        status,
        pages::page(
            status.canonical_reason().unwrap_or("refused"),
            &header_line(s),
            &format!("<p class=\"failed\">{}</p>", esc(what)),
        ),
    )
}

fn header_line(s: &Shared) -> String {
    format!(
        "<span class=\"meta\">{} · session ends {}</span>",
        esc(&s.title),
        esc(&s.expires)
    )
}

fn admitted(s: &Shared, req: &Parts) -> bool {
    if s.admit.is_empty() {
        return true;
    }
    match req.extensions.get::<Peer>().map(|p| p.0.ip()) {
        Some(std::net::IpAddr::V4(ip)) => s.admit.iter().any(|c| c.contains_addr(ip)),
        Some(std::net::IpAddr::V6(ip)) => ip
            .to_ipv4_mapped()
            .is_some_and(|ip| s.admit.iter().any(|c| c.contains_addr(ip))),
        None => false,
    }
}

async fn route(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (req, body) = req.into_parts();
    if !admitted(&s, &req) {
        return refuse(
            &s,
            StatusCode::FORBIDDEN,
            "This address is not one the session admits (its allow).",
        );
    }
    let (token, in_query) = presented(&req);
    let Some(token) = token.filter(|t| token_matches(t, &s.token_sha256)) else {
        return refuse(
            &s,
            StatusCode::UNAUTHORIZED,
            "This session needs its access token: open the URL skiff printed when the session started.",
        );
    };
    let mut resp = dispatch(&s, req, body).await;
    if in_query {
        // From now on the cookie carries it, and links need no token.
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict"
        )) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The decoded bytes of the path after `prefix`, refusing encoded separators,
/// `.`, `..` and NUL in any component.
pub fn decode_rel(raw: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for c in raw.split('/').filter(|c| !c.is_empty()) {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(c).collect();
        if bytes.contains(&b'/') || bytes.contains(&0) {
            return Err("a path component holds an encoded separator or NUL".into());
        }
        if bytes == b"." || bytes == b".." {
            return Err("`.` and `..` are not accepted in paths".into());
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// The query's values for `key`, percent-decoded to bytes.
fn query_values(req: &Parts, key: &str) -> Vec<Vec<u8>> {
    let q = req.uri.query().unwrap_or("");
    q.split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v).collect()
        })
        .collect()
}

fn query_str(req: &Parts, key: &str) -> Option<String> {
    query_values(req, key)
        .into_iter()
        .next()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn client(req: &Parts) -> String {
    req.extensions
        .get::<Peer>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default()
}

async fn dispatch(s: &Arc<Shared>, req: Parts, body: Body) -> Response {
    let path = req.uri.path().to_string();
    if req.method != Method::GET && req.method != Method::HEAD && req.method != Method::POST {
        return refuse(
            s,
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and POST are served",
        );
    }
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let first = parts.next().unwrap_or("");
    let part_no = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    match (req.method.clone(), first) {
        (Method::GET, "") => index(s),
        (Method::GET, "static") => match part_no {
            "app.css" => ([(header::CONTENT_TYPE, "text/css")], pages::CSS).into_response(),
            "app.js" => ([(header::CONTENT_TYPE, "text/javascript")], pages::JS).into_response(),
            _ => refuse(s, StatusCode::NOT_FOUND, "no such file"),
        },
        (m, "p" | "search" | "archive" | "restore") => {
            let Some(fs) = part_no
                .parse::<u32>()
                .ok()
                .and_then(|n| s.filesystems.iter().find(|f| f.index == n))
            else {
                return refuse(s, StatusCode::NOT_FOUND, "no such partition");
            };
            let root = match &fs.root {
                Ok(r) => r,
                Err(why) => {
                    return refuse(
                        s,
                        StatusCode::NOT_FOUND,
                        &format!("partition {} is not browsable: {why}", fs.index),
                    )
                }
            };
            match (m, first) {
                (Method::GET, "p") => {
                    let rel = match decode_rel(rest)
                        .and_then(|b| RelPath::from_bytes(&b).map_err(|e| e.to_string()))
                    {
                        Ok(r) => r,
                        Err(e) => return refuse(s, StatusCode::BAD_REQUEST, &e),
                    };
                    browse(s, fs, root, rel, &req).await
                }
                (Method::GET, "search") => search(s, fs, root, &req).await,
                (Method::GET, "archive") => download_archive(s, fs, root, &req),
                (Method::POST, "restore") => restore(s, fs, &req, body).await,
                _ => refuse(s, StatusCode::METHOD_NOT_ALLOWED, "not served"),
            }
        }
        _ => refuse(s, StatusCode::NOT_FOUND, "no such page"),
    }
}

fn index(s: &Shared) -> Response {
    let mut rows = String::new();
    for f in &s.filesystems {
        let what = match &f.root {
            Ok(_) => format!("<a href=\"/p/{}/\">{}</a>", f.index, esc(&f.label)),
            Err(why) => format!(
                "{} <span class=\"note\">— {}</span>",
                esc(&f.label),
                esc(why)
            ),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{what}</td><td>{}</td></tr>\n",
            f.index,
            esc(f.uuid.as_deref().unwrap_or(""))
        ));
    }
    let body = format!(
        "<table class=\"partitions\"><thead><tr><th>#</th><th>Partition</th><th>Filesystem UUID</th></tr></thead>\
         <tbody>\n{rows}</tbody></table>\n"
    );
    html(
        StatusCode::OK,
        pages::page("Partitions", &header_line(s), &body),
    )
}

fn tree_status(e: &tree::TreeError) -> StatusCode {
    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn browse(s: &Arc<Shared>, fs: &Fs, root: &Arc<Root>, rel: RelPath, req: &Parts) -> Response {
    let entry = match blocking({
        let (root, rel) = (root.clone(), rel.clone());
        move || root.stat(&rel)
    })
    .await
    {
        Ok(e) => e,
        Err(e) => return refuse(s, tree_status(&e), &e.to_string()),
    };
    let bytes = rel.as_bytes().to_vec();
    let label = format!("partition {}", fs.index);
    match entry.kind {
        Kind::Dir => {
            let offset = query_str(req, "offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0usize);
            let listing = match blocking({
                let (root, rel) = (root.clone(), rel.clone());
                move || root.list(&rel, offset, PAGE)
            })
            .await
            {
                Ok(l) => l,
                Err(e) => return refuse(s, tree_status(&e), &e.to_string()),
            };
            let mut rows = String::new();
            for e in &listing.entries {
                let mut child = bytes.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(e.name.as_encoded_bytes());
                rows.push_str(&pages::entry_row(fs.index, &child, e, false));
            }
            let mut body = pages::breadcrumbs(fs.index, &label, &bytes);
            body.push_str(&pages::search_form(fs.index, &bytes, ""));
            body.push_str(&pages::selection_form(
                fs.index,
                &rows,
                s.restorer.is_some(),
            ));
            let shown = offset + listing.entries.len();
            if shown < listing.total {
                body.push_str(&format!(
                    "<p><a href=\"?offset={shown}\" id=\"next\">next {PAGE} of {}</a></p>",
                    listing.total
                ));
            }
            if listing.truncated {
                body.push_str("<p class=\"note\">This folder has more entries than a listing reads; search finds the others.</p>");
            }
            let title = format!("/{}", String::from_utf8_lossy(&bytes));
            html(StatusCode::OK, pages::page(&title, &header_line(s), &body))
        }
        Kind::File
            if query_values(req, "download").is_empty()
                && query_values(req, "preview").is_empty() =>
        {
            let title = format!("/{}", String::from_utf8_lossy(&bytes));
            let href = format!("/p/{}/{}", fs.index, pages::url_path(&bytes));
            let mut body = pages::breadcrumbs(fs.index, &label, &bytes);
            body.push_str(&format!(
                "<p>{} · modified {} · {} · {}:{}</p>\n<p><a href=\"{href}?download\" id=\"download\">Download</a>",
                pages::size(entry.size),
                pages::mtime(entry.mtime),
                pages::mode(entry.mode, &entry.kind),
                esc(&entry.owner.clone().unwrap_or_else(|| entry.uid.to_string())),
                esc(&entry.group.clone().unwrap_or_else(|| entry.gid.to_string())),
            ));
            if entry.size as usize <= PREVIEW_MAX {
                body.push_str(&format!(
                    " · <a href=\"{href}?preview\" id=\"preview\">Preview</a>"
                ));
            }
            body.push_str("</p>\n");
            html(StatusCode::OK, pages::page(&title, &header_line(s), &body))
        }
        Kind::File if !query_values(req, "preview").is_empty() => {
            let p = blocking({
                let (root, rel) = (root.clone(), rel.clone());
                move || root.preview(&rel, PREVIEW_MAX)
            })
            .await;
            let title = format!("/{}", String::from_utf8_lossy(&bytes));
            let body = match p {
                Ok(tree::Preview::Text(t)) => format!("<pre class=\"preview\">{}</pre>", esc(&t)),
                Ok(tree::Preview::Binary) => {
                    "<p class=\"note\">Not text: download it instead.</p>".into()
                }
                Ok(tree::Preview::TooLarge) => {
                    "<p class=\"note\">Too large to preview: download it instead.</p>".into()
                }
                Err(e) => return refuse(s, tree_status(&e), &e.to_string()),
            };
            html(
                StatusCode::OK,
                pages::page(
                    &title,
                    &header_line(s),
                    &(pages::breadcrumbs(fs.index, &label, &bytes) + &body),
                ),
            )
        }
        Kind::File => download_file(s, fs, root, rel, req).await,
        Kind::Symlink { target } => refuse(
            s,
            StatusCode::BAD_REQUEST,
            &format!(
                "/{} is a symbolic link to {}; links are shown, never followed",
                String::from_utf8_lossy(&bytes),
                target.to_string_lossy()
            ),
        ),
        Kind::Other(_) => refuse(s, StatusCode::BAD_REQUEST, "not a regular file or folder"),
    }
}

/// A file, whole or one byte range (so large downloads resume).
async fn download_file(
    s: &Arc<Shared>,
    fs: &Fs,
    root: &Arc<Root>,
    rel: RelPath,
    req: &Parts,
) -> Response {
    let opened = blocking({
        let (root, rel) = (root.clone(), rel.clone());
        move || root.open_file(&rel)
    })
    .await;
    let (file, entry) = match opened {
        Ok(f) => f,
        Err(e) => return refuse(s, tree_status(&e), &e.to_string()),
    };
    let size = entry.size;
    let range = match req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => match tree::parse_range(r, size) {
            Ok(r) => r,
            Err(_) => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .unwrap_or_default()
            }
        },
        None => None,
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    let len = if size == 0 { 0 } else { end - start + 1 };
    let name = entry.name.to_string_lossy().into_owned();
    s.audit.record(record(
        s,
        req,
        "download",
        fs.index,
        vec![String::from_utf8_lossy(rel.as_bytes()).into_owned()],
        len,
        "served",
    ));
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        stream_blocking(move |w| copy_range(file, start, len, w))
    };
    let mut b = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, disposition(&name));
    if range.is_some() {
        b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
    }
    b.body(body).unwrap_or_default()
}

fn copy_range(
    file: std::fs::File,
    start: u64,
    len: u64,
    w: &mut ChannelWriter,
) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    let mut f = file;
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut left = len;
    let mut buf = vec![0u8; 256 << 10];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank",
            ));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// `attachment` with the name in RFC 6266's UTF-8 form, and an ASCII fallback.
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    )
}

fn selected(req: &Parts) -> Result<Vec<RelPath>, String> {
    let items = query_values(req, "item");
    if items.is_empty() {
        return Err("select at least one file or folder".into());
    }
    items
        .iter()
        .map(|b| {
            let clean = decode_rel_bytes(b)?;
            RelPath::from_bytes(&clean).map_err(|e| e.to_string())
        })
        .collect()
}

/// A form value's bytes (already percent-decoded once) checked like a URL path.
fn decode_rel_bytes(b: &[u8]) -> Result<Vec<u8>, String> {
    if b.contains(&0) {
        return Err("a path holds NUL".into());
    }
    if b.first() == Some(&b'/') {
        return Err("absolute paths are not accepted".into());
    }
    if b.split(|c| *c == b'/').any(|c| c == b"." || c == b"..") {
        return Err("`.` and `..` are not accepted in paths".into());
    }
    Ok(b.to_vec())
}

/// The selection as one tar, streamed as it is read: no copy is made.
fn download_archive(s: &Arc<Shared>, fs: &Fs, root: &Arc<Root>, req: &Parts) -> Response {
    let items = match selected(req) {
        Ok(i) => i,
        Err(e) => return refuse(s, StatusCode::BAD_REQUEST, &e),
    };
    let names: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8_lossy(i.as_bytes()).into_owned())
        .collect();
    let file = match items.as_slice() {
        [one] => format!(
            "{}.tar",
            String::from_utf8_lossy(
                one.as_bytes()
                    .rsplit(|b| *b == b'/')
                    .next()
                    .unwrap_or(b"selection")
            )
        ),
        _ => "selection.tar".to_string(),
    };
    s.audit
        .record(record(s, req, "archive", fs.index, names, 0, "served"));
    let root = root.clone();
    let body = stream_blocking(move |w| {
        archive::write_tar(&root, &items, &mut *w, &archive::ArchiveLimits::default())
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .header(header::CONTENT_DISPOSITION, disposition(&file))
        .body(body)
        .unwrap_or_default()
}

async fn search(s: &Arc<Shared>, fs: &Fs, root: &Arc<Root>, req: &Parts) -> Response {
    let q = query_str(req, "q").unwrap_or_default();
    let within = query_values(req, "in")
        .into_iter()
        .next()
        .unwrap_or_default();
    let within = match decode_rel_bytes(&within)
        .and_then(|b| RelPath::from_bytes(&b).map_err(|e| e.to_string()))
    {
        Ok(w) => w,
        Err(e) => return refuse(s, StatusCode::BAD_REQUEST, &e),
    };
    let label = format!("partition {}", fs.index);
    let mut body = pages::breadcrumbs(fs.index, &label, within.as_bytes());
    body.push_str(&pages::search_form(fs.index, within.as_bytes(), &q));
    if q.trim().is_empty() {
        body.push_str("<p class=\"note\">Type a name or a pattern.</p>");
        return html(
            StatusCode::OK,
            pages::page("Search", &header_line(s), &body),
        );
    }
    let found = blocking({
        let (root, within, q) = (root.clone(), within.clone(), q.clone());
        move || root.search(&within, &q, &tree::SearchLimits::default())
    })
    .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => return refuse(s, tree_status(&e), &e.to_string()),
    };
    let mut rows = String::new();
    for (path, e) in &found.hits {
        rows.push_str(&pages::entry_row(fs.index, path.as_bytes(), e, true));
    }
    body.push_str(&format!(
        "<p id=\"found\">{} found{}</p>",
        found.hits.len(),
        if found.truncated {
            " (the search stopped at its limit; narrow it)"
        } else {
            ""
        }
    ));
    body.push_str(&pages::selection_form(
        fs.index,
        &rows,
        s.restorer.is_some(),
    ));
    html(
        StatusCode::OK,
        pages::page(&format!("Search: {q}"), &header_line(s), &body),
    )
}

async fn restore(s: &Arc<Shared>, fs: &Fs, req: &Parts, body: Body) -> Response {
    let Some(restorer) = s.restorer.clone() else {
        return refuse(
            s,
            StatusCode::NOT_FOUND,
            "this session cannot restore to the original instance",
        );
    };
    // SameSite=Strict already keeps other sites' forms out; a browser that
    // says where the form came from must say this origin.
    if let Some(site) = req
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
    {
        if site != "same-origin" && site != "none" {
            return refuse(
                s,
                StatusCode::FORBIDDEN,
                "a restore must come from this session's own pages",
            );
        }
    }
    let who = client(req);
    let form = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                s,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the selection is too large",
            )
        }
    };
    let mut items = Vec::new();
    let mut overwrite = false;
    for (k, v) in form_pairs(&form) {
        match k.as_slice() {
            b"item" => match decode_rel_bytes(&v)
                .and_then(|b| RelPath::from_bytes(&b).map_err(|e| e.to_string()))
            {
                Ok(p) => items.push(p),
                Err(e) => return refuse(s, StatusCode::BAD_REQUEST, &e),
            },
            b"overwrite" => overwrite = v == b"1",
            _ => {}
        }
    }
    if items.is_empty() {
        return refuse(
            s,
            StatusCode::BAD_REQUEST,
            "select at least one file or folder",
        );
    }
    let names: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8_lossy(i.as_bytes()).into_owned())
        .collect();
    let outcome = restorer.restore(fs, items, overwrite).await;
    let (status, body, note) = match &outcome {
        Ok(results) => {
            let mut rows = String::new();
            for r in results {
                rows.push_str(&format!(
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>\n",
                    esc(&r.path),
                    if r.ok { "ok" } else { "failed" },
                    if r.ok { "restored" } else { "failed" },
                    esc(&r.detail)
                ));
            }
            let all = results.iter().all(|r| r.ok);
            (
                StatusCode::OK,
                format!("<table id=\"restored\"><thead><tr><th>Item</th><th>Result</th><th>Where</th></tr></thead><tbody>{rows}</tbody></table>"),
                if all { "restored".to_string() } else { "partly restored".to_string() },
            )
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("<p class=\"failed\">The restore failed: {}</p>", esc(e)),
            format!("failed: {e}"),
        ),
    };
    let mut r = AuditRecord {
        session: s.session.clone(),
        action: if overwrite {
            "restore (overwrite)"
        } else {
            "restore"
        }
        .into(),
        partition: fs.index,
        paths: names,
        bytes: 0,
        outcome: note,
        client: who,
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    if let Ok(res) = &outcome {
        r.paths = res
            .iter()
            .map(|i| format!("{} → {}", i.path, i.detail))
            .collect();
    }
    s.audit.record(r);
    html(
        status,
        pages::page("Restore to the original location", &header_line(s), &body),
    )
}

/// `application/x-www-form-urlencoded` pairs as bytes.
fn form_pairs(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    body.split(|b| *b == b'&')
        .filter_map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            let k = it.next()?;
            let v = it.next().unwrap_or(b"");
            let dec = |x: &[u8]| -> Vec<u8> {
                let plus: Vec<u8> = x
                    .iter()
                    .map(|b| if *b == b'+' { b' ' } else { *b })
                    .collect();
                percent_encoding::percent_decode(&plus).collect()
            };
            Some((dec(k), dec(v)))
        })
        .collect()
}

fn record(
    s: &Shared,
    req: &Parts,
    action: &str,
    part: u32,
    paths: Vec<String>,
    bytes: u64,
    outcome: &str,
) -> AuditRecord {
    AuditRecord {
        session: s.session.clone(),
        action: action.into(),
        partition: part,
        paths,
        bytes,
        outcome: outcome.into(),
        client: client(req),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a filesystem call panicked")
}

/// A `Write` feeding a response body through a small channel: memory stays
/// bounded, and a client that went away stops the writer at its next write.
pub struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 << 10;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

/// A body produced by `produce` on a blocking thread.
fn stream_blocking(
    produce: impl FnOnce(&mut ChannelWriter) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = produce(&mut w).and_then(|_| std::io::Write::flush(&mut w));
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!("flr: a download stopped: {e}");
                // The body ends with an error, so the client sees a broken
                // transfer rather than a short file.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Body::from_stream(stream)
}

/// Headers a test or a client may want to look at.
pub fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_in_any_encoding_is_refused() {
        assert_eq!(decode_rel("a%20b/c").unwrap(), b"a b/c");
        assert!(decode_rel("a/../b").is_err());
        assert!(decode_rel("a/%2e%2e/b").is_err());
        assert!(decode_rel("a%2Fb").is_err());
        assert!(decode_rel("a%2f..%2fb").is_err());
        assert!(decode_rel("a%00b").is_err());
        assert_eq!(decode_rel("//a//b/").unwrap(), b"a/b");
        assert!(decode_rel_bytes(b"/etc/passwd").is_err());
        assert!(decode_rel_bytes(b"x/../../y").is_err());
    }

    #[test]
    fn the_token_is_compared_by_its_digest() {
        let t = "s3cret";
        let mut h = [0u8; 32];
        h.copy_from_slice(digest::digest(&digest::SHA256, t.as_bytes()).as_ref());
        assert!(token_matches(t, &h));
        assert!(!token_matches("s3cre", &h));
        assert!(!token_matches("", &h));
    }
}
