//! `skiff flr repo:LOCATION#POINT`: a file-level recovery session — the
//! point's filesystems, mounted read-only, in a browser over HTTPS with the
//! session's own certificate — on a worker next to the repository that
//! admits `--allow` only, or with `--local` on this machine's 127.0.0.1;
//! until Ctrl-C, SIGTERM or its ttl.

use std::sync::Arc;

use clap::Args;

use super::copy::AccessOpts;
use super::{ScriptOpts, Session};
use crate::api::{self, flr::Announce, flr::FlrOpts};
use crate::flr::server::{Audit, AuditRecord};

#[derive(Args, Debug)]
pub struct FlrArgsCli {
    /// The point: repo:LOCATION#POINT (a directory or s3://BUCKET/PREFIX).
    pub point: String,
    /// Serve from this machine, on 127.0.0.1.
    #[arg(long)]
    pub local: bool,
    /// The port to serve on with --local (default: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Who may connect to a worker's session: a CIDR, e.g. your address/32.
    #[arg(long, value_name = "CIDR")]
    pub allow: Option<String>,
    /// Launch the worker in a private subnet (as [workers] private does).
    #[arg(long)]
    pub private: bool,
    /// How long the session lives: 30m, 2h (at most 12h).
    #[arg(long, default_value = "2h", value_parser = crate::flr::session::parse_ttl)]
    pub ttl: std::time::Duration,
    /// Write the session's certificate (PEM) here, to pin it in a client.
    #[arg(long, value_name = "FILE")]
    pub cert_out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub access: AccessOpts,
}

/// What the browser served, recorded in the run history beside policy runs.
struct HistoryAudit {
    history: Option<crate::serve::history::History>,
}

impl Audit for HistoryAudit {
    fn record(&self, r: AuditRecord) {
        eprintln!(
            "skiff: flr {}: {} {} (partition {}) for {}: {}",
            r.session,
            r.action,
            r.paths.join(", "),
            r.partition,
            r.client,
            r.outcome
        );
        if let Some(h) = &self.history {
            if let Err(e) = h.record_flr(&r) {
                eprintln!("skiff: the run history did not take it: {e}");
            }
        }
    }
}

pub async fn flr(a: FlrArgsCli) -> anyhow::Result<i32> {
    let o = FlrOpts {
        point: a.point.clone(),
        password: a.access.password(),
        account: a.access.account.clone(),
        region: a.access.region.clone(),
        s3_endpoint: a.access.s3_endpoint.clone(),
        allow: a.allow.clone(),
        ttl: Some(format!("{}s", a.ttl.as_secs())),
        private: a.private.then_some(true),
        local: a.local,
    };
    let c = api::flr::check(&o).map_err(|e| anyhow::anyhow!("{}", flag_of(&e.to_string())))?;
    let state = crate::serve::default_state_dir();
    let history =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&state)
            .map_err(|e| e.to_string())
            .and_then(|_| crate::serve::history::History::open(&state).map_err(|e| e.to_string()));
    let history = match history {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("skiff: downloads and restores will not be in the run history: {e}");
            None
        }
    };
    let audit: Arc<dyn Audit> = Arc::new(HistoryAudit { history });
    let cert_out = a.cert_out.clone();
    let on_open = move |an: Announce| {
        if let Some(p) = &cert_out {
            if let Err(e) = std::fs::write(p, &an.opened.certificate_pem) {
                eprintln!("skiff: --cert-out {}: {e}", p.display());
            }
        }
        print_opened(&an);
    };
    let stop = async { format!("stopped ({})", super::signal().await) };
    let why = if a.local {
        // AWS only when the session needs it: an S3 repository, a password
        // in SSM, or a bucket to stage restores to the original instance.
        let agents = crate::config::Config::discover(a.access.config.as_deref(), None)
            .is_ok_and(|c| c.workers.agents.is_some());
        let needs_aws = matches!(c.repo, crate::repo::RepoUrl::S3 { .. })
            || o.password.as_ref().is_some_and(|p| p.needs_ssm())
            || agents;
        let cloud = a.access.cloud(needs_aws).await?;
        api::flr::local(&cloud, &o, &c, audit, on_open, stop).await
    } else {
        let script = ScriptOpts {
            config: a.access.config.clone(),
            ..Default::default()
        };
        let session = Session::open(&script, None).await?;
        let ctx = session.ctx.clone();
        let why = api::flr::on_worker(&ctx, &o, &c, audit, on_open, stop).await;
        ctx.pool.remove_all().await;
        why
    };
    let why = why.map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("skiff: the file-level recovery session ended: {why}; its mounts are gone");
    Ok(0)
}

/// A Lua option's name as the command line spells it.
fn flag_of(message: &str) -> String {
    message
        .replace("flr: opts.point:", "POINT:")
        .replace("flr: opts.allow:", "--allow:")
        .replace("flr: opts.ttl:", "--ttl:")
        .replace("flr: opts.private:", "--private:")
        .replace("flr: opts.password:", "--password-ssm:")
}

/// The lines an operator (or a test) reads: the URL with the token, and
/// what the browser must show for the certificate.
pub fn print_opened(an: &Announce) {
    let o = &an.opened;
    println!("session:     {}", an.session);
    println!("url:         {}", an.url);
    println!("certificate: SHA-256 {}", o.fingerprint);
    println!(
        "public key:  SHA-256 {} (base64; Chromium's --ignore-certificate-errors-spki-list)",
        o.spki_sha256
    );
    for p in &o.partitions {
        println!("partition:   {p}");
    }
    println!("ends:        {} (Ctrl-C ends it sooner)", o.expires);
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
