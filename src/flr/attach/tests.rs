//! These mount filesystems: they need root and loop devices (CI runs as root).

use super::*;
use crate::flr::disk::partitions;
use crate::flr::testimg::{mkfs, place, poke, run, sfdisk, MIB};

fn need_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "flr::attach tests mount filesystems through loop devices: run them as root (CI does)"
    );
    assert!(
        Path::new("/dev/loop-control").exists(),
        "/dev/loop-control is missing: no loop devices on this machine (modprobe loop)"
    );
}

/// Known files: text, a name with spaces and non-ASCII letters, a symlink, 300 KiB of a pattern.
fn tree(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir.join("sub dir")).unwrap();
    std::fs::write(dir.join("hello.txt"), format!("hello from {tag}\n")).unwrap();
    std::fs::write(dir.join("sub dir/Grüße aus Köln.txt"), "Grüße\n").unwrap();
    std::fs::write(dir.join("pattern.bin"), pattern()).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd-link")).unwrap();
}

fn pattern() -> Vec<u8> {
    (0..300 * 1024u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn check_tree(at: &Path, tag: &str) {
    assert_eq!(
        std::fs::read_to_string(at.join("hello.txt")).unwrap(),
        format!("hello from {tag}\n")
    );
    assert_eq!(
        std::fs::read_to_string(at.join("sub dir/Grüße aus Köln.txt")).unwrap(),
        "Grüße\n"
    );
    assert!(std::fs::read(at.join("pattern.bin")).unwrap() == pattern());
    assert_eq!(
        std::fs::read_link(at.join("passwd-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let e = std::fs::File::create(at.join("new.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: {e}", at.display());
    let e = std::fs::remove_file(at.join("hello.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: {e}", at.display());
}

fn sha256(p: &Path) -> String {
    run("sha256sum", &[p.to_str().unwrap()])
}

/// Mount points at or under `dir`, with their options, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let at = f.get(4)?.replace("\\040", " ");
            Path::new(&at)
                .starts_with(dir)
                .then(|| (at, f.get(5).unwrap_or(&"").to_string()))
        })
        .collect()
}

/// Loop devices whose backing file is `image` (sysfs, and `losetup -a` for a second opinion).
fn loops_of(image: &Path) -> Vec<String> {
    let image = std::fs::canonicalize(image).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(backing) {
            if Path::new(b.trim()) == image {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    let listed = run("losetup", &["-a"]);
    for l in listed.lines() {
        if l.contains(&format!("({})", image.display())) {
            out.push(l.to_string());
        }
    }
    out
}

fn state(a: &Attached, index: u32) -> &State {
    &a.mounts.iter().find(|m| m.index == index).unwrap().state
}

fn mounted_at(a: &Attached, index: u32) -> PathBuf {
    match state(a, index) {
        State::Mounted { at, .. } => at.clone(),
        s => panic!("partition {index}: {s:?}"),
    }
}

#[test]
fn gpt_ext4_and_xfs_mount_read_only_and_release_leaves_nothing() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sfdisk(
        &disk,
        344 * MIB,
        "label: gpt\n\
         start=2048, size=32MiB, type=linux, name=\"root\"\n\
         size=300MiB, type=linux, name=\"data\"\n\
         size=8MiB, type=swap\n",
    );
    let (src, fs) = (dir.path().join("src"), dir.path().join("fs"));
    tree(&src.join("ext4"), "ext4");
    tree(&src.join("xfs"), "xfs");
    let ext_uuid = "3f1c1d6a-1b6f-4e0e-9a51-6a2b7d1f0e01";
    let xfs_uuid = "3f1c1d6a-1b6f-4e0e-9a51-6a2b7d1f0e02";
    mkfs(
        "ext4",
        &fs,
        32 * MIB,
        ext_uuid,
        "root",
        Some(&src.join("ext4")),
    );
    place(&disk, &fs, MIB);
    mkfs(
        "xfs",
        &fs,
        300 * MIB,
        xfs_uuid,
        "data",
        Some(&src.join("xfs")),
    );
    place(&disk, &fs, 33 * MIB);
    mkfs("swap", &fs, 8 * MIB, ext_uuid, "swap", None);
    place(&disk, &fs, 333 * MIB);
    let before = sha256(&disk);

    let layout = partitions(&File::open(&disk).unwrap()).unwrap();
    let under = dir.path().join("mnt");
    let a = Attached::mount_all(&disk, &layout, &under).unwrap();
    let p1 = &a.mounts[0];
    assert_eq!(p1.fs.as_ref().unwrap().uuid.as_deref(), Some(ext_uuid));
    assert_eq!(
        p1.state,
        State::Mounted {
            at: under.join("p1"),
            device: match &p1.state {
                State::Mounted { device, .. } => device.clone(),
                s => panic!("{s:?}"),
            },
            options: "noload".into()
        }
    );
    assert!(
        matches!(state(&a, 2), State::Mounted { options, .. } if options == "norecovery,nouuid")
    );
    assert_eq!(
        a.mounts[1].fs.as_ref().unwrap().uuid.as_deref(),
        Some(xfs_uuid)
    );
    assert_eq!(
        *state(&a, 3),
        State::Skipped {
            reason: "swap space: nothing to mount".into()
        }
    );
    check_tree(&mounted_at(&a, 1), "ext4");
    check_tree(&mounted_at(&a, 2), "xfs");
    let m = mounts_under(&under);
    assert_eq!(m.len(), 2, "{m:?}");
    for (at, opts) in &m {
        assert!(opts.split(',').any(|o| o == "ro"), "{at}: {opts}");
        assert!(
            opts.contains("nosuid") && opts.contains("nodev") && opts.contains("noexec"),
            "{at}: {opts}"
        );
    }
    assert_eq!(
        loops_of(&disk).len(),
        4,
        "two devices, each in sysfs and losetup"
    );

    a.release().unwrap();
    assert_eq!(mounts_under(&under), []);
    assert_eq!(loops_of(&disk), Vec::<String>::new());
    assert!(!under.exists(), "the folder it made is removed");
    assert_eq!(sha256(&disk), before, "the image was written to");
}

#[test]
fn mbr_btrfs_and_a_logical_ext4_mount_and_what_the_kernel_cannot_read_is_said() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sfdisk(
        &disk,
        152 * MIB,
        "label: dos\n\
         disk.img1 : start=2048, size=128MiB, type=83\n\
         disk.img2 : size=22MiB, type=5\n\
         disk.img5 : size=10MiB, type=83\n\
         disk.img6 : size=8MiB, type=c\n",
    );
    let (src, fs) = (dir.path().join("src"), dir.path().join("fs"));
    tree(&src.join("btrfs"), "btrfs");
    tree(&src.join("ext4"), "ext4");
    mkfs(
        "btrfs",
        &fs,
        128 * MIB,
        "5e0b2c3d-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
        "bt",
        Some(&src.join("btrfs")),
    );
    place(&disk, &fs, MIB);
    let layout = partitions(&File::open(&disk).unwrap()).unwrap();
    let at = |i: u32| {
        layout
            .partitions
            .iter()
            .find(|p| p.index == i)
            .unwrap()
            .start
    };
    mkfs(
        "ext4",
        &fs,
        10 * MIB,
        "5e0b2c3d-7a8b-4c9d-8e0f-1a2b3c4d5e70",
        "logical",
        Some(&src.join("ext4")),
    );
    place(&disk, &fs, at(5));
    mkfs("vfat", &fs, 8 * MIB, "0000-0001", "EFI", None);
    place(&disk, &fs, at(6));
    let before = sha256(&disk);

    let under = dir.path().join("mnt");
    std::fs::create_dir(&under).unwrap();
    let a = Attached::mount_all(&disk, &layout, &under).unwrap();
    assert_eq!(
        a.mounts.iter().map(|m| m.index).collect::<Vec<_>>(),
        [1, 5, 6]
    );
    assert!(
        matches!(state(&a, 1), State::Mounted { options, .. } if options.contains("nologreplay")),
        "{:?}",
        state(&a, 1)
    );
    check_tree(&mounted_at(&a, 1), "btrfs");
    check_tree(&mounted_at(&a, 5), "ext4");
    if !kernel_filesystems().unwrap().contains("vfat") {
        assert_eq!(
            *state(&a, 6),
            State::Skipped {
                reason: "vfat: not readable by this kernel (no vfat in /proc/filesystems)".into()
            }
        );
    }
    a.release().unwrap();
    assert_eq!(mounts_under(&under), []);
    assert_eq!(loops_of(&disk), Vec::<String>::new());
    assert!(under.is_dir(), "a folder it did not make stays");
    assert_eq!(std::fs::read_dir(&under).unwrap().count(), 0);
    assert_eq!(sha256(&disk), before, "the image was written to");
}

#[test]
fn a_busy_mount_is_detached_and_dropping_undoes_everything() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    let (src, img) = (dir.path().join("src"), dir.path().join("bare.img"));
    tree(&src, "bare");
    mkfs(
        "ext4",
        &img,
        16 * MIB,
        "0e7a0000-0000-4000-8000-000000000001",
        "bare",
        Some(&src),
    );
    let layout = partitions(&File::open(&img).unwrap()).unwrap();
    let under = dir.path().join("mnt");

    // Busy: a file open inside. The unmount is lazy; the device goes when the file closes.
    let a = Attached::mount_all(&img, &layout, &under).unwrap();
    let open = File::open(mounted_at(&a, 0).join("hello.txt")).unwrap();
    let e = a.release().unwrap_err().to_string();
    assert!(e.contains("still attached (in use)"), "{e}");
    assert_eq!(mounts_under(&under), [], "detached from the tree at once");
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !loops_of(&img).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(loops_of(&img), Vec::<String>::new());

    // Dropped without release.
    let a = Attached::mount_all(&img, &layout, &under).unwrap();
    check_tree(&mounted_at(&a, 0), "bare");
    drop(a);
    assert_eq!(mounts_under(&under), []);
    assert_eq!(loops_of(&img), Vec::<String>::new());
    assert!(!under.exists());
}

#[test]
fn a_filesystem_the_kernel_refuses_is_recorded_and_its_device_cleared() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bad.img");
    mkfs(
        "ext4",
        &img,
        8 * MIB,
        "0e7a0000-0000-4000-8000-000000000002",
        "bad",
        None,
    );
    // s_log_block_size = 200: no such block size.
    poke(&img, 1024 + 24, &200u32.to_le_bytes());
    let layout = partitions(&File::open(&img).unwrap()).unwrap();
    let under = dir.path().join("mnt");
    let a = Attached::mount_all(&img, &layout, &under).unwrap();
    match state(&a, 0) {
        State::Skipped { reason } => assert!(
            reason.starts_with("ext4: the kernel refused to mount it read-only: "),
            "{reason}"
        ),
        s => panic!("{s:?}"),
    }
    assert_eq!(loops_of(&img), Vec::<String>::new());
    assert!(!under.join("p0").exists());
    a.release().unwrap();
    assert!(!under.exists());
}

#[test]
fn a_layout_not_of_this_image_is_refused_before_anything() {
    need_root();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("small.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let mut layout = partitions(&File::open(&img).unwrap()).unwrap();
    layout.partitions[0].size = 8192;
    let under = dir.path().join("mnt");
    let e = Attached::mount_all(&img, &layout, &under)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("small.img: partition 0 (bytes 0+8192) is past the image's end (4096 bytes): not the layout of this image"),
        "{e}"
    );
    assert!(!under.exists());
    let e = Attached::mount_all(&img, &layout, &img)
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the image's end"), "{e}");
    layout.partitions[0].size = 4096;
    let e = Attached::mount_all(&img, &layout, &img)
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("small.img: not a folder to mount under"), "{e}");
}
