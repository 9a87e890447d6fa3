//! The browser's views: the partitions, a folder, a file, a search, a
//! download, an archive and a restore — each a response built from the
//! session's filesystems ([`super::tree`]) and pages ([`super::pages`]).

use std::sync::Arc;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::Response;

use super::archive;
use super::pages::{self, esc};
use super::request::{client, pairs, query_str, query_values, rel_from_value, selected};
use super::server::{header_line, html, refuse, AuditRecord, Fs, Shared};
use super::stream::{copy_range, stream_blocking};
use super::tree::{self, Kind, RelPath, Root};

/// Entries a listing page shows.
const PAGE: usize = 500;
/// Files previewed inline at most this large.
const PREVIEW_MAX: usize = 256 << 10;

pub fn index(s: &Shared) -> Response {
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

pub async fn browse(
    s: &Arc<Shared>,
    fs: &Fs,
    root: &Arc<Root>,
    rel: RelPath,
    req: &Parts,
) -> Response {
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
pub async fn download_file(
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

/// The selection as one tar, streamed as it is read: no copy is made.
pub fn download_archive(s: &Arc<Shared>, fs: &Fs, root: &Arc<Root>, req: &Parts) -> Response {
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

pub async fn search(s: &Arc<Shared>, fs: &Fs, root: &Arc<Root>, req: &Parts) -> Response {
    let q = query_str(req, "q").unwrap_or_default();
    let within = query_values(req, "in")
        .into_iter()
        .next()
        .unwrap_or_default();
    let within = match rel_from_value(&within) {
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

pub async fn restore(s: &Arc<Shared>, fs: &Fs, req: &Parts, body: Body) -> Response {
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
    for (k, v) in pairs(&form) {
        match k.as_slice() {
            b"item" => match rel_from_value(&v) {
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
