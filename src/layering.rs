//! The rule that keeps skiff readable: a top-level module uses only modules
//! below it in [`LAYERS`], so there are no import cycles and nothing points
//! upward. A test reads the source tree and names every arrow that breaks it.

/// Top-level modules, from the command line down to the shared failure type.
const LAYERS: &[&str] = &[
    "cli", "serve", "api", "host", "policy", "ops", "flr", "mount", "workers", "estate", "network",
    "mover", "repo", "cloud", "config", "failure",
];

/// The top-level modules a source file refers to through `crate::`.
fn uses(source: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::x, b};`
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn modules_import_only_downward() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        files(&src, &mut all);
        let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
        let mut wrong = Vec::new();
        for path in all {
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let Some(from) = rank(&top) else { continue };
            let text = std::fs::read_to_string(&path).unwrap();
            for used in uses(&text) {
                if let Some(to) = rank(&used) {
                    if to < from {
                        wrong.push(format!("{} uses crate::{used}", rel.display()));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
    }

    #[test]
    fn every_module_has_a_layer() {
        let lib = include_str!("lib.rs");
        for line in lib.lines() {
            if let Some(m) = line.strip_prefix("pub mod ") {
                let m = m.trim_end_matches(';');
                assert!(
                    LAYERS.contains(&m),
                    "lib.rs declares {m}, which LAYERS does not place"
                );
            }
        }
    }

    #[test]
    fn reads_both_forms_of_use() {
        let u = uses("use crate::{repo::Repo, cloud};\nlet x = crate::mover::copy();");
        assert_eq!(
            u.into_iter().collect::<Vec<_>>(),
            ["cloud", "mover", "repo"]
        );
    }
}
