//! Loading one policy file: a fresh VM with every primitive, the script run
//! once to make its declarations, then sealed. Nothing of the running engine
//! is touched, so a failed load leaves the last good version in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::api::{self, Context};
use crate::host::{CallOptions, Vm};
use crate::network::Waits;
use crate::policy::Policy;
use crate::serve::ServeConfig;
use crate::workers::{WorkerPool, WorkerSettings};

/// A file that loaded: its VM and what it declared.
pub struct Loaded {
    pub vm: Vm,
    /// The worker settings the script made (`workers.configuration{}` …);
    /// every run's worker pool starts from them.
    pub settings: Arc<Mutex<WorkerSettings>>,
    pub policies: Vec<Policy>,
    /// Files the script `require`d (watched for changes too).
    pub deps: Vec<PathBuf>,
    /// SHA-256 of the script and its required files, hex, shortened.
    pub digest: String,
}

#[derive(Debug)]
pub struct LoadFailure {
    /// `file:line: message`.
    pub message: String,
    /// Files the failed attempt `require`d (so fixing one reloads this file).
    pub deps: Vec<PathBuf>,
}

fn digest_of(file: &Path, deps: &[PathBuf]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in std::iter::once(&file.to_path_buf()).chain(deps.iter()) {
        ctx.update(p.display().to_string().as_bytes());
        ctx.update(&[0]);
        ctx.update(&std::fs::read(p).unwrap_or_default());
        ctx.update(&[0]);
    }
    hex::encode(&ctx.finish().as_ref()[..6])
}

/// Loads `file` (named as it is shown in messages) in a fresh VM.
pub async fn load(cfg: &ServeConfig, file: &Path) -> Result<Loaded, LoadFailure> {
    let fail = |message: String, deps: Vec<PathBuf>| LoadFailure { message, deps };
    let settings = Arc::new(Mutex::new(WorkerSettings::new(cfg.config.workers.clone())));
    let mut pool = WorkerPool::new(
        cfg.cloud.clone(),
        crate::workers::new_id(),
        settings.clone(),
    );
    pool.log_dir = cfg.state_dir.join("agents");
    let pool = Arc::new(pool);
    let vm = Vm::new(&cfg.vm_options).map_err(|e| fail(e.message, Vec::new()))?;
    api::install(
        &vm,
        Arc::new(Context {
            cloud: cfg.cloud.clone(),
            waits: Waits::default(),
            pool: pool.clone(),
            stop: Default::default(),
        }),
        &[],
    )
    .map_err(|e| fail(format!("cannot install the Lua API: {e}"), Vec::new()))?;
    // The load limit holds whatever the file does: the hook stops a loop
    // within 1,000 instructions of it, a wait on a primitive is dropped.
    let opts = CallOptions {
        deadline: Some((
            std::time::Instant::now() + cfg.load_timeout,
            format!(
                "loading took longer than {} s; a policy script should declare policies, not do the work (put that in run = function(ctx) … end)",
                cfg.load_timeout.as_secs_f64()
            ),
        )),
        ..CallOptions::default()
    };
    let result = vm.run_file_with(file, Vec::new(), opts).await;
    // Declaring is all a policy script should do at load; whatever it launched goes.
    pool.remove_all().await;
    api::policy::seal(&vm);
    let deps = vm.loaded_files();
    match result {
        // A stop that was noticed while waiting names no file: name it.
        Err(e)
            if e.stopped.is_some() && !e.message.starts_with(&format!("{}:", file.display())) =>
        {
            return Err(fail(format!("{}: {}", file.display(), e.message), deps))
        }
        Err(e) => return Err(fail(e.message, deps)),
        Ok(_) => {}
    }
    let (policies, _) = api::policy::declarations(&vm);
    let digest = digest_of(file, &deps);
    Ok(Loaded {
        vm,
        settings,
        policies,
        deps,
        digest,
    })
}
