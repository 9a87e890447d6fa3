//! `flr{}`: a file-level recovery session of a restore point, on a worker
//! placed for purpose `flr` next to the repository (or on this machine with
//! `local = true`). The call returns when the session ends (its ttl, an
//! interrupt, or the run being stopped), with what it served; `on_open`
//! is called with the URL, token and fingerprints once it listens.
//! `skiff flr` uses the same Rust half.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaSerdeExt, Value};
use serde::Deserialize;
use serde_json::json;

use super::workers::{deploy_with, DeployOpts};
use super::{ApiError, ApiResult, Context, Registrar};
use crate::cloud::S3Endpoint;
use crate::failure::Kind;
use crate::flr::server::{Audit, AuditRecord};
use crate::flr::session::{parse_ttl, Opened};
use crate::mover::Location;
use crate::ops::flr::{FlrArgs, OP};
use crate::repo::password::PasswordSource;
use crate::repo::RepoUrl;
use crate::workers::channel::Event;

const P: &str = "flr";
/// How long after its ttl a worker's session is given to end by itself
/// before its worker is removed.
const GRACE: Duration = Duration::from_secs(60);

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FlrOpts {
    /// `repo:LOCATION#POINT`.
    pub point: String,
    #[serde(default)]
    pub password: Option<PasswordSource>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub s3_endpoint: Option<S3Endpoint>,
    /// Who may connect: a CIDR (a worker's session needs it).
    #[serde(default)]
    pub allow: Option<String>,
    /// `30m`, `2h` (default 2h, at most 12h).
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub private: Option<bool>,
    /// Serve from this machine on 127.0.0.1 (local repositories).
    #[serde(default)]
    pub local: bool,
}

/// What a session told its opener, with the token for the URL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Announce {
    pub session: String,
    pub token: String,
    /// The URL to open: `https://ADDRESS:PORT/?t=TOKEN`.
    pub url: String,
    #[serde(flatten)]
    pub opened: Opened,
}

/// A fresh access token and its SHA-256 (hex).
pub fn new_token() -> (String, String) {
    use base64::Engine;
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ));
    (token, hash)
}

/// The checked options: the repository and point, the ttl, and the allow.
pub struct Checked {
    pub repo: RepoUrl,
    pub point: String,
    pub ttl: Duration,
    pub allow: Option<crate::network::Cidr>,
}

pub fn check(o: &FlrOpts) -> Result<Checked, ApiError> {
    let (repo, point) = match o.point.parse::<Location>() {
        Ok(Location::Repo {
            repo,
            point: Some(p),
        }) => (repo, p),
        Ok(Location::Repo { point: None, .. }) => {
            return Err(ApiError::field(
                P,
                "point",
                "name the restore point: repo:LOCATION#POINT",
            ))
        }
        _ => {
            return Err(ApiError::field(
                P,
                "point",
                format!("expected repo:LOCATION#POINT, got {:?}", o.point),
            ))
        }
    };
    let ttl =
        parse_ttl(o.ttl.as_deref().unwrap_or("2h")).map_err(|m| ApiError::field(P, "ttl", m))?;
    let allow = o
        .allow
        .as_deref()
        .map(crate::network::cidr::parse_field)
        .transpose()
        .map_err(|m| ApiError::field(P, "allow", m))?;
    if o.local {
        if o.allow.is_some() {
            return Err(ApiError::field(
                P,
                "allow",
                "a local session listens on 127.0.0.1 only",
            ));
        }
        if o.private.is_some() {
            return Err(ApiError::field(
                P,
                "private",
                "a local session has no worker",
            ));
        }
    } else {
        if allow.is_none() {
            return Err(ApiError::field(
                P,
                "allow",
                "required for a worker's session: the address the browser connects from, e.g. 203.0.113.7/32",
            ));
        }
        if !matches!(repo, RepoUrl::S3 { .. }) {
            return Err(ApiError::field(
                P,
                "point",
                "a worker reaches S3 repositories only; serve a local repository from this machine (local = true, --local)",
            ));
        }
        if !matches!(o.password, Some(PasswordSource::Ssm(_))) {
            return Err(ApiError::field(
                P,
                "password",
                "a worker reads the repository password from SSM: password = {ssm = NAME} (--password-ssm)",
            ));
        }
    }
    Ok(Checked {
        repo,
        point,
        ttl,
        allow,
    })
}

/// Runs a session on a worker until it ends or `stop` resolves (its
/// reason); `on_open` hears its address once it listens, `audit` what it
/// served. The worker is removed in every case.
pub async fn on_worker(
    ctx: &Context,
    o: &FlrOpts,
    c: &Checked,
    audit: Arc<dyn Audit>,
    on_open: impl Fn(Announce) + Send + Sync,
    stop: impl Future<Output = String>,
) -> Result<String, ApiError> {
    let (token, hash) = new_token();
    let session = crate::workers::new_id();
    let repo = c.repo.to_string();
    let deploy: DeployOpts = serde_json::from_value(json!({
        "purpose": "flr",
        "resource": {
            "kind": "repository", "location": repo, "region": o.region,
            "account": o.account, "s3_endpoint": o.s3_endpoint,
        },
        "private": o.private,
        "tags": { "flr-session": session },
    }))
    .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
    let mut deploy = deploy;
    deploy.inbound_https = c.allow;
    let w = deploy_with(ctx, deploy).await?;
    // The roles the worker may assume: the repository's account, and the
    // account of the instance a restore to the original location writes
    // to, which only the point (read on the worker) names.
    let accounts: BTreeMap<_, _> = ctx
        .cloud
        .config()
        .accounts
        .iter()
        .filter(|(name, _)| **name != w.scope.account)
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    let args = FlrArgs {
        repo,
        point: c.point.clone(),
        password: o.password.clone(),
        account: o.account.clone().filter(|a| *a != w.scope.account),
        region: Some(o.region.clone().unwrap_or_else(|| w.scope.region.clone())),
        s3_endpoint: o.s3_endpoint.clone(),
        token_sha256: hash,
        ttl_secs: c.ttl.as_secs(),
        session: session.clone(),
        allow: o.allow.clone(),
    };
    let pool = ctx.pool();
    let args = serde_json::to_value(&args)
        .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))?;
    let run = pool.run(&w, OP, args, accounts, |e| {
        let Event::Note { note } = e else { return };
        if let Some(o) = note.get("opened") {
            match serde_json::from_value::<Opened>(o.clone()) {
                Ok(opened) => on_open(Announce {
                    session: session.clone(),
                    url: format!("{}?t={token}", opened.url),
                    token: token.clone(),
                    opened,
                }),
                Err(e) => tracing::warn!("flr: an unreadable session note: {e}"),
            }
        }
        if let Some(a) = note.get("audit") {
            if let Ok(r) = serde_json::from_value::<AuditRecord>(a.clone()) {
                audit.record(r);
            }
        }
    });
    let outcome = tokio::select! {
        r = run => match r {
            Ok(v) => Ok(v.get("why").and_then(|w| w.as_str()).unwrap_or("ended").to_string()),
            Err(e) => Err(e.into_error(P)),
        },
        why = stop => Ok(why),
        _ = tokio::time::sleep(c.ttl + GRACE) => Ok("its ttl passed".to_string()),
    };
    if let Err(e) = pool.remove(&w).await {
        tracing::warn!("flr: removing worker {}: {e}", w.id);
    }
    outcome
}

/// Audit records kept for the script's result, and logged.
struct Collect(std::sync::Mutex<Vec<AuditRecord>>);

impl Audit for Collect {
    fn record(&self, r: AuditRecord) {
        tracing::info!(
            "flr {}: {} {} (partition {}) for {}: {}",
            r.session,
            r.action,
            r.paths.join(", "),
            r.partition,
            r.client,
            r.outcome
        );
        self.0.lock().unwrap().push(r);
    }
}

async fn flr(lua: Lua, ctx: Arc<Context>, v: Value) -> ApiResult {
    let mut on_open: Option<Function> = None;
    let v = match v {
        Value::Table(t) => {
            let t2 = lua.create_table().map_err(|e| ApiError::usage(P, e))?;
            for pair in t.pairs::<Value, Value>() {
                let (k, val) = pair.map_err(|e| ApiError::usage(P, e))?;
                match (&k, val) {
                    (Value::String(s), Value::Function(f)) if s.to_string_lossy() == "on_open" => {
                        on_open = Some(f)
                    }
                    (Value::String(s), _) if s.to_string_lossy() == "on_open" => {
                        return Err(ApiError::field(P, "on_open", "expected a function"))
                    }
                    (_, val) => t2.set(k, val).map_err(|e| ApiError::usage(P, e))?,
                }
            }
            Value::Table(t2)
        }
        other => other,
    };
    let o: FlrOpts = super::opts::parse(P, v)?;
    let c = check(&o)?;
    let audit = Arc::new(Collect(Default::default()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Announce>();
    let stop = {
        let s = ctx.stop.clone();
        async move { s.wait().await }
    };
    let session = async {
        if o.local {
            local(
                &ctx.cloud,
                &o,
                &c,
                audit.clone(),
                move |a| {
                    let _ = tx.send(a);
                },
                stop,
            )
            .await
        } else {
            on_worker(
                &ctx,
                &o,
                &c,
                audit.clone(),
                move |a| {
                    let _ = tx.send(a);
                },
                stop,
            )
            .await
        }
    };
    tokio::pin!(session);
    let why = loop {
        tokio::select! {
            r = &mut session => break r?,
            Some(a) = rx.recv() => {
                eprintln!("skiff: flr session {} opened: {} (certificate SHA-256 {})", a.session, a.url, a.opened.fingerprint);
                if let Some(f) = &on_open {
                    let t = lua.to_value(&a).map_err(|e| ApiError::usage(P, e))?;
                    f.call_async::<()>(t).await.map_err(|e| ApiError::usage(P, format!("on_open: {e}")))?;
                }
            }
        }
    };
    let served = audit.0.lock().unwrap().clone();
    let out = json!({ "why": why, "served": served });
    lua.to_value(&out)
        .map_err(|e| ApiError::fail(Kind::Internal, P, e.to_string()))
}

/// A session on this machine, on 127.0.0.1.
pub async fn local(
    cloud: &Arc<crate::cloud::Cloud>,
    o: &FlrOpts,
    c: &Checked,
    audit: Arc<dyn Audit>,
    on_open: impl Fn(Announce) + Send + Sync,
    stop: impl Future<Output = String>,
) -> Result<String, ApiError> {
    let (token, hash) = new_token();
    let session = crate::workers::new_id();
    let args = FlrArgs {
        repo: c.repo.to_string(),
        point: c.point.clone(),
        password: o.password.clone(),
        account: o.account.clone(),
        region: o.region.clone(),
        s3_endpoint: o.s3_endpoint.clone(),
        token_sha256: hash,
        ttl_secs: c.ttl.as_secs(),
        session: session.clone(),
        allow: None,
    };
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let (s, opened) = crate::ops::flr::open(cloud, &args, listen, names, audit, None)
        .await
        .map_err(|m| ApiError::fail(Kind::Internal, P, m))?;
    on_open(Announce {
        session,
        url: format!("{}?t={token}", opened.url),
        token,
        opened,
    });
    Ok(crate::ops::flr::hold(s, c.ttl, stop).await)
}

pub fn register(lua: &Lua, reg: &Registrar) -> mlua::Result<()> {
    lua.globals().set("flr", reg.async_fn(flr)?)
}
