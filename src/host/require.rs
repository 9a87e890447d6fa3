//! `require`: modules come from the script's own folder (and any other
//! search folders), then skiff's stdlib — read from `stdlib/` on disk in debug
//! builds so it can be edited without a rebuild, embedded in release builds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mlua::{Function, Lua, MultiValue, Table, Value};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/stdlib.rs"));
}

/// The stdlib's source for a relative path such as `skiff/spec.lua`.
pub fn stdlib_source(rel: &str) -> Option<Vec<u8>> {
    #[cfg(debug_assertions)]
    {
        let disk = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("stdlib")
            .join(rel);
        if let Ok(bytes) = std::fs::read(&disk) {
            return Some(bytes);
        }
    }
    embedded::STDLIB
        .iter()
        .find(|(name, _)| *name == rel)
        .map(|(_, src)| src.as_bytes().to_vec())
}

fn module_path(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    ok.then(|| name.replace('.', "/"))
}

pub(super) fn install(
    lua: &Lua,
    dirs: &[PathBuf],
    keep_native: bool,
    loaded: Arc<Mutex<Vec<PathBuf>>>,
) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let old: Table = package.get("searchers")?;
    let dirs = dirs.to_vec();
    let searcher = lua.create_function(move |lua, name: String| -> mlua::Result<MultiValue> {
        let Some(rel) = module_path(&name) else {
            return lua.pack_multi(format!("\n\tinvalid module name {name:?}"));
        };
        let mut tried = String::new();
        for dir in &dirs {
            for candidate in [format!("{rel}.lua"), format!("{rel}/init.lua")] {
                let path = if dir.as_os_str().is_empty() || dir == Path::new(".") {
                    PathBuf::from(&candidate)
                } else {
                    dir.join(&candidate)
                };
                if let Ok(source) = std::fs::read(&path) {
                    // Recorded before compiling: a watcher must see a module that does not compile.
                    let abs = std::fs::canonicalize(&path).unwrap_or(path.clone());
                    loaded.lock().unwrap().push(abs);
                    let f: Function = lua
                        .load(source)
                        .set_name(format!("@{}", path.display()))
                        .into_function()?;
                    return lua.pack_multi((f, path.display().to_string()));
                }
                tried.push_str(&format!("\n\tno file '{}'", path.display()));
            }
        }
        for candidate in [format!("{rel}.lua"), format!("{rel}/init.lua")] {
            if let Some(source) = stdlib_source(&candidate) {
                let f: Function = lua
                    .load(source)
                    .set_name(format!("@stdlib/{candidate}"))
                    .into_function()?;
                return lua.pack_multi((f, format!("stdlib/{candidate}")));
            }
            tried.push_str(&format!("\n\tno file 'stdlib/{candidate}'"));
        }
        lua.pack_multi(tried)
    })?;
    let searchers = lua.create_table()?;
    searchers.push(old.get::<Value>(1)?)?; // package.preload
    searchers.push(searcher)?;
    if keep_native {
        for i in 2..=old.raw_len() {
            searchers.push(old.get::<Value>(i)?)?;
        }
    } else {
        package.set("path", "")?;
    }
    package.set("searchers", searchers)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_path("a.b").as_deref(), Some("a/b"));
        assert_eq!(module_path("net_util").as_deref(), Some("net_util"));
        assert_eq!(module_path("../etc/passwd"), None);
        assert_eq!(module_path("a..b"), None);
    }

    #[test]
    fn stdlib_is_embedded() {
        assert!(embedded::STDLIB.iter().any(|(n, _)| *n == "skiff/spec.lua"));
        assert!(!embedded::STDLIB
            .iter()
            .any(|(n, _)| n.starts_with("types/")));
    }
}
