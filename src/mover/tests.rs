//! Round trips through the whole pipeline on real files and local repositories.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::repo::crypto::KdfParams;
use crate::repo::{Backend, Repo};

const BS: u64 = BLOCK_SIZE as u64;

// The integration tests' images (block generator, byte comparison), shared
// so both tiers test the same mix of zero, text-like, random and repeated blocks.
#[path = "../../tests/it/images.rs"]
mod images;
use images::{block as block_content, files_under, same};

pub fn make_image(path: &Path, seed: u64, blocks: u64, tail: u64) {
    let f = std::fs::File::create(path).unwrap();
    for i in 0..blocks {
        let b = block_content(seed, i);
        if b.iter().any(|&x| x != 0) {
            f.write_all_at(&b, i * BS).unwrap();
        }
    }
    if tail > 0 {
        f.write_all_at(&vec![0x5a; tail as usize], blocks * BS)
            .unwrap();
    }
    f.set_len(blocks * BS + tail).unwrap();
}

fn settings() -> MoverSettings {
    MoverSettings {
        window: 8,
        cpu_threads: 2,
        ..Default::default()
    }
}

async fn repo_at(dir: &Path) -> Arc<Repo> {
    if !dir.join("config").exists() {
        Repo::init(
            Backend::local(dir),
            &dir.display().to_string(),
            b"pw",
            KdfParams::MIN,
        )
        .await
        .unwrap();
    }
    Arc::new(
        Repo::open(Backend::local(dir), &dir.display().to_string(), b"pw")
            .await
            .unwrap(),
    )
}

async fn backup(img: &Path, repo: &Path, parent: ParentChoice) -> Result<CopyResult> {
    let r = repo_at(repo).await;
    let src = Source::File(file::FileSource::open(img).await?);
    let opts = CopyOptions {
        parent,
        volume: Some("vol".into()),
        settings: settings(),
        ..Default::default()
    };
    copy(src, Target::Repo(r), &opts, None).await
}

async fn restore(repo: &Path, point: &str, out: &Path) -> Result<CopyResult> {
    let r = repo_at(repo).await;
    let p = r.find_point(point).await?;
    let src = Source::Repo(repository::RepoSource::new(r, p, pool::CpuPool::new(2)));
    copy(
        src,
        Target::File(out.to_path_buf()),
        &CopyOptions {
            settings: settings(),
            ..Default::default()
        },
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backup_incremental_restore_is_bit_exact_and_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 1, 40, 12_345);
    let full = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    assert_eq!(full.blocks_total, 41);
    assert!(full.parent.is_none());
    assert!(
        full.blocks_new > 0 && full.blocks_dedup > 0 && full.blocks_zero > 0,
        "{full:?}"
    );
    assert_eq!(full.blocks_new + full.blocks_dedup + full.blocks_zero, 41);
    let saved = dir.path().join("v1.img");
    std::fs::copy(&img, &saved).unwrap();

    // A day of changes: two blocks rewritten, one zeroed.
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&block_content(99, 3), 3 * BS).unwrap();
    f.write_all_at(b"changed", 17 * BS + 100).unwrap();
    f.write_all_at(&vec![0u8; BLOCK_SIZE], 21 * BS).unwrap();
    drop(f);
    let incr = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    assert_eq!(incr.parent, full.point);
    assert!(
        incr.blocks_new <= 2,
        "only changed blocks are stored: {incr:?}"
    );
    assert!(
        incr.bytes_stored < full.bytes_stored / 5,
        "{} vs {}",
        incr.bytes_stored,
        full.bytes_stored
    );

    for (point, expected) in [
        (full.point.as_ref().unwrap(), &saved),
        (incr.point.as_ref().unwrap(), &img),
    ] {
        let out = dir.path().join(format!("restored-{point}.img"));
        let r = restore(&repo, point, &out).await.unwrap();
        assert_eq!(r.size, std::fs::metadata(expected).unwrap().len());
        assert!(same(&out, expected), "restore of {point} differs");
        let m = std::fs::metadata(&out).unwrap();
        assert!(
            m.blocks() * 512 < m.len(),
            "zero blocks are holes: {} allocated of {}",
            m.blocks() * 512,
            m.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_of_a_big_sparse_volume_stores_only_the_changed_path() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("big.img"), dir.path().join("repo"));
    // 3 GiB: two leaves of the block map, with a handful of data blocks.
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(6144 * BS).unwrap();
    for i in [0u64, 5, 4095, 4096, 6000] {
        f.write_all_at(&block_content(7, i * 4 + 2), i * BS)
            .unwrap();
    }
    let full = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    f.write_all_at(b"x", 6000 * BS + 9).unwrap();
    drop(f);
    let incr = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    assert_eq!(incr.blocks_new, 1);
    // One data blob, the second leaf and the root: about 512 KiB plus two small nodes.
    let r = repo_at(&repo).await;
    let p1 = r.find_point(full.point.as_ref().unwrap()).await.unwrap();
    let p2 = r.find_point(incr.point.as_ref().unwrap()).await.unwrap();
    assert_eq!(p1.depth, 2);
    assert_ne!(p1.root, p2.root);
    assert!(incr.bytes_stored < BS + 64 * 1024, "{}", incr.bytes_stored);
    let out = dir.path().join("out.img");
    restore(&repo, &p2.id, &out).await.unwrap();
    assert!(same(&out, &img));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_without_an_index_are_reindexed_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 3, 24, 0);
    let r = repo_at(&repo).await;
    // An interrupted run: blocks packed and uploaded, no index file, no point.
    let mut pb = crate::repo::pack::PackBuilder::new(32 << 20);
    let mut stored = std::collections::HashSet::new();
    for i in 0..24 {
        let b = block_content(3, i);
        if b.iter().any(|&x| x != 0) {
            let id = r.block_hasher().id(&b);
            if stored.insert(id) {
                pb.add(&crate::repo::pack::seal_blob(
                    r.key(),
                    crate::repo::format::BlobKind::Data,
                    id,
                    &b,
                    1,
                ));
            }
        }
    }
    assert!(stored.len() > 3);
    let (bytes, indexed) = pb.finish(r.key());
    r.backend()
        .put_pack(&crate::repo::pack::pack_name(&indexed.pack), bytes)
        .await
        .unwrap();
    std::fs::write(repo.join("data").join(".tmp-left-behind"), b"partial").unwrap();
    drop(r);

    let r = repo_at(&repo).await;
    assert_eq!(r.unindexed_packs().len(), 1);
    let report = crate::repo::check::check(&r, true).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.unindexed_packs.len(), 1);

    let run = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    assert_eq!(
        run.blocks_new, 0,
        "every block was reused from the unindexed pack: {run:?}"
    );
    let r = repo_at(&repo).await;
    assert!(
        r.unindexed_packs().is_empty(),
        "the writer indexed the recovered pack"
    );
    assert!(
        !repo.join("data").join(".tmp-left-behind").exists(),
        "temporary files are cleaned"
    );
    let report = crate::repo::check::check(&r, true).await.unwrap();
    assert!(report.ok && report.unindexed_packs.is_empty(), "{report:?}");
    let out = dir.path().join("out.img");
    restore(&repo, run.point.as_ref().unwrap(), &out)
        .await
        .unwrap();
    assert!(same(&out, &img));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_is_found_by_check_and_fails_the_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 5, 16, 0);
    let p1 = backup(&img, &repo, ParentChoice::None)
        .await
        .unwrap()
        .point
        .unwrap();
    let p2 = backup(&img, &repo, ParentChoice::Auto)
        .await
        .unwrap()
        .point
        .unwrap();
    let r = repo_at(&repo).await;
    assert!(crate::repo::check::check(&r, true).await.unwrap().ok);

    // Flip a byte inside the first blob of the (only) block data pack; the
    // block map (the same for both points) is in a small pack of its own.
    let mut packs: Vec<PathBuf> = files_under(&repo.join("data"));
    assert_eq!(packs.len(), 2, "{packs:?}");
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    let pack = &packs[0];
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(pack, &bytes).unwrap();
    let pack_rel = pack.strip_prefix(&repo).unwrap().display().to_string();

    let quick = crate::repo::check::check(&r, false).await.unwrap();
    assert!(
        quick.ok,
        "the structure is intact; only the data is damaged: {quick:?}"
    );
    let deep = crate::repo::check::check(&r, true).await.unwrap();
    assert!(!deep.ok);
    assert_eq!(deep.damaged_packs, vec![pack_rel.clone()]);
    let mut affected = deep.affected_points.clone();
    affected.sort();
    let mut both = vec![p1.clone(), p2.clone()];
    both.sort();
    assert_eq!(affected, both);
    assert!(
        deep.problems
            .iter()
            .any(|p| p.object.ends_with(&pack_rel) && p.message.contains("does not authenticate")),
        "{:?}",
        deep.problems
    );

    let out = dir.path().join("out.img");
    let err = restore(&repo, &p2, &out).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&pack_rel) && msg.contains("does not authenticate"),
        "{msg}"
    );
    assert_eq!(err.kind(), "corrupt");
    assert!(!out.exists(), "a failed restore leaves no file behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repository_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 11, 12, 0);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    let marker = b"SKIFF-PLAINTEXT-MARKER-0123456789-ABCDEFGHIJ";
    f.write_all_at(&marker.repeat(BLOCK_SIZE / marker.len()), 2 * BS)
        .unwrap();
    drop(f);
    backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    let image = std::fs::read(&img).unwrap();
    // Samples of every non-zero block, and the marker itself.
    let mut needles: Vec<Vec<u8>> = vec![marker[..24].to_vec()];
    for c in image.chunks(BLOCK_SIZE) {
        if c.iter().any(|&b| b != 0) {
            needles.push(c[1000..1032].to_vec());
        }
    }
    for file in files_under(&repo) {
        let stored = std::fs::read(&file).unwrap();
        for n in &needles {
            assert!(
                !stored.windows(n.len()).any(|w| w == n.as_slice()),
                "{} holds plaintext",
                file.display()
            );
        }
        assert!(
            !stored.windows(3).any(|w| w == b"vol\""),
            "{} holds a volume name",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_prune_free_space_and_keep_the_rest_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 21, 30, 0);
    let p1 = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for i in [2u64, 9, 15] {
        f.write_all_at(&block_content(77, i), i * BS).unwrap();
    }
    drop(f);
    let p2 = backup(&img, &repo, ParentChoice::Auto).await.unwrap();
    let r = repo_at(&repo).await;
    let keep = crate::repo::forget::KeepOptions {
        keep_last: 1,
        ..Default::default()
    };
    let d = crate::repo::forget::forget(&r, &keep, None, false)
        .await
        .unwrap();
    assert_eq!(
        d.iter()
            .filter(|d| !d.keep)
            .map(|d| d.point.id.clone())
            .collect::<Vec<_>>(),
        vec![p1.point.clone().unwrap()]
    );
    let size_before: u64 = files_under(&repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let opts = crate::repo::prune::PruneOptions {
        repack_threshold: 0.0,
        ..Default::default()
    };
    let dry = crate::repo::prune::prune(
        &r,
        &crate::repo::prune::PruneOptions {
            dry_run: true,
            ..opts
        },
    )
    .await
    .unwrap();
    assert!(dry.blobs_removed >= 3, "{dry:?}");
    assert_eq!(
        files_under(&repo)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum::<u64>(),
        size_before
    );
    let report = crate::repo::prune::prune(&r, &opts).await.unwrap();
    assert!(
        report.blobs_removed >= 3 && report.packs_repacked + report.packs_deleted >= 1,
        "{report:?}"
    );
    let size_after: u64 = files_under(&repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(size_after < size_before, "{size_after} < {size_before}");
    let r = repo_at(&repo).await;
    let c = crate::repo::check::check(&r, true).await.unwrap();
    assert!(c.ok, "{c:?}");
    let out = dir.path().join("out.img");
    restore(&repo, p2.point.as_ref().unwrap(), &out)
        .await
        .unwrap();
    assert!(same(&out, &img));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_on_an_unreadable_block_map_removes_no_data_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, repo) = (
        dir.path().join("a.img"),
        dir.path().join("b.img"),
        dir.path().join("repo"),
    );
    make_image(&a, 31, 12, 0);
    make_image(&b, 32, 12, 0);
    let pa = backup(&a, &repo, ParentChoice::Auto).await.unwrap();
    let before: Vec<PathBuf> = files_under(&repo.join("data"));
    backup(&b, &repo, ParentChoice::Auto).await.unwrap();
    // b's block map (the smaller of its two packs) is lost: what b's blocks
    // are is unknown, so none of them may go.
    let mut b_packs: Vec<PathBuf> = files_under(&repo.join("data"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    b_packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    std::fs::remove_file(&b_packs[0]).unwrap();
    let r = repo_at(&repo).await;
    let opts = crate::repo::prune::PruneOptions {
        repack_threshold: 0.0,
        ..Default::default()
    };
    let report = crate::repo::prune::prune(&r, &opts).await.unwrap();
    assert_eq!(
        report.packs_deleted + report.packs_repacked,
        0,
        "{report:?}"
    );
    assert!(b_packs[1].exists(), "b's data is kept");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("cannot be read in full: no data was removed")),
        "{report:?}"
    );
    assert_eq!(report.points_lost_data.len(), 1, "{report:?}");
    let out = dir.path().join("out.img");
    restore(&repo, pa.point.as_ref().unwrap(), &out)
        .await
        .unwrap();
    assert!(same(&out, &a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 2, 4, 0);
    let r = repo_at(&repo).await;
    let holder = crate::repo::writer::Writer::start(r.clone(), "skiff copy")
        .await
        .unwrap();
    let err = backup(&img, &repo, ParentChoice::Auto).await.unwrap_err();
    assert_eq!(err.kind(), "locked");
    assert!(
        err.to_string().contains("is locked by skiff copy (pid "),
        "{err}"
    );
    assert!(!repo.join("data").exists() || files_under(&repo.join("data")).is_empty());
    assert!(r.points().await.unwrap().is_empty());
    holder.release().await.unwrap();
    backup(&img, &repo, ParentChoice::Auto).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_between_files_and_refuses_bad_targets() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    make_image(&img, 8, 6, 77);
    let out = dir.path().join("copy.img");
    let src = Source::File(file::FileSource::open(&img).await.unwrap());
    let r = copy(
        src,
        Target::File(out.clone()),
        &CopyOptions {
            settings: settings(),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    assert!(same(&img, &out));
    assert_eq!(r.blocks_total, 7);
    let src = Source::File(file::FileSource::open(&img).await.unwrap());
    let e = copy(
        src,
        Target::File(out.clone()),
        &CopyOptions::default(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "invalid");
    let src = Source::File(file::FileSource::open(&img).await.unwrap());
    let opts = CopyOptions {
        parent: ParentChoice::Point("abcd".into()),
        ..Default::default()
    };
    let e = copy(src, Target::File(dir.path().join("x.img")), &opts, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "parent: only a copy into a repository has a parent point"
    );
    assert!(!dir.path().join("x.img").exists());
}

#[test]
fn zero_detection() {
    let mut b = vec![0u8; BLOCK_SIZE];
    assert!(is_zero(&b));
    b[BLOCK_SIZE - 1] = 1;
    assert!(!is_zero(&b));
    b[BLOCK_SIZE - 1] = 0;
    b[3] = 9;
    assert!(!is_zero(&b));
    assert!(is_zero(&[0u8; 70]));
    let mut odd = [0u8; 70];
    odd[69] = 1;
    assert!(!is_zero(&odd));
}

/// A point read as an image reads only the blocks a range touches, hands
/// back zeros for zero blocks without reading, and matches the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_image_reads_only_the_blocks_a_range_touches() {
    let dir = tempfile::tempdir().unwrap();
    let (img, repo) = (dir.path().join("disk.img"), dir.path().join("repo"));
    make_image(&img, 9, 40, 1000);
    let r = backup(&img, &repo, ParentChoice::None).await.unwrap();
    let repo = repo_at(&repo).await;
    let point = repo.find_point(r.point.as_deref().unwrap()).await.unwrap();
    let image = super::image::PointImage::new(repo, point, pool::CpuPool::new(2), 4).unwrap();
    let source = std::fs::read(&img).unwrap();
    // 100 bytes across the boundary of blocks 2 and 3: two blocks read.
    let at = 3 * BS - 50;
    let got = image.read_at(at, 100).await.unwrap();
    assert_eq!(got, source[at as usize..at as usize + 100]);
    let fetched = image.fetched();
    assert!(fetched <= 2, "{fetched} blocks read for a 100-byte range");
    // Again: from the cache.
    image.read_at(at, 100).await.unwrap();
    assert_eq!(image.fetched(), fetched);
    // The tail past the last whole block, and past the end of the image.
    let size = source.len() as u64;
    assert_eq!(
        image.read_at(size - 10, 100).await.unwrap(),
        source[size as usize - 10..]
    );
    assert!(image.read_at(size, 10).await.unwrap().is_empty());
    // The whole image, in odd pieces, with a 4-block cache.
    let mut all = Vec::new();
    while (all.len() as u64) < size {
        all.extend(image.read_at(all.len() as u64, 300_001).await.unwrap());
    }
    assert!(all == source);
}
