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
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use super::pages::{self, esc};
use super::request::{query_str, rel_from_url, Peer};
use super::tree::{RelPath, Root};
use super::views::{browse, download_archive, index, restore, search};

pub const COOKIE: &str = "skiff_flr";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
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
    if let Some(t) = query_str(req, "t") {
        return (Some(t), true);
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

pub(super) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn refuse(s: &Shared, status: StatusCode, what: &str) -> Response {
    html(
        status,
        pages::page(
            status.canonical_reason().unwrap_or("refused"),
            &header_line(s),
            &format!("<p class=\"failed\">{}</p>", esc(what)),
        ),
    )
}

pub(super) fn header_line(s: &Shared) -> String {
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
                    let rel = match rel_from_url(rest) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
