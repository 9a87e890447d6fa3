//! The disk images file-level recovery is tested with: each holds the
//! known tree, reads back through the kernel, and stays sparse.

use std::path::Path;

use crate::images::{self, fs_image, known_tree};

/// Mounts an image's filesystem read-only with the system's tools and hands the folder to `check`.
fn with_mounted(img: &images::FsImage, check: impl FnOnce(&Path)) {
    let at = tempfile::tempdir().unwrap();
    let opts = format!("ro,loop,offset={}", img.start);
    let st = std::process::Command::new("mount")
        .args(["-o", &opts])
        .arg(&img.path)
        .arg(at.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount {}", img.path.display());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(at.path())));
    std::process::Command::new("umount")
        .arg(at.path())
        .status()
        .unwrap();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

fn check_known(root: &Path) {
    for (rel, bytes) in images::known_files() {
        assert_eq!(
            std::fs::read(root.join(&rel)).unwrap(),
            bytes,
            "{}",
            rel.display()
        );
    }
    assert_eq!(
        std::fs::read_link(root.join("passwd-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let sparse = root.join("big/sparse.bin");
    assert_eq!(
        std::fs::metadata(&sparse).unwrap().len(),
        images::SPARSE_SIZE
    );
    let f = std::fs::File::open(&sparse).unwrap();
    for at in images::SPARSE_BLOCKS {
        let mut b = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).unwrap();
        assert_eq!(b, images::sparse_block(at), "block at {at}");
    }
    assert!(
        images::allocated(&sparse) < 1 << 20,
        "big/sparse.bin takes {} bytes: not sparse",
        images::allocated(&sparse)
    );
    assert!(root.join(images::deep_path()).join("leaf.txt").is_file());
}

#[test]
fn known_tree_in_ext4_and_xfs_images_reads_back_and_stays_sparse() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "mounts images: run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    known_tree(&src);
    assert!(images::allocated(&src.join("big/sparse.bin")) < 1 << 20);
    for (kind, table, size) in [
        ("ext4", "gpt", 64u64 << 20),
        ("xfs", "mbr", 300 << 20),
        ("ext4", "none", 64 << 20),
    ] {
        let img = fs_image(dir.path(), kind, table, size, &src);
        assert!(
            images::allocated(&img.path) < 40 << 20,
            "{kind}-{table}: the image takes {} bytes",
            images::allocated(&img.path)
        );
        let blkid = std::process::Command::new("blkid")
            .args([
                "-p",
                "-O",
                &img.start.to_string(),
                "-s",
                "UUID",
                "-o",
                "value",
            ])
            .arg(&img.path)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&blkid.stdout).trim(), img.uuid);
        with_mounted(&img, check_known);
    }
}
