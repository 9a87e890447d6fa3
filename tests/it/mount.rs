//! `skiff mount`: a repository's points as read-only files, byte for byte
//! what `skiff copy` restores, unmounted on SIGINT or `umount`.

use std::time::Duration;

use crate::harness::Workspace;

/// Waits until `dir` shows `n` point images; their paths, sorted.
async fn images(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    for _ in 0..200 {
        let mut found = Vec::new();
        if let Ok(vols) = std::fs::read_dir(dir) {
            for v in vols.flatten() {
                for p in std::fs::read_dir(v.path()).into_iter().flatten().flatten() {
                    let img = p.path().join("image");
                    if img.is_file() {
                        found.push(img);
                    }
                }
            }
        }
        if found.len() >= n {
            found.sort();
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} does not show {n} images", dir.display());
}

#[tokio::test]
async fn a_mounted_point_reads_as_its_restore_and_unmounts_on_sigint() {
    let ws = Workspace::new("").await;
    ws.write("pw.txt", "mount-test");
    let pw = ["--password-file", "pw.txt"];
    crate::images::sparse_image(&ws.path("disk.img"), 48 << 20, 5, [0, 3, 7, 40, 95]);
    let mut args = vec!["repo", "init", "repo"];
    args.extend(pw);
    ws.skiff(&args).await.ok();
    let mut points = Vec::new();
    for round in 0..2 {
        if round == 1 {
            // The guest changes two blocks: an incremental point.
            crate::images::sparse_image(&ws.path("next.img"), 48 << 20, 6, [3, 60]);
            let next = std::fs::read(ws.path("next.img")).unwrap();
            let mut cur = std::fs::read(ws.path("disk.img")).unwrap();
            for b in [3usize, 60] {
                let r = b << 19..(b + 1) << 19;
                cur[r.clone()].copy_from_slice(&next[r]);
            }
            std::fs::write(ws.path("disk.img"), cur).unwrap();
        }
        let mut a = vec!["copy", "file:disk.img", "repo:repo", "--volume", "vol/ä b"];
        a.extend(pw);
        let out = ws.skiff(&a).await;
        out.ok();
        let id = crate::repo_cli::point_of(&out.stdout);
        let restored = format!("restored-{round}.img");
        let mut r = vec![
            "copy".to_string(),
            format!("repo:repo#{id}"),
            format!("file:{restored}"),
        ];
        r.extend(pw.iter().map(|s| s.to_string()));
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        ws.skiff(&r).await.ok();
        points.push((id, restored));
    }
    std::fs::create_dir(ws.path("mnt")).unwrap();
    let mut mount = ws
        .command(&["mount", "repo", "mnt", "--password-file", "pw.txt"])
        .spawn()
        .unwrap();
    let found = images(&ws.path("mnt"), 2).await;
    // One folder for the volume (its name made one path component), one per point.
    let vol = found[0].parent().unwrap().parent().unwrap();
    assert_eq!(vol.file_name().unwrap(), "vol_ä b");
    for (id, restored) in &points {
        let img = found
            .iter()
            .find(|p| p.to_string_lossy().contains(id.as_str()))
            .unwrap();
        let mounted = std::fs::read(img).unwrap();
        let want = std::fs::read(ws.path(restored)).unwrap();
        assert_eq!(mounted.len(), want.len());
        assert!(
            mounted == want,
            "{} differs from its restore",
            img.display()
        );
    }
    // Read-only: nothing can be written or created.
    assert!(std::fs::OpenOptions::new()
        .write(true)
        .open(&found[0])
        .is_err());
    assert!(std::fs::write(vol.join("new"), b"x").is_err());
    unsafe { libc::kill(mount.id().unwrap() as i32, libc::SIGINT) };
    let status = tokio::time::timeout(Duration::from_secs(20), mount.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_dir(ws.path("mnt")).unwrap().count(),
        0,
        "still mounted"
    );
}

/// The kernel reads a mounted image as the file system it holds: ext4,
/// mounted read-only (`noload`: no journal replay) through a loop device.
#[tokio::test]
async fn the_kernel_mounts_a_mounted_ext4_image_read_only() {
    let ws = Workspace::new("").await;
    ws.write("pw.txt", "mount-test");
    ws.write("src/a file ä.txt", "hello from skiff\n");
    ws.write("src/deep/er/x", "deep\n");
    std::os::unix::fs::symlink("/etc/passwd", ws.path("src/link")).unwrap();
    let img = ws.path("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-d"])
        .arg(ws.path("src"))
        .arg(&img)
        .status()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.success());
    let pw = ["--password-file", "pw.txt"];
    let mut a = vec!["repo", "init", "repo"];
    a.extend(pw);
    ws.skiff(&a).await.ok();
    let mut a = vec!["copy", "file:fs.img", "repo:repo", "--volume", "fs"];
    a.extend(pw);
    ws.skiff(&a).await.ok();
    std::fs::create_dir(ws.path("mnt")).unwrap();
    std::fs::create_dir(ws.path("k")).unwrap();
    let mut mount = ws
        .command(&["mount", "repo", "mnt", "--password-file", "pw.txt"])
        .spawn()
        .unwrap();
    let found = images(&ws.path("mnt"), 1).await;
    let kernel = std::process::Command::new("mount")
        .args(["-o", "ro,loop,noload"])
        .arg(&found[0])
        .arg(ws.path("k"))
        .status()
        .expect("mount");
    assert!(kernel.success(), "mount -o ro,loop of the FUSE image");
    let text = std::fs::read_to_string(ws.path("k/a file ä.txt"));
    let deep = std::fs::read_to_string(ws.path("k/deep/er/x"));
    let link = std::fs::read_link(ws.path("k/link"));
    let _ = std::process::Command::new("umount")
        .arg(ws.path("k"))
        .status();
    unsafe { libc::kill(mount.id().unwrap() as i32, libc::SIGINT) };
    let _ = tokio::time::timeout(Duration::from_secs(20), mount.wait()).await;
    assert_eq!(text.unwrap(), "hello from skiff\n");
    assert_eq!(deep.unwrap(), "deep\n");
    assert_eq!(link.unwrap(), std::path::PathBuf::from("/etc/passwd"));
}
