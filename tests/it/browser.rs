//! Clients of a file-level recovery session for the tests: `curl` pinned
//! to the session's public key, and headless Chromium driven over WebDriver
//! (chromedriver), trusting only that key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

/// What `skiff flr` printed when its session opened.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: String,
    pub url: String,
    pub base: String,
    pub token: String,
    pub fingerprint: String,
    pub spki: String,
    pub partitions: Vec<String>,
}

impl Opened {
    pub fn parse(out: &str) -> Option<Opened> {
        let field = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let url = field("url:")?;
        let (base, token) = url.split_once("?t=")?;
        let fingerprint = field("certificate:")?
            .trim_start_matches("SHA-256 ")
            .to_string();
        let spki = field("public key:")?
            .trim_start_matches("SHA-256 ")
            .split_whitespace()
            .next()?
            .to_string();
        let partitions = out
            .lines()
            .filter_map(|l| l.strip_prefix("partition:").map(|v| v.trim().to_string()))
            .collect();
        Some(Opened {
            session: field("session:")?,
            url: url.clone(),
            base: base.to_string(),
            token: token.to_string(),
            fingerprint,
            spki,
            partitions,
        })
    }
}

/// A response as curl saw it.
pub struct Got {
    pub status: u16,
    /// What curl said on stderr (why it got no answer, when it got none).
    pub err: String,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl` of `url` trusting only the session's key; `extra` are more curl
/// arguments (a cookie, a Range header, a method).
pub fn curl(spki: &str, url: &str, extra: &[&str]) -> Got {
    let dir = tempfile::tempdir().unwrap();
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-k", "--path-as-is"])
        .arg("--pinnedpubkey")
        .arg(format!("sha256//{spki}"))
        .arg("-D")
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Got {
        status,
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
        headers: std::fs::read_to_string(&h).unwrap_or_default(),
        body: std::fs::read(&b).unwrap_or_default(),
    }
}

/// A headless Chromium under chromedriver, downloading into `downloads`.
pub struct Browser {
    driver: std::process::Child,
    port: u16,
    session: String,
    pub downloads: PathBuf,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "120", "-X", method])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .args(["-H", "Content-Type: application/json"]);
    if let Some(b) = body {
        c.args(["-d", &b.to_string()]);
    }
    let out = c.output().expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "WebDriver {method} {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

impl Browser {
    /// Chromium trusting only the certificate whose public key hashes to `spki`.
    pub fn start(spki: &str, downloads: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (tools/system.sh installs chromium-driver)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--ignore-certificate-errors-spki-list={spki}"),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false,
                },
            },
        }}});
        let r = wd(port, "POST", "/session", Some(caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        let b = Browser {
            driver,
            port,
            session,
            downloads: downloads.to_path_buf(),
            _profile: profile,
        };
        b.cmd(
            "POST",
            "/chromium/send_command",
            json!({"cmd": "Page.setDownloadBehavior",
                   "params": {"behavior": "allow", "downloadPath": downloads.display().to_string()}}),
        );
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            None
        } else {
            Some(body)
        };
        wd(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn source(&self) -> String {
        self.cmd("GET", "/source", Value::Null)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn current_url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element `css` selects; panics with the page when there is none.
    pub fn find(&self, css: &str) -> String {
        let r = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        r["value"]
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                panic!(
                    "no element {css:?} on {}:\n{}",
                    self.current_url(),
                    self.source()
                )
            })
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    pub fn screenshot(&self, to: &Path) {
        use base64::Engine;
        let r = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["value"].as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }

    /// Waits for a finished download named `name`.
    pub fn downloaded(&self, name: &str) -> PathBuf {
        let p = self.downloads.join(name);
        for _ in 0..600 {
            let partial = std::fs::read_dir(&self.downloads)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".crdownload"))
                })
                .unwrap_or(false);
            if p.is_file() && !partial {
                return p;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let have: Vec<_> = std::fs::read_dir(&self.downloads)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!("{name} was not downloaded; the folder has {have:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = wd(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
