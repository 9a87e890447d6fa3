//! Embeds the Lua standard library (`stdlib/`, minus the `types/` annotation
//! files, which are for editors) so a release binary needs no files beside it.

use std::fmt::Write;
use std::path::Path;

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if p.is_dir() {
            if rel != "types" {
                walk(&p, root, out);
            }
        } else if rel.ends_with(".lua") {
            out.push(rel);
        }
    }
}

fn main() {
    // Read at run time, not baked in with env!(): a build script compiled for
    // one checkout is reused by another that shares the target directory.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("stdlib");
    println!("cargo:rerun-if-changed=stdlib");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let mut code = String::from("pub static STDLIB: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed=stdlib/{f}");
        writeln!(
            code,
            "    ({f:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/stdlib/{f}\"))),"
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("stdlib.rs");
    std::fs::write(out, code).unwrap();
}
