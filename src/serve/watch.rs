//! Watches the policy folder and the folders of every file a policy script
//! `require`d. Folders, not files: editors save by writing a new file and
//! renaming it over the old one, which ends a watch on the file itself.

use std::collections::BTreeSet;
use std::path::PathBuf;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

pub struct Watcher {
    inner: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

/// Whether an event can mean new content (reads, which loading does, cannot).
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

impl Watcher {
    /// A watcher sending the path of every changed file to `tx`.
    pub fn new(tx: mpsc::UnboundedSender<PathBuf>) -> notify::Result<Watcher> {
        let inner =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(ev) if changes_content(&ev.kind) => {
                    for p in ev.paths {
                        let _ = tx.send(p);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("file watcher: {e}"),
            })?;
        Ok(Watcher {
            inner,
            dirs: BTreeSet::new(),
        })
    }

    /// Watches exactly `wanted` (folders, not recursively).
    pub fn set_dirs(&mut self, wanted: BTreeSet<PathBuf>) {
        for gone in self.dirs.difference(&wanted) {
            let _ = self.inner.unwatch(gone);
        }
        let mut watching = BTreeSet::new();
        for d in &wanted {
            if self.dirs.contains(d) {
                watching.insert(d.clone());
                continue;
            }
            match self.inner.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(d.clone());
                }
                Err(e) => tracing::warn!("cannot watch {}: {e}", d.display()),
            }
        }
        self.dirs = watching;
    }
}
