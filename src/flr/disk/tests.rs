use super::*;
use crate::flr::testimg::{mkfs, place, poke, sfdisk, Gpt, MIB};

fn open(p: &std::path::Path) -> std::fs::File {
    std::fs::File::open(p).unwrap()
}

fn fs_at(img: &std::fs::File, p: &Partition) -> Option<Filesystem> {
    detect_fs(img, p.start, p.size).unwrap()
}

#[test]
fn crc32_is_ieee() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

#[test]
fn gpt_partitions_their_names_types_and_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sfdisk(
        &disk,
        40 * MIB,
        "label: gpt\n\
         start=2048, size=16MiB, type=linux, name=\"Grüße root\"\n\
         size=8MiB, type=uefi\n\
         size=8MiB, type=swap\n",
    );
    let fs = dir.path().join("fs");
    mkfs(
        "ext4",
        &fs,
        16 * MIB,
        "6a1f0c2e-5b0e-4c41-9d55-0d7d1c0a1b2c",
        "rootfs",
        None,
    );
    place(&disk, &fs, MIB);
    mkfs("vfat", &fs, 8 * MIB, "1234-abcd", "EFI", None);
    place(&disk, &fs, 17 * MIB);
    mkfs(
        "swap",
        &fs,
        8 * MIB,
        "0d5f3c46-6ad2-4f0b-a1c1-3f7d8d9a0e11",
        "sw",
        None,
    );
    place(&disk, &fs, 25 * MIB);

    let img = open(&disk);
    let l = partitions(&img).unwrap();
    assert_eq!((l.table.clone(), l.sector), (Table::Gpt, 512));
    assert!(l.notes.is_empty(), "{:?}", l.notes);
    let p: Vec<_> = l
        .partitions
        .iter()
        .map(|p| {
            (
                p.index,
                p.start,
                p.size,
                p.type_name.as_str(),
                p.label.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        p,
        [
            (1, MIB, 16 * MIB, "Linux filesystem", Some("Grüße root")),
            (2, 17 * MIB, 8 * MIB, "EFI System", None),
            (3, 25 * MIB, 8 * MIB, "Linux swap", None),
        ]
    );
    let ext = fs_at(&img, &l.partitions[0]).unwrap();
    assert_eq!(ext.kind, FsKind::Ext4);
    assert_eq!(
        ext.uuid.as_deref(),
        Some("6a1f0c2e-5b0e-4c41-9d55-0d7d1c0a1b2c")
    );
    assert_eq!(ext.label.as_deref(), Some("rootfs"));
    let fat = fs_at(&img, &l.partitions[1]).unwrap();
    assert_eq!(
        (fat.kind, fat.uuid.as_deref(), fat.label.as_deref()),
        (FsKind::Vfat, Some("1234-ABCD"), Some("EFI"))
    );
    let swap = fs_at(&img, &l.partitions[2]).unwrap();
    assert_eq!(
        (swap.kind, swap.uuid.as_deref(), swap.label.as_deref()),
        (
            FsKind::Swap,
            Some("0d5f3c46-6ad2-4f0b-a1c1-3f7d8d9a0e11"),
            Some("sw")
        )
    );
    // What the kernel's own reader (blkid) says, for the UUID the lead matches on.
    let blkid = crate::flr::testimg::run(
        "blkid",
        &[
            "-p",
            "-O",
            &MIB.to_string(),
            "-s",
            "UUID",
            "-o",
            "value",
            disk.to_str().unwrap(),
        ],
    );
    assert_eq!(blkid.trim(), ext.uuid.unwrap());
}

#[test]
fn mbr_primary_and_logical_partitions_in_kernel_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sfdisk(
        &disk,
        64 * MIB,
        "label: dos\n\
         disk.img1 : start=2048, size=8MiB, type=83\n\
         disk.img2 : size=40MiB, type=5\n\
         disk.img5 : size=8MiB, type=83\n\
         disk.img6 : size=8MiB, type=82\n",
    );
    let img = open(&disk);
    let l = partitions(&img).unwrap();
    assert_eq!(l.table, Table::Mbr);
    let p: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.index, p.size, p.type_name.as_str()))
        .collect();
    assert_eq!(
        p,
        [
            (1, 8 * MIB, "Linux"),
            (5, 8 * MIB, "Linux"),
            (6, 8 * MIB, "Linux swap")
        ]
    );
    // Where the kernel puts them (sfdisk's own listing).
    let dump = crate::flr::testimg::run("sfdisk", &["-d", disk.to_str().unwrap()]);
    for p in &l.partitions {
        let line = format!("disk.img{} : start={:>12}", p.index, p.start / 512);
        assert!(dump.contains(&line), "{line} in\n{dump}");
    }
    // A filesystem in the logical partition is found there.
    let fs = dir.path().join("fs");
    mkfs(
        "ext4",
        &fs,
        8 * MIB,
        "11111111-2222-3333-4444-555555555555",
        "logical",
        None,
    );
    place(&disk, &fs, l.partitions[1].start);
    let found = fs_at(&open(&disk), &l.partitions[1]).unwrap();
    assert_eq!(found.label.as_deref(), Some("logical"));
}

#[test]
fn a_bare_filesystem_is_partition_zero_over_the_whole_image() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, size) in [
        ("ext4", 8 * MIB),
        ("xfs", 300 * MIB),
        ("btrfs", 128 * MIB),
        ("vfat", 8 * MIB),
    ] {
        let fs = dir.path().join(kind);
        let uuid = if kind == "vfat" {
            "0000-0042"
        } else {
            "0b7e5d8c-0000-4000-8000-00000000002a"
        };
        mkfs(kind, &fs, size, uuid, "bare", None);
        let img = open(&fs);
        let l = partitions(&img).unwrap();
        assert_eq!(l.table, Table::None, "{kind}");
        assert_eq!(
            (
                l.partitions.len(),
                l.partitions[0].index,
                l.partitions[0].size
            ),
            (1, 0, size)
        );
        let f = fs_at(&img, &l.partitions[0]).unwrap();
        assert_eq!(
            f.kind.driver(),
            Some(if kind == "ext4" { "ext4" } else { kind })
        );
        assert_eq!(
            f.uuid.as_deref().map(str::to_lowercase).as_deref(),
            Some(uuid)
        );
        assert_eq!(f.label.as_deref(), Some("bare"));
    }
    // Nothing known: still one whole-image partition, and no filesystem.
    let empty = vec![0u8; 1 << 16];
    let l = partitions(&empty[..]).unwrap();
    assert_eq!(l.table, Table::None);
    assert_eq!(detect_fs(&empty[..], 0, 1 << 16).unwrap(), None);
}

#[test]
fn a_damaged_primary_gpt_falls_back_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    sfdisk(
        &disk,
        8 * MIB,
        "label: gpt\nstart=2048, size=2MiB, name=\"one\"\nsize=2MiB, name=\"two\"\n",
    );
    let good = partitions(&open(&disk)).unwrap();
    // One flipped byte in the primary's entry array breaks its CRC.
    poke(&disk, 2 * 512 + 60, b"X");
    let l = partitions(&open(&disk)).unwrap();
    assert_eq!(l.partitions, good.partitions);
    assert_eq!(l.notes.len(), 1);
    assert!(
        l.notes[0].contains("primary GPT header is damaged (header at LBA 1 (512-byte sectors): entry array CRC32 does not match)")
            && l.notes[0].contains("backup at LBA 16383"),
        "{}",
        l.notes[0]
    );
    // Both gone: an error naming both.
    poke(&disk, 8 * MIB - 512 + 20, b"\xff");
    let e = partitions(&open(&disk)).unwrap_err().to_string();
    assert!(
        e.starts_with("GPT: no usable header: header at LBA 1"),
        "{e}"
    );
    assert!(
        e.contains("header at LBA 16383 (512-byte sectors): header CRC32 does not match"),
        "{e}"
    );
}

#[test]
fn a_gpt_of_4096_byte_sectors() {
    let img = Gpt::new(4096, 256, vec![(10, 73, "data"), (74, 200, "")]).bytes();
    let l = partitions(&img[..]).unwrap();
    assert_eq!((l.table, l.sector), (Table::Gpt, 4096));
    let p: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.index, p.start, p.size, p.label.clone()))
        .collect();
    assert_eq!(
        p,
        [
            (1, 40960, 64 * 4096, Some("data".into())),
            (2, 74 * 4096, 127 * 4096, None)
        ]
    );
}

#[test]
fn the_hand_written_gpt_is_what_sfdisk_reads() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, Gpt::new(512, 4096, vec![(2048, 3071, "x")]).bytes()).unwrap();
    let dump = crate::flr::testimg::run("sfdisk", &["-d", disk.to_str().unwrap()]);
    assert!(
        dump.contains("start=        2048, size=        1024"),
        "{dump}"
    );
}

#[test]
fn hostile_gpt_headers_are_refused_with_the_reason() {
    let base = || Gpt::new(512, 2048, vec![(40, 99, "a")]);
    let refused = |g: Gpt| partitions(&g.bytes()[..]).unwrap_err().to_string();
    let mut g = base();
    g.entry_count = 1 << 31;
    let e = refused(g);
    assert!(e.contains("2147483648 entries of 128 bytes (274877906944 bytes) is more than the 1048576 skiff reads"), "{e}");
    let mut g = base();
    g.entry_size = 0;
    assert!(refused(g).contains("entry size 0 is not 128 × 2^n up to 4096"));
    let mut g = base();
    g.entry_count = u32::MAX;
    g.entry_size = 4096;
    assert!(refused(g).contains("is more than the 1048576 skiff reads"));
    let e = refused(Gpt::new(512, 2048, vec![(40, 99, "a"), (90, 120, "b")]));
    assert!(
        e.contains("GPT partitions 1 (bytes 20480..51200) and 2 (from byte 46080) overlap"),
        "{e}"
    );
    let e = refused(Gpt::new(512, 2048, vec![(40, 5000, "a")]));
    assert!(
        e.contains("GPT partition 1: sectors 40..=5000 are not within the usable 34..=2014"),
        "{e}"
    );
    let e = refused(Gpt::new(512, 2048, vec![(99, 40, "a")]));
    assert!(e.contains("sectors 99..=40"), "{e}");
}

#[test]
fn partitions_past_the_image_end_are_cut_or_left_out() {
    // A header written for a larger disk, the image truncated since.
    let mut img = Gpt::new(
        512,
        4096,
        vec![(40, 1000, "a"), (1001, 1800, "b"), (2100, 3000, "c")],
    )
    .bytes();
    img.truncate(2048 * 512);
    let l = partitions(&img[..]).unwrap();
    // The primary is intact; the backup is gone with the tail.
    let p: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.index, p.start, p.size))
        .collect();
    assert_eq!(p, [(1, 40 * 512, 961 * 512), (2, 1001 * 512, 800 * 512)]);
    let mut img = Gpt::new(512, 4096, vec![(1500, 3000, "a")]).bytes();
    img.truncate(2048 * 512);
    let l = partitions(&img[..]).unwrap();
    assert_eq!(l.partitions[0].size, (2048 - 1500) * 512);
    assert!(
        l.notes[0].contains(
            "partition 1 ends at byte 1536512, past the image's end (1048576): cut to 280576 bytes"
        ),
        "{:?}",
        l.notes
    );
    let mut img = Gpt::new(512, 4096, vec![(3000, 3500, "a")]).bytes();
    img.truncate(2048 * 512);
    let l = partitions(&img[..]).unwrap();
    assert!(l.partitions.is_empty());
    assert!(
        l.notes[0].contains("starts at byte 1536000, past the image's end"),
        "{:?}",
        l.notes
    );
}

/// An MBR entry: type, first sector, sectors.
fn mbr_entry_bytes(sector: &mut [u8], i: usize, kind: u8, first: u32, count: u32) {
    let e = &mut sector[446 + 16 * i..446 + 16 * (i + 1)];
    e[4] = kind;
    e[8..12].copy_from_slice(&first.to_le_bytes());
    e[12..16].copy_from_slice(&count.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xAA;
}

#[test]
fn an_extended_chain_that_loops_or_leaves_ends_with_a_note() {
    let mut img = vec![0u8; 4096 * 512];
    // Extended partition at sector 100; its records point relative to it.
    mbr_entry_bytes(&mut img[..512], 0, 0x05, 100, 2000);
    let ebr = |img: &mut Vec<u8>, at: usize, next: u32| {
        let s = &mut img[at * 512..(at + 1) * 512];
        mbr_entry_bytes(s, 0, 0x83, 10, 20);
        mbr_entry_bytes(s, 1, 0x05, next, 100);
    };
    // 100 -> 300 -> 300: the second visit ends it.
    ebr(&mut img, 100, 200);
    ebr(&mut img, 300, 200);
    let l = partitions(&img[..]).unwrap();
    let p: Vec<_> = l.partitions.iter().map(|p| (p.index, p.start)).collect();
    assert_eq!(p, [(5, 110 * 512), (6, 310 * 512)]);
    assert!(
        l.notes[0].contains(
            "loops or leaves the extended partition at sector 300: stopped before partition 7"
        ),
        "{:?}",
        l.notes
    );
    // 300 -> outside the extended partition.
    ebr(&mut img, 300, 5000);
    let l = partitions(&img[..]).unwrap();
    assert_eq!(l.partitions.len(), 2);
    assert!(l.notes[0].contains("at sector 5100"), "{:?}", l.notes);
}

#[test]
fn reads_stay_inside_the_partition() {
    // An ext4 magic just past a partition's end is not its filesystem.
    let mut img = vec![0u8; 1 << 16];
    img[4096 + 1080..4096 + 1082].copy_from_slice(&0xEF53u16.to_le_bytes());
    assert_eq!(detect_fs(&img[..], 4096, 1081).unwrap(), None);
    assert_eq!(
        detect_fs(&img[..], 4096, 2048).unwrap().map(|f| f.kind),
        Some(FsKind::Ext2)
    );
    assert_eq!(detect_fs(&img[..], u64::MAX - 10, u64::MAX).unwrap(), None);
}
