//! The browser's pages: server-rendered HTML with plain links and forms, so
//! `curl` and text browsers work; `app.js` only adds select-all. Every
//! name shown is escaped; every path in a link is percent-encoded byte by
//! byte, so any name the filesystem holds round-trips.

use std::fmt::Write;

use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::tree::{Entry, Kind};

/// What a path component keeps unencoded in a link.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub const CSS: &str = include_str!("static/app.css");
pub const JS: &str = include_str!("static/app.js");

/// `s` safe inside HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// A path's bytes as a URL path (components joined by `/`).
pub fn url_path(bytes: &[u8]) -> String {
    bytes
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| percent_encode(c, COMPONENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// A form value carrying a path's bytes (percent-encoded, decoded by the server).
pub fn form_path(bytes: &[u8]) -> String {
    percent_encode(bytes, COMPONENT).to_string()
}

pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn mtime(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// `drwxr-xr-x` from a mode.
pub fn mode(m: u32, kind: &Kind) -> String {
    let t = match kind {
        Kind::Dir => 'd',
        Kind::Symlink { .. } => 'l',
        Kind::File => '-',
        Kind::Other(c) => *c,
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// The frame of every page.
pub fn page(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · skiff</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head>\n<body>\
         <header><a href=\"/\" class=\"home\">skiff file-level recovery</a> {header}</header>\n\
         <main>\n<h1>{t}</h1>\n{body}</main></body></html>\n",
        t = esc(title)
    )
}

/// One row of a listing or of search results, `rel` being the entry's path
/// bytes in its filesystem.
pub fn entry_row(part: u32, rel: &[u8], e: &Entry, show_path: bool) -> String {
    let href = format!("/p/{part}/{}", url_path(rel));
    let shown = if show_path {
        String::from_utf8_lossy(rel).into_owned()
    } else {
        e.name.to_string_lossy().into_owned()
    };
    let name = match &e.kind {
        Kind::Dir => format!("<a href=\"{href}/\" class=\"dir\">{}/</a>", esc(&shown)),
        Kind::File => format!("<a href=\"{href}\" class=\"file\">{}</a>", esc(&shown)),
        Kind::Symlink { target } => format!(
            "<span class=\"link\">{}</span> → <span class=\"target\">{}</span>",
            esc(&shown),
            esc(&target.to_string_lossy())
        ),
        Kind::Other(_) => format!("<span class=\"other\">{}</span>", esc(&shown)),
    };
    let owner = e.owner.clone().unwrap_or_else(|| e.uid.to_string());
    let group = e.group.clone().unwrap_or_else(|| e.gid.to_string());
    let size = match e.kind {
        Kind::File => size(e.size),
        _ => String::new(),
    };
    format!(
        "<tr><td><input type=\"checkbox\" name=\"item\" value=\"{v}\" aria-label=\"select\"></td>\
         <td class=\"name\">{name}</td><td class=\"size\" data-bytes=\"{bytes}\">{size}</td>\
         <td class=\"mtime\">{mt}</td><td class=\"mode\">{md}</td><td class=\"owner\">{o}:{g}</td></tr>\n",
        v = form_path(rel),
        bytes = e.size,
        mt = mtime(e.mtime),
        md = mode(e.mode, &e.kind),
        o = esc(&owner),
        g = esc(&group),
    )
}

/// The form around rows: download the selection, or restore it.
pub fn selection_form(part: u32, rows: &str, restore: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<form method=\"get\" action=\"/archive/{part}\" class=\"selection\">\n\
         <table><thead><tr><th><input type=\"checkbox\" class=\"all\" aria-label=\"select all\" hidden></th>\
         <th>Name</th><th>Size</th><th>Modified (UTC)</th><th>Mode</th><th>Owner</th></tr></thead>\n\
         <tbody>\n{rows}</tbody></table>\n\
         <p class=\"actions\"><button type=\"submit\" id=\"download-selection\">Download selection (.tar)</button>"
    );
    if restore {
        let _ = write!(
            s,
            " <button type=\"submit\" id=\"restore-selection\" formmethod=\"post\" formaction=\"/restore/{part}\">\
             Restore to original location</button>\
             <label><input type=\"checkbox\" name=\"overwrite\" value=\"1\"> overwrite what is there \
             (otherwise written next to it as NAME.restored-TIME)</label>"
        );
    }
    s.push_str("</p></form>\n");
    s
}

/// The search box of a filesystem, searching under `within`.
pub fn search_form(part: u32, within: &[u8], q: &str) -> String {
    format!(
        "<form method=\"get\" action=\"/search/{part}\" class=\"search\">\
         <input type=\"hidden\" name=\"in\" value=\"{w}\">\
         <input type=\"search\" name=\"q\" value=\"{q}\" placeholder=\"name or pattern (*.conf)\" aria-label=\"search\">\
         <button type=\"submit\" id=\"search\">Search</button></form>\n",
        w = form_path(within),
        q = esc(q)
    )
}

/// Links to each folder above `rel`.
pub fn breadcrumbs(part: u32, label: &str, rel: &[u8]) -> String {
    let mut s = format!(
        "<nav class=\"crumbs\"><a href=\"/p/{part}/\">{}</a>",
        esc(label)
    );
    let mut acc: Vec<u8> = Vec::new();
    for c in rel.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        if !acc.is_empty() {
            acc.push(b'/');
        }
        acc.extend_from_slice(c);
        let _ = write!(
            s,
            " / <a href=\"/p/{part}/{}/\">{}</a>",
            url_path(&acc),
            esc(&String::from_utf8_lossy(c))
        );
    }
    s.push_str("</nav>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_paths_encoded_byte_by_byte() {
        assert_eq!(esc("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        assert_eq!(
            url_path(b"dir with spaces/Gr\xc3\xbc\xc3\x9fe"),
            "dir%20with%20spaces/Gr%C3%BC%C3%9Fe"
        );
        assert_eq!(url_path(b"a/%2F/\xff"), "a/%252F/%FF");
        assert_eq!(form_path(b"a/b c"), "a%2Fb%20c");
        assert_eq!(mode(0o755, &Kind::Dir), "drwxr-xr-x");
        assert_eq!(size(1536), "1.5 KiB");
    }
}
