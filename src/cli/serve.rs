//! `skiff serve [DIR]`, `skiff runs` and `skiff policies`.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use super::{ScriptOpts, Session};
use crate::host::signals;
use crate::serve::control::{Client, FileStatus, Op, PoliciesView, PolicyStatus};
use crate::serve::history::{History, RunRecord};
use crate::serve::{self, ServeConfig};

/// Where the run history, control socket and agent logs live.
#[derive(Args, Debug, Clone, Default)]
pub struct StateArgs {
    /// skiff's state dir: run history (skiff.db), the control socket of
    /// `skiff serve`, agent logs (default: $XDG_STATE_HOME/skiff, else ~/.local/state/skiff).
    #[arg(long, env = "SKIFF_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(serve::default_state_dir)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Folder of policy scripts: every *.lua directly in it is loaded, each in
    /// its own VM (put shared modules in a subfolder and `require` them).
    #[arg(default_value = "scripts")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub state: StateArgs,
    /// After Ctrl-C or SIGTERM, how long running runs may go on before they
    /// are cancelled and their workers removed, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub grace: f64,
    /// Quiet time after a change to a file before it is reloaded, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce: u64,
    /// Do not remove, at start, workers that earlier skiff processes left behind.
    #[arg(long)]
    pub no_reap: bool,
    #[command(flatten)]
    pub opts: ScriptOpts,
}

pub async fn serve_main(a: ServeArgs) -> anyhow::Result<i32> {
    if !a.dir.is_dir() {
        anyhow::bail!(
            "{}: no such folder of policy scripts (give one: skiff serve DIR)",
            a.dir.display()
        );
    }
    // Config and `require` are found as for a script in DIR.
    let session = Session::open(&a.opts, Some(&a.dir.join("policy.lua"))).await?;
    if !(a.grace.is_finite() && a.grace >= 0.0) {
        anyhow::bail!("--grace: expected seconds ≥ 0, got {}", a.grace);
    }
    let mut cfg = ServeConfig::new(
        session.config.clone(),
        session.ctx.cloud.clone(),
        session.vm_options.clone(),
        a.state.dir(),
    );
    cfg.grace = Duration::from_secs_f64(a.grace);
    // Counted beside tokio's handlers, so a run stops on the signal even
    // when every runtime thread is busy in Lua (with no grace period).
    signals::watch(&[libc::SIGINT, libc::SIGTERM])?;
    cfg.signals_after = cfg.grace.is_zero().then(signals::count);
    cfg.debounce = Duration::from_millis(a.debounce);
    cfg.reap = !a.no_reap;
    serve::run(cfg, &a.dir, super::interrupted()).await?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Only the runs of this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn took(r: &RunRecord) -> String {
    match (r.started, r.ended) {
        (Some(s), Some(e)) => format!("{:.1}s", (e - s).num_milliseconds() as f64 / 1000.0),
        (Some(s), None) => format!("{:.0}s…", (Utc::now() - s).num_seconds()),
        _ => "-".into(),
    }
}

fn clip(s: &str, n: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() > n {
        format!("{}…", line.chars().take(n - 1).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Prints rows as aligned columns (the last column is not padded).
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        let last = cells.len() - 1;
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub async fn runs_main(a: RunsArgs) -> anyhow::Result<i32> {
    let dir = a.state.dir();
    let Some(history) = History::open_existing(&dir)? else {
        eprintln!(
            "skiff runs: no run history in {} (skiff serve has not run with this state dir)",
            dir.display()
        );
        return Ok(0);
    };
    let runs = history.runs(a.policy.as_deref(), a.limit)?;
    if a.json {
        for r in &runs {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.policy.clone(),
                r.trigger.as_str().to_string(),
                when(Some(r.scheduled)),
                when(r.started),
                took(r),
                r.outcome.as_str().to_string(),
                r.points.map_or("-".into(), |p| p.to_string()),
                r.bytes.map_or("-".into(), human_bytes),
                r.version.to_string(),
                r.error.as_deref().map(|e| clip(e, 100)).unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "RUN",
            "POLICY",
            "TRIGGER",
            "SCHEDULED (UTC)",
            "STARTED (UTC)",
            "TOOK",
            "OUTCOME",
            "POINTS",
            "BYTES",
            "VERSION",
            "ERROR",
        ],
        &rows,
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PoliciesArgs {
    /// The whole view as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

/// The policies view: live from a running engine, else the last known state.
pub async fn policies_view(dir: &std::path::Path) -> anyhow::Result<Option<PoliciesView>> {
    if let Some(mut c) = Client::connect(dir).await {
        if let Ok(v) = c.request(Op::Policies).await {
            return Ok(Some(serde_json::from_value(v)?));
        }
    }
    let Some(history) = History::open_existing(dir)? else {
        return Ok(None);
    };
    let policies = history
        .policies()?
        .into_iter()
        .map(|p| -> anyhow::Result<PolicyStatus> {
            let last = history.last_outcome(&p.name)?;
            Ok(PolicyStatus {
                policy: p,
                running: None,
                last,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let files = history.files()?;
    Ok(Some(PoliciesView {
        live: false,
        policies,
        files,
    }))
}

pub async fn policies_main(a: PoliciesArgs) -> anyhow::Result<i32> {
    let dir = a.state.dir();
    let Some(view) = policies_view(&dir).await? else {
        eprintln!(
            "skiff policies: skiff serve is not running and has never run with the state dir {}",
            dir.display()
        );
        return Ok(0);
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    if !view.live {
        println!("(skiff serve is not running; the last known state)");
    }
    let rows: Vec<Vec<String>> = view
        .policies
        .iter()
        .map(|s| {
            let p = &s.policy;
            let state = match (s.running, p.enabled) {
                (Some(run), _) => format!("running (run {run})"),
                (None, false) => "disabled".into(),
                (None, true) => "idle".into(),
            };
            let last = s
                .last
                .as_ref()
                .map(|r| format!("{} {} (run {})", r.outcome.as_str(), when(r.ended), r.id))
                .unwrap_or_else(|| "-".into());
            vec![
                p.name.clone(),
                p.schedule.clone(),
                when(p.next_run),
                state,
                last,
                p.version.to_string(),
                p.declared_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "POLICY",
            "SCHEDULE (UTC)",
            "NEXT RUN (UTC)",
            "STATE",
            "LAST RUN",
            "VERSION",
            "DECLARED AT",
        ],
        &rows,
    );
    let broken: Vec<&FileStatus> = view.files.iter().filter(|f| f.error.is_some()).collect();
    if !broken.is_empty() {
        println!("\nload errors:");
        for f in broken {
            let keeping = if f.version > 0 {
                format!("keeping version {}", f.version)
            } else {
                "no version active".to_string()
            };
            println!(
                "  {} ({keeping}):\n    {}",
                f.file,
                f.error
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', "\n    ")
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(clip("abcdef\nsecond", 4), "abc…");
    }
}
