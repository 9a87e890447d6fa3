//! Test images: deterministic block contents (zero, text-like, random,
//! duplicates), sparse files, and byte comparison.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::Path;

pub const BS: u64 = 512 * 1024;

/// Deterministic content for block `index`: zero, text, random or a copy of another block.
pub fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut x = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    match next() % 4 {
        0 => vec![0u8; BS as usize],
        1 => {
            let words = [
                "alpha ", "beta ", "gamma ", "delta ", "request ", "ok\n", "error ",
            ];
            let mut v = Vec::with_capacity(BS as usize);
            while v.len() < BS as usize {
                v.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
            }
            v.truncate(BS as usize);
            v
        }
        2 => random_block(next()),
        _ if index == 0 => vec![0xa5; BS as usize],
        _ => block(seed, index / 2),
    }
}

pub fn random_block(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; BS as usize];
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// A sparse image of `size` bytes with `block(seed, i)` written at each of `blocks`.
pub fn sparse_image(path: &Path, size: u64, seed: u64, blocks: impl IntoIterator<Item = u64>) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for i in blocks {
        f.write_all_at(&block(seed, i), i * BS).unwrap();
    }
}

/// An image of `blocks` blocks, each `block(seed, i)`.
pub fn mixed_image(path: &Path, blocks: u64, seed: u64) {
    sparse_image(path, blocks * BS, seed, 0..blocks);
}

pub fn write_block(path: &Path, index: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, index * BS).unwrap();
}

pub fn read_block(path: &Path, index: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; BS as usize];
    f.read_exact_at(&mut b, index * BS).unwrap();
    b
}

/// Byte equality of two files.
pub fn same(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

/// Every regular file under a directory.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

// ---- disk images with filesystems (file-level recovery)

/// Size and the 4 KiB blocks written in `big/sparse.bin` of [`known_tree`].
pub const SPARSE_SIZE: u64 = 1 << 30;
pub const SPARSE_BLOCKS: [u64; 4] = [0, 3 << 20, 512 << 20, (1 << 30) - 4096];
/// Depth of `deep/d01/…/d30/leaf.txt`.
pub const DEPTH: usize = 30;

/// The 4 KiB written at `offset` of `big/sparse.bin`.
pub fn sparse_block(offset: u64) -> Vec<u8> {
    let line = format!("sparse block at {offset}\n");
    line.bytes().cycle().take(4096).collect()
}

/// The path of the deepest folder of [`known_tree`], relative to its root.
pub fn deep_path() -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from("deep");
    for i in 1..=DEPTH {
        p.push(format!("d{i:02}"));
    }
    p
}

/// The small regular files of [`known_tree`] and their bytes.
pub fn known_files() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let text = |s: &str| s.as_bytes().to_vec();
    vec![
        ("Grüße aus Köln.txt".into(), text("Grüße aus Köln, 23 °C\n")),
        (
            "dir with spaces/notes one.txt".into(),
            text("a file in a folder with spaces\n"),
        ),
        (
            "dir with spaces/Ærø – ñandú.md".into(),
            text("# non-ASCII\n"),
        ),
        (
            "etc/app.conf".into(),
            text("listen = 0.0.0.0:8080\nworkers = 4\n"),
        ),
        ("etc/hosts".into(), text("127.0.0.1 localhost\n")),
        (
            "readme.txt".into(),
            (0..200)
                .flat_map(|i| format!("line {i}\n").into_bytes())
                .collect(),
        ),
        (
            deep_path().join("leaf.txt"),
            text("the leaf, 30 folders down\n"),
        ),
    ]
}

/// The content issue 11's tests look for: names with spaces and non-ASCII
/// letters, a symlink `passwd-link -> /etc/passwd`, a sparse 1 GiB file
/// `big/sparse.bin` ([`SPARSE_BLOCKS`] written), a tree [`DEPTH`] folders
/// deep, and small text files ([`known_files`]).
pub fn known_tree(dir: &Path) {
    for (rel, bytes) in known_files() {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd-link")).unwrap();
    std::fs::create_dir_all(dir.join("big")).unwrap();
    let f = std::fs::File::create(dir.join("big/sparse.bin")).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    for at in SPARSE_BLOCKS {
        f.write_all_at(&sparse_block(at), at).unwrap();
    }
}

pub fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tools/system.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A disk image made by [`fs_image`].
pub struct FsImage {
    pub path: std::path::PathBuf,
    /// The filesystem's UUID, as blkid prints it.
    pub uuid: String,
    /// Where the filesystem starts in the image (1 MiB, or 0 with no table).
    pub start: u64,
    /// The kernel's number of its partition (0: the whole image).
    pub index: u32,
}

/// A sparse disk image `dir/<kind>-<table>.img` holding one filesystem of
/// `fs_size` bytes (`kind`: ext4, xfs or btrfs; XFS needs at least 300 MiB)
/// with a copy of `populate`, in partition 1 of a GPT or MBR table at
/// 1 MiB, or alone (`table` "none"). Holes stay holes.
pub fn fs_image(dir: &Path, kind: &str, table: &str, fs_size: u64, populate: &Path) -> FsImage {
    let uuid = match kind {
        "ext4" => "e4e4e4e4-0000-4000-8000-000000000011",
        "xfs" => "aaaaaaaa-0000-4000-8000-000000000022",
        "btrfs" => "b7b7b7b7-0000-4000-8000-000000000033",
        _ => panic!("fs_image: kind {kind:?}: expected ext4, xfs or btrfs"),
    };
    assert!(
        kind != "xfs" || fs_size >= 300 << 20,
        "fs_image: mkfs.xfs makes no filesystem under 300 MiB"
    );
    let path = dir.join(format!("{kind}-{table}.img"));
    let fs = if table == "none" {
        path.clone()
    } else {
        dir.join(format!("{kind}-{table}.fs"))
    };
    let _ = std::fs::remove_file(&fs);
    std::fs::File::create(&fs)
        .unwrap()
        .set_len(fs_size)
        .unwrap();
    let (f, src) = (fs.to_str().unwrap(), populate.to_str().unwrap());
    match kind {
        "ext4" => run(
            "mkfs.ext4",
            &["-q", "-F", "-U", uuid, "-L", "flr", "-d", src, f],
        ),
        "btrfs" => run(
            "mkfs.btrfs",
            &["-q", "-f", "-U", uuid, "-L", "flr", "--rootdir", src, f],
        ),
        _ => {
            run(
                "mkfs.xfs",
                &["-q", "-f", "-m", &format!("uuid={uuid}"), "-L", "flr", f],
            );
            // mkfs.xfs cannot copy a folder in (its protofile has no names with spaces).
            let at = tempfile::tempdir().unwrap();
            let m = at.path().to_str().unwrap();
            run("mount", &["-o", "loop", f, m]);
            let copied = std::process::Command::new("cp")
                .args(["-a", "--sparse=always", "-T", src, m])
                .status();
            run("umount", &[m]);
            assert!(copied.unwrap().success(), "cp -a {src} into {f}");
        }
    }
    if table == "none" {
        return FsImage {
            path,
            uuid: uuid.into(),
            start: 0,
            index: 0,
        };
    }
    let mib = 1u64 << 20;
    let script = match table {
        "gpt" => format!(
            "label: gpt\nstart=2048, size={}, type=linux, name=\"flr\"\n",
            fs_size / 512
        ),
        "mbr" => format!("label: dos\nstart=2048, size={}, type=83\n", fs_size / 512),
        _ => panic!("fs_image: table {table:?}: expected gpt, mbr or none"),
    };
    std::fs::File::create(&path)
        .unwrap()
        .set_len(fs_size + 2 * mib)
        .unwrap();
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (package fdisk; tools/system.sh installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk {}", path.display());
    run(
        "dd",
        &[
            &format!("if={f}"),
            &format!("of={}", path.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
    std::fs::remove_file(&fs).unwrap();
    FsImage {
        path,
        uuid: uuid.into(),
        start: mib,
        index: 1,
    }
}

/// Bytes a file takes on disk (`du`), to check that holes stayed holes.
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}
