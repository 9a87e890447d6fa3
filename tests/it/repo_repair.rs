//! A damaged repository from the command line (issue 9, items 2–4): lost
//! packs, damaged and foreign files in `index/`, `points/` and `data/`,
//! stray pack-named files; `repo repair`, `repo forget POINT…`, and prune
//! on a damaged repository.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::images::{self, files_under, same};
use crate::repo_cli::{new_blocks, point_of, Cli};

/// The files under `dir`, relative to the repository `repo`, as skiff names them.
fn names(c: &Cli, repo: &str, dir: &str) -> Vec<String> {
    let root = c.path(repo);
    let mut v: Vec<String> = files_under(&root.join(dir))
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

/// The files in `after` that are not in `before`.
fn new_files(before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|n| !before.contains(n))
        .cloned()
        .collect()
}

/// The largest of these files: a backup's data pack (its block map is in a smaller one).
fn largest(c: &Cli, repo: &str, files: &[String]) -> String {
    files
        .iter()
        .max_by_key(|n| std::fs::metadata(c.path(repo).join(n)).unwrap().len())
        .unwrap()
        .clone()
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Backs up `img` as `volume`; the point's id.
fn backup(c: &Cli, img: &str, volume: &str) -> String {
    point_of(&c.ok(&[
        "copy",
        &format!("file:{img}"),
        "repo:repo",
        "--volume",
        volume,
    ]))
}

#[track_caller]
fn restores_to(c: &Cli, point: &str, img: &str) {
    let out = format!("{point}.img");
    let _ = std::fs::remove_file(c.path(&out));
    c.ok(&[
        "copy",
        &format!("repo:repo#{point}"),
        &format!("file:{out}"),
    ]);
    assert!(same(&c.path(img), &c.path(&out)), "{point} restores {img}");
}

#[test]
fn a_backup_stores_again_the_blocks_of_a_lost_pack() {
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 48, 21);
    c.ok(&["repo", "init", "repo"]);
    let first = c.ok(&["copy", "file:disk.img", "repo:repo"]);
    let stored = new_blocks(&first);
    assert!(stored > 10, "{first}");
    let data = names(&c, "repo", "data");
    std::fs::remove_file(c.path("repo").join(largest(&c, "repo", &data))).unwrap();

    // An incremental: every block whose pack is gone is stored again, and it says so once.
    let (code, out, err) = c.run(&["copy", "file:disk.img", "repo:repo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(incremental on "), "{out}");
    assert_eq!(new_blocks(&out), stored, "{out}");
    let said = "blocks in missing packs are stored again; run `skiff repo repair`";
    assert_eq!(err.matches(said).count(), 1, "{err}");
    restores_to(&c, &point_of(&out), "disk.img");

    // Every pack gone, block maps too: a full backup stores it all again.
    for p in files_under(&c.path("repo/data")) {
        std::fs::remove_file(p).unwrap();
    }
    let (code, out, err) = c.run(&["copy", "file:disk.img", "repo:repo", "--full"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(new_blocks(&out), stored, "{out}");
    assert_eq!(err.matches(said).count(), 1, "{err}");
    restores_to(&c, &point_of(&out), "disk.img");
}

#[test]
fn one_damaged_or_foreign_file_is_named_and_every_command_goes_on() {
    let c = Cli::new();
    images::mixed_image(&c.path("a.img"), 16, 22);
    images::mixed_image(&c.path("b.img"), 16, 23);
    c.ok(&["repo", "init", "repo"]);
    let pa = backup(&c, "a.img", "a");
    let index_a = names(&c, "repo", "index");
    let pb = backup(&c, "b.img", "b");
    // b's index file is damaged; foreign files in index/ and points/; a point file that does not authenticate.
    let damaged_index = new_files(&index_a, &names(&c, "repo", "index"))[0].clone();
    flip_byte(&c.path("repo").join(&damaged_index), 40);
    std::fs::write(c.path("repo/index/notes.txt"), b"my notes").unwrap();
    std::fs::write(c.path("repo/points/junk"), b"junk").unwrap();
    std::fs::write(c.path("repo/points/0123456789abcdef"), vec![7u8; 100]).unwrap();
    let skipped = [
        damaged_index.as_str(),
        "index/notes.txt",
        "points/junk",
        "points/0123456789abcdef",
    ];

    // Every command goes on around them, naming each once.
    let (code, out, err) = c.run(&["repo", "points", "repo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&pa) && out.contains(&pb), "{out}");
    assert!(out.ends_with("2 point(s)\n"), "{out}");
    for name in skipped {
        assert_eq!(
            err.matches(&format!("skipped {name}:")).count(),
            1,
            "{name}: {err}"
        );
    }
    restores_to(&c, &pa, "a.img");
    restores_to(&c, &pb, "b.img");
    let again = backup(&c, "b.img", "b");

    // check reports every one of them, and exits non-zero.
    let (code, out, err) = c.run(&["repo", "check", "repo"]);
    assert_eq!(code, 1, "{out}\n{err}");
    for name in skipped {
        let line = format!("error: {} {name}: ", kind_of(name));
        assert!(out.contains(&line), "{line}: {out}");
    }
    assert!(out.contains("ERRORS FOUND: 3 points"), "{out}");

    // repair removes them, naming each; a second run finds nothing to do.
    let out = c.ok(&["repo", "repair", "repo"]);
    for name in skipped {
        assert!(
            out.contains(&format!("{name}: ")) && out.contains("removed"),
            "{name}: {out}"
        );
    }
    assert!(!out.contains("lost data"), "{out}");
    assert_eq!(c.ok(&["repo", "repair", "repo"]), "nothing to repair\n");
    let (code, out, err) = c.run(&["repo", "check", "repo", "--read-data"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("no errors: 3 points"), "{out}");
    assert!(!err.contains("skipped"), "{err}");
    for p in [&pa, &pb, &again] {
        restores_to(&c, p, if *p == pa { "a.img" } else { "b.img" });
    }
}

/// The kind `check` gives a problem with this file.
fn kind_of(name: &str) -> &'static str {
    if name.starts_with("index/") {
        "index"
    } else {
        "point"
    }
}

#[test]
fn repair_drops_lost_packs_names_the_points_that_lost_data_and_forgets_them() {
    let c = Cli::new();
    images::mixed_image(&c.path("a.img"), 24, 31);
    images::mixed_image(&c.path("b.img"), 24, 32);
    c.ok(&["repo", "init", "repo"]);
    let before = names(&c, "repo", "data");
    let first = c.ok(&["copy", "file:a.img", "repo:repo", "--volume", "a"]);
    let pa = point_of(&first);
    let lost = largest(&c, "repo", &new_files(&before, &names(&c, "repo", "data")));
    let pb = backup(&c, "b.img", "b");
    std::fs::remove_file(c.path("repo").join(&lost)).unwrap();

    let (code, out, _) = c.run(&["repo", "check", "repo"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&lost) && out.contains("missing from the store"),
        "{out}"
    );
    assert!(out.contains(&format!("affected points: {pa}")), "{out}");

    // A dry run changes nothing.
    let listed = names(&c, "repo", "index");
    let dry = c.ok(&["repo", "repair", "repo", "--dry-run"]);
    assert!(dry.contains("dry run: ") && dry.contains(&lost), "{dry}");
    assert_eq!(names(&c, "repo", "index"), listed);

    let out = c.ok(&["repo", "repair", "repo"]);
    assert!(
        out.contains(&lost) && out.contains("missing from the store"),
        "{out}"
    );
    assert!(out.contains("index rebuilt from the headers of"), "{out}");
    assert!(out.contains(&format!("lost data: point {pa}")), "{out}");
    assert!(!out.contains(&format!("point {pb}")), "{out}");
    assert!(out.contains("--forget-lost"), "{out}");
    // Idempotent: nothing left to do, the lost point still named.
    let out = c.ok(&["repo", "repair", "repo"]);
    assert!(out.starts_with("nothing to repair\n"), "{out}");
    assert!(out.contains(&format!("lost data: point {pa}")), "{out}");

    let out = c.ok(&["repo", "repair", "repo", "--forget-lost"]);
    assert!(
        out.contains(&format!("point {pa} (")) && out.contains("forgotten"),
        "{out}"
    );
    assert_eq!(c.ok(&["repo", "repair", "repo"]), "nothing to repair\n");
    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(check.contains("no errors: 1 points"), "{check}");
    restores_to(&c, &pb, "b.img");

    // The next backup of a stores its blocks again.
    let again = c.ok(&["copy", "file:a.img", "repo:repo", "--volume", "a"]);
    assert_eq!(new_blocks(&again), new_blocks(&first), "{again}");
    restores_to(&c, &point_of(&again), "a.img");
}

#[test]
fn prune_converges_on_a_damaged_repository() {
    let c = Cli::new();
    for (img, seed) in [("a.img", 41), ("b.img", 42), ("c.img", 43)] {
        images::mixed_image(&c.path(img), 16, seed);
    }
    c.ok(&["repo", "init", "repo"]);
    let data0 = names(&c, "repo", "data");
    let pa = backup(&c, "a.img", "a");
    let lost = largest(&c, "repo", &new_files(&data0, &names(&c, "repo", "data")));
    let index_a = names(&c, "repo", "index");
    let pb = backup(&c, "b.img", "b");
    let index_b = new_files(&index_a, &names(&c, "repo", "index"))[0].clone();
    let pc = backup(&c, "c.img", "c");
    // a's data pack is lost, b's index file damaged, a foreign file in index/; c is forgotten.
    std::fs::remove_file(c.path("repo").join(&lost)).unwrap();
    flip_byte(&c.path("repo").join(&index_b), 50);
    std::fs::write(c.path("repo/index/notes.txt"), b"my notes").unwrap();
    let out = c.ok(&["repo", "forget", "repo", &pc]);
    assert!(out.contains(&pc) && out.contains("removed"), "{out}");
    let replay: Vec<(PathBuf, Vec<u8>)> = names(&c, "repo", "index")
        .iter()
        .map(|n| {
            (
                c.path("repo").join(n),
                std::fs::read(c.path("repo").join(n)).unwrap(),
            )
        })
        .collect();

    let (code, out, err) = c.run(&["repo", "prune", "repo", "--repack-threshold", "0"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("missing from the store"), "{out}");
    assert!(out.contains(&format!("point(s) {pa} lost data")), "{out}");
    assert!(out.contains("1 damaged index file(s) replaced"), "{out}");
    assert!(
        out.contains("index/notes.txt is not an index file"),
        "{out}"
    );
    restores_to(&c, &pb, "b.img");
    // What prune could do is done: the damaged index and the missing pack are gone from the report.
    let (code, check, _) = c.run(&["repo", "check", "repo"]);
    assert_eq!(code, 1, "{check}");
    assert!(
        !check.contains(&index_b) && !check.contains(&lost),
        "{check}"
    );
    assert!(check.contains(&format!("affected points: {pa}")), "{check}");
    assert!(check.contains("index/notes.txt"), "{check}");

    // The old index files replayed (as from a copy taken before the prune):
    // they list packs prune deleted; a second prune converges again.
    for (path, bytes) in &replay {
        std::fs::write(path, bytes).unwrap();
    }
    let (code, out, err) = c.run(&["repo", "prune", "repo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("missing from the store"), "{out}");
    let (code, out, err) = c.run(&["repo", "prune", "repo"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with("0 blobs unused: 0 packs deleted, 0 repacked (0 written)"),
        "{out}"
    );
    assert!(
        !out.contains("missing from the store") && !out.contains("replaced"),
        "{out}"
    );
    restores_to(&c, &pb, "b.img");
    let out = c.ok(&["repo", "repair", "repo", "--forget-lost"]);
    assert!(
        out.contains("index/notes.txt") && out.contains(&pa),
        "{out}"
    );
    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(check.contains("no errors: 1 points"), "{check}");
}

#[test]
fn forget_takes_point_ids_and_an_unknown_one_changes_nothing() {
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 4, 51);
    c.ok(&["repo", "init", "repo"]);
    let ids: Vec<String> = (0..3).map(|_| backup(&c, "disk.img", "v")).collect();
    let count = || c.ok(&["repo", "points", "repo"]).lines().count() - 1;

    for args in [vec!["ffff0000"], vec![ids[0].as_str(), "ffff0000"]] {
        let mut all = vec!["repo", "forget", "repo"];
        all.extend(args);
        let (code, _, err) = c.run(&all);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("no restore point ffff0000; nothing was forgotten"),
            "{err}"
        );
        assert_eq!(count(), 3);
    }
    let (code, _, err) = c.run(&["repo", "forget", "repo", "xyz"]);
    assert_eq!(code, 2);
    assert!(err.contains("point \"xyz\": expected a point id"), "{err}");
    let (code, _, err) = c.run(&["repo", "forget", "repo", &ids[0], "--keep-last", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("not both"), "{err}");
    assert_eq!(count(), 3);

    let dry = c.ok(&["repo", "forget", "repo", &ids[0], "--dry-run"]);
    assert!(
        dry.contains(&ids[0]) && dry.contains("would remove"),
        "{dry}"
    );
    assert_eq!(count(), 3);
    let out = c.ok(&["repo", "forget", "repo", &ids[0][..6], &ids[1]]);
    for id in &ids[..2] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(id.as_str()) && l.ends_with("removed")),
            "{out}"
        );
    }
    let left = c.ok(&["repo", "points", "repo"]);
    assert!(
        left.contains(&ids[2]) && left.ends_with("1 point(s)\n"),
        "{left}"
    );
}

/// Sets a file's modification time `by` into the past.
fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn stray_pack_files_are_reported_and_pruned_once_older_than_the_lease() {
    let c = Cli::new();
    images::mixed_image(&c.path("a.img"), 16, 61);
    images::mixed_image(&c.path("b.img"), 16, 62);
    c.ok(&["repo", "init", "repo"]);
    let pa = backup(&c, "a.img", "a");
    // b's backup as a killed run leaves it: packs, no index file, no point.
    let (data_a, index_a) = (names(&c, "repo", "data"), names(&c, "repo", "index"));
    let pb = backup(&c, "b.img", "b");
    std::fs::remove_file(c.path(&format!("repo/points/{pb}"))).unwrap();
    for n in new_files(&index_a, &names(&c, "repo", "index")) {
        std::fs::remove_file(c.path("repo").join(n)).unwrap();
    }
    let left = new_files(&data_a, &names(&c, "repo", "data"));
    assert!(!left.is_empty());
    // And a file with a pack's name that is not a pack.
    let junk = format!("data/ab/ab{}", "0123456789abcdef".repeat(4).split_at(2).1);
    std::fs::create_dir_all(c.path("repo/data/ab")).unwrap();
    std::fs::write(c.path("repo").join(&junk), vec![1u8; 300]).unwrap();

    let (code, out, _) = c.run(&["repo", "check", "repo"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "error: pack {junk}: no index lists it and it is not a pack of this repository"
        )),
        "{out}"
    );
    for p in &left {
        assert!(
            out.contains(&format!("note: pack {p} is not indexed yet")),
            "{out}"
        );
    }

    // Young: a writer may be about to index them; left alone.
    let out = c.ok(&["repo", "prune", "repo"]);
    assert!(
        out.contains("younger than 600 s: left for a later prune"),
        "{out}"
    );
    assert!(c.path("repo").join(&junk).exists());
    for p in &left {
        assert!(c.path("repo").join(p).exists(), "{p}");
    }
    // Older than the lease: removed, and reported no more.
    for p in left.iter().chain([&junk]) {
        age(&c.path("repo").join(p), Duration::from_secs(3600));
    }
    let out = c.ok(&["repo", "prune", "repo"]);
    assert!(out.contains("stray pack-named file(s)"), "{out}");
    assert!(!c.path("repo").join(&junk).exists());
    for p in &left {
        assert!(!c.path("repo").join(p).exists(), "{p}");
    }
    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(
        check.contains("no errors: 1 points") && !check.contains("note:"),
        "{check}"
    );
    restores_to(&c, &pa, "a.img");
}

#[test]
fn a_pack_whose_header_is_damaged_is_salvaged_through_the_index() {
    let c = Cli::new();
    images::mixed_image(&c.path("disk.img"), 24, 71);
    c.ok(&["repo", "init", "repo"]);
    let p = backup(&c, "disk.img", "v");
    let data = names(&c, "repo", "data");
    let pack = largest(&c, "repo", &data);
    let path = c.path("repo").join(&pack);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip_byte(&path, len - 20);
    let (code, out, _) = c.run(&["repo", "check", "repo"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&pack) && out.contains("does not authenticate"),
        "{out}"
    );

    // Its blobs still authenticate where the index says they are: copied
    // into new packs, and the damaged pack removed.
    let out = c.ok(&["repo", "repair", "repo"]);
    assert!(
        out.contains(&format!("{pack}: its header cannot be read")),
        "{out}"
    );
    assert!(out.contains(" indexed blob(s) found nowhere else authenticate and were copied into new packs; removed"), "{out}");
    assert!(!out.contains("lost data"), "{out}");
    assert!(!path.exists());
    assert_eq!(c.ok(&["repo", "repair", "repo"]), "nothing to repair\n");
    let check = c.ok(&["repo", "check", "repo", "--read-data"]);
    assert!(check.contains("no errors: 1 points"), "{check}");
    restores_to(&c, &p, "disk.img");
}
