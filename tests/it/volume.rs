//! The data mover against the patched emulator: EBS snapshots written and
//! read through the real SDK, checked block by block with an independent
//! client; incrementals that read only changed blocks; throttling and 5xx
//! survived; wrong checksums caught; repositories in S3.

use std::path::{Path, PathBuf};

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use skiff::mover::{self, CopyOptions, CopyResult, Location, MoverError, MoverSettings, Opener};
use skiff::repo::crypto::{sha256, KdfParams};
use skiff::repo::password::PasswordSource;
use skiff::repo::{Backend, Repo};

use crate::images::{self, same, BS};
use crate::mover_emu::{account, Account};

const GIB: u64 = 1 << 30;

struct Fixture {
    dir: tempfile::TempDir,
    account: Account,
    password: PathBuf,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        std::fs::write(&password, "correct horse\n").unwrap();
        Fixture {
            account: account().await,
            dir,
            password,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn init_repo(&self, name: &str) -> String {
        let p = self.path(name);
        Repo::init(Backend::local(&p), name, b"correct horse", KdfParams::MIN)
            .await
            .unwrap();
        format!("repo:{}", p.display())
    }

    /// A new bucket holding a new repository under `prefix`; its URL.
    async fn init_s3_repo(&self, bucket: &str, prefix: &str) -> skiff::repo::RepoUrl {
        self.account
            .s3()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        let url = skiff::repo::RepoUrl::parse(&format!("s3://{bucket}/{prefix}")).unwrap();
        let aws = self.account.aws();
        let backend = skiff::repo::backend_for(&url, Some(aws.s3().await)).unwrap();
        Repo::init(backend, &url.to_string(), b"correct horse", KdfParams::MIN)
            .await
            .unwrap();
        url
    }

    async fn copy_with(
        &self,
        from: &str,
        to: &str,
        opts: CopyOptions,
    ) -> Result<CopyResult, MoverError> {
        let aws = self.account.aws();
        let opener = Opener::new(
            PasswordSource::File(self.password.clone()),
            None,
            opts.settings.clone(),
        );
        let from: Location = from.parse().unwrap();
        let to: Location = to.parse().unwrap();
        let src = opener
            .source(&from, Some(&aws), opts.volume.as_deref())
            .await?;
        let dst = opener.target(&to, Some(&aws)).await?;
        mover::copy(src, dst, &opts, None).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        volume: Option<&str>,
    ) -> Result<CopyResult, MoverError> {
        let opts = CopyOptions {
            volume: volume.map(str::to_string),
            settings: fast_settings(),
            ..Default::default()
        };
        self.copy_with(from, to, opts).await
    }

    /// Uploads an image to a new snapshot; its id.
    async fn snapshot_of(&self, img: &Path) -> String {
        self.copy(&file(img), "ebs:", None)
            .await
            .unwrap()
            .snapshot
            .unwrap()
    }

    /// Copies `from` (a point, a repository, a snapshot) into the image `out`.
    async fn restore_file(&self, from: &str, out: &Path) {
        self.copy(from, &file(out), None).await.unwrap();
    }
}

/// The location of an image file.
fn file(path: &Path) -> String {
    format!("file:{}", path.display())
}

fn fast_settings() -> MoverSettings {
    let mut s = MoverSettings::default();
    s.ebs.concurrency = 16;
    s.ebs.retry.base_delay = std::time::Duration::from_millis(20);
    s.ebs.retry.max_delay = std::time::Duration::from_millis(500);
    s
}

/// Every block of a snapshot, read with an independent client: index → data (checksum verified).
async fn snapshot_blocks(ebs: &aws_sdk_ebs::Client, snapshot: &str) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        assert_eq!(page.block_size(), Some(BS as i32));
        for b in page.blocks() {
            let got = ebs
                .get_snapshot_block()
                .snapshot_id(snapshot)
                .block_index(b.block_index().unwrap())
                .block_token(b.block_token().unwrap())
                .send()
                .await
                .unwrap();
            let checksum = got.checksum().unwrap().to_string();
            let data = got
                .block_data
                .collect()
                .await
                .unwrap()
                .into_bytes()
                .to_vec();
            assert_eq!(
                B64.encode(sha256(&data)),
                checksum,
                "the emulator's checksum matches its data"
            );
            out.push((b.block_index().unwrap() as u64, data));
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// The non-zero blocks of an image file.
fn image_blocks(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let size = std::fs::metadata(path).unwrap().len();
    (0..size / BS)
        .map(|i| (i, images::read_block(path, i)))
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .collect()
}

/// Writes a child snapshot of `parent` with the SDK alone: `changes` are (index, data).
async fn child_snapshot(
    ebs: &aws_sdk_ebs::Client,
    parent: &str,
    changes: &[(u64, Vec<u8>)],
) -> String {
    let s = ebs
        .start_snapshot()
        .volume_size(1)
        .parent_snapshot_id(parent)
        .send()
        .await
        .unwrap();
    let id = s.snapshot_id().unwrap().to_string();
    let mut agg = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut sorted = changes.to_vec();
    sorted.sort_by_key(|c| c.0);
    for (i, data) in &sorted {
        let sha = sha256(data);
        agg.update(&sha);
        ebs.put_snapshot_block()
            .snapshot_id(&id)
            .block_index(*i as i32)
            .block_data(ByteStream::from(data.clone()))
            .data_length(BS as i32)
            .checksum(B64.encode(sha))
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
            .await
            .unwrap();
    }
    let done = ebs
        .complete_snapshot()
        .snapshot_id(&id)
        .changed_blocks_count(sorted.len() as i32)
        .checksum(B64.encode(agg.finish().as_ref()))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().map(|s| s.as_str()), Some("completed"));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebs_backup_incremental_and_restores_are_bit_exact() {
    let f = Fixture::new().await;
    let ebs = f.account.ebs();
    let img1 = f.path("v1.img");
    let data_blocks: Vec<u64> = (0..24).chain([100, 101, 700, 1500, 2047]).collect();
    images::sparse_image(&img1, GIB, 42, data_blocks.iter().copied());
    images::write_block(&img1, 30, &vec![0u8; BS as usize]); // written, but zero

    // Image → new snapshot; checked block by block with an independent client.
    let s1 = f.snapshot_of(&img1).await;
    assert_eq!(
        snapshot_blocks(&ebs, &s1).await,
        image_blocks(&img1),
        "the snapshot holds exactly the image's non-zero blocks"
    );

    // Snapshot → repository (full), then a child snapshot with three changes.
    let repo = f.init_repo("repo").await;
    let full = f
        .copy(&format!("ebs:{s1}"), &repo, Some("vol-test"))
        .await
        .unwrap();
    assert!(full.parent.is_none());
    assert_eq!(full.blocks_read as usize, image_blocks(&img1).len());
    let changes = vec![
        (3u64, images::random_block(7)),
        (500, images::block(9, 1)),
        (100, vec![0u8; BS as usize]),
    ];
    let s2 = child_snapshot(&ebs, &s1, &changes).await;
    let img2 = f.path("v2.img");
    std::fs::copy(&img1, &img2).unwrap();
    for (i, d) in &changes {
        images::write_block(&img2, *i, d);
    }

    // The incremental reads only the changed blocks.
    f.account.reset_faults();
    let incr = f
        .copy(&format!("ebs:{s2}"), &repo, Some("vol-test"))
        .await
        .unwrap();
    assert_eq!(
        incr.parent, full.point,
        "the newest point of the volume is the parent"
    );
    assert_eq!(incr.blocks_read, 3, "{incr:?}");
    assert_eq!(incr.blocks_unchanged, 2048 - 3);
    let counters = f.account.counters();
    assert_eq!(
        counters["get_block"][&s2], 3,
        "GetSnapshotBlock only for changed blocks: {counters}"
    );
    assert_eq!(counters["ops"]["ListChangedBlocks"], 1, "{counters}");

    // Both points restore bit-exact, to files and to a new snapshot.
    for (point, expected) in [(&full.point, &img1), (&incr.point, &img2)] {
        let out = f.path(&format!("{}.img", point.as_ref().unwrap()));
        f.restore_file(&format!("{repo}#{}", point.as_ref().unwrap()), &out)
            .await;
        assert!(same(&out, expected), "restore of {point:?}");
    }
    let back = f
        .copy(
            &format!("{repo}#{}", incr.point.as_ref().unwrap()),
            "ebs:",
            None,
        )
        .await
        .unwrap();
    let s3 = back.snapshot.unwrap();
    assert_eq!(
        snapshot_blocks(&ebs, &s3).await,
        image_blocks(&img2),
        "zero blocks are not written to EBS"
    );
    let down = f.path("down.img");
    f.restore_file(&format!("ebs:{s3}"), &down).await;
    assert!(same(&down, &img2));

    // A source without #POINT restores the volume's newest point.
    let newest = f.path("newest.img");
    f.restore_file(&repo, &newest).await;
    assert!(same(&newest, &img2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_checksums_are_caught_both_ways() {
    let f = Fixture::new().await;
    let ebs = f.account.ebs();
    // The emulator, like AWS, refuses a block whose checksum is wrong…
    let s = ebs.start_snapshot().volume_size(1).send().await.unwrap();
    let sid = s.snapshot_id().unwrap();
    let data = images::random_block(3);
    let err = ebs
        .put_snapshot_block()
        .snapshot_id(sid)
        .block_index(0)
        .block_data(ByteStream::from(data.clone()))
        .data_length(BS as i32)
        .checksum(B64.encode(sha256(b"something else")))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_smithy_types::error::metadata::ProvideErrorMetadata::code(&err),
        Some("ValidationException")
    );

    // …and skiff refuses a block whose data does not match the checksum it came with.
    let img = f.path("a.img");
    images::sparse_image(&img, GIB, 5, 0..6);
    let snap = f.snapshot_of(&img).await;
    f.account.faults(r#"{"corrupt_rate": 1.0}"#);
    let out = f.path("out.img");
    let err = f
        .copy(&format!("ebs:{snap}"), &file(&out), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "integrity");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!out.exists(), "nothing is left behind");
    let repo = f.init_repo("repo").await;
    let err = f
        .copy(&format!("ebs:{snap}"), &repo, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "integrity");
    f.account.reset_faults();
    let r = Repo::open(Backend::local(f.path("repo")), "repo", b"correct horse")
        .await
        .unwrap();
    assert!(
        r.points().await.unwrap().is_empty(),
        "no point from a failed backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_damaged_in_transit_is_read_again() {
    let f = Fixture::new().await;
    let img = f.path("d.img");
    images::sparse_image(&img, GIB, 12, 0..60);
    let snap = f.snapshot_of(&img).await;
    // Three reads in ten come back with a checksum that does not match.
    f.account.faults(r#"{"corrupt_rate": 0.3}"#);
    let out = f.path("out.img");
    f.copy(&format!("ebs:{snap}"), &file(&out), None)
        .await
        .unwrap();
    let counters = f.account.counters();
    f.account.reset_faults();
    assert!(same(&out, &img), "the restore is bit-exact");
    // Every block the snapshot holds was read, and the damaged ones again.
    let reads = counters["ops"]["GetSnapshotBlock"].as_u64().unwrap();
    let blocks = counters["ops"]["PutSnapshotBlock"].as_u64().unwrap();
    assert!(reads > blocks, "damaged blocks were read again: {counters}");
}

/// The snapshots of this account that skiff wrote from `img` (any state).
async fn snapshots_from(f: &Fixture, img: &Path) -> Vec<String> {
    let ec2 = aws_sdk_ec2::Client::new(&f.account.sdk());
    let desc = format!("skiff copy of {}", file(img));
    let out = ec2
        .describe_snapshots()
        .owner_ids("self")
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .filter(|s| s.description() == Some(desc.as_str()))
        .map(|s| format!("{} {:?}", s.snapshot_id().unwrap(), s.state()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_stopped_copy_to_ebs_leaves_no_snapshot() {
    let f = Fixture::new().await;
    let img = f.path("s.img");
    images::sparse_image(&img, GIB, 21, 0..80);
    // A failure after the snapshot started: the callback refuses to go on.
    let mut refuse = |_: &mover::Progress| Err("enough".to_string());
    let err = {
        let opts = CopyOptions {
            settings: fast_settings(),
            ..Default::default()
        };
        let aws = f.account.aws();
        let opener = Opener::new(
            PasswordSource::File(f.password.clone()),
            None,
            opts.settings.clone(),
        );
        let src = opener
            .source(&file(&img).parse().unwrap(), Some(&aws), None)
            .await
            .unwrap();
        let dst = opener
            .target(&"ebs:".parse().unwrap(), Some(&aws))
            .await
            .unwrap();
        mover::copy(src, dst, &opts, Some(&mut refuse))
            .await
            .unwrap_err()
    };
    assert!(err.to_string().contains("enough"), "{err}");
    assert_eq!(
        snapshots_from(&f, &img).await,
        Vec::<String>::new(),
        "the failed copy's snapshot is deleted"
    );

    // A stop asked for from outside, while blocks are being written.
    let opts = CopyOptions {
        settings: fast_settings(),
        ..Default::default()
    };
    let stop = opts.stop.clone();
    let mut ask = move |_: &mover::Progress| {
        stop.request("interrupted by the test");
        Ok(())
    };
    let aws = f.account.aws();
    let opener = Opener::new(
        PasswordSource::File(f.password.clone()),
        None,
        opts.settings.clone(),
    );
    let src = opener
        .source(&file(&img).parse().unwrap(), Some(&aws), None)
        .await
        .unwrap();
    let dst = opener
        .target(&"ebs:".parse().unwrap(), Some(&aws))
        .await
        .unwrap();
    let err = mover::copy(src, dst, &opts, Some(&mut ask))
        .await
        .unwrap_err();
    assert!(
        matches!(err, MoverError::Stopped(ref m) if m == "interrupted by the test"),
        "{err}"
    );
    assert_eq!(
        snapshots_from(&f, &img).await,
        Vec::<String>::new(),
        "the stopped copy's snapshot is deleted"
    );
    let puts = f.account.counters()["ops"]["PutSnapshotBlock"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        puts < 2 * 80,
        "the copies stopped early: {puts} blocks written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_run_completes() {
    let f = Fixture::new().await;
    let img = f.path("t.img");
    images::sparse_image(&img, GIB, 11, (0..40).chain([900, 901]));
    f.account
        .faults(r#"{"rate": 0.3, "kinds": ["throttle", "throttling", "500"]}"#);
    let snap = f.snapshot_of(&img).await;
    let repo = f.init_repo("repo").await;
    let b = f.copy(&format!("ebs:{snap}"), &repo, None).await.unwrap();
    let out = f.path("out.img");
    f.restore_file(&format!("{repo}#{}", b.point.unwrap()), &out)
        .await;
    let counters = f.account.counters();
    f.account.reset_faults();
    assert!(same(&out, &img));
    assert!(
        counters["faults"].as_u64().unwrap() >= 10,
        "faults were injected: {counters}"
    );

    // A permanent error is not retried: an unknown snapshot fails at once.
    let t = std::time::Instant::now();
    let err = f
        .copy("ebs:snap-0123456789abcdef0", &repo, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err}");
    assert!(!err.retryable());
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_and_survive_empty_pages() {
    let f = Fixture::new().await;
    let img = f.path("p.img");
    images::sparse_image(&img, GIB, 13, 0..0);
    for i in 0..260u64 {
        images::write_block(&img, i * 3, &images::random_block(i + 1));
    }
    let snap = f.snapshot_of(&img).await;
    let changes: Vec<(u64, Vec<u8>)> = (0..230u64)
        .map(|i| (i * 4 + 1, images::random_block(1000 + i)))
        .collect();
    let child = child_snapshot(&f.account.ebs(), &snap, &changes).await;
    let img2 = f.path("p2.img");
    std::fs::copy(&img, &img2).unwrap();
    for (i, d) in &changes {
        images::write_block(&img2, *i, d);
    }
    f.account.faults(r#"{"empty_page_rate": 0.4}"#);
    let mut settings = fast_settings();
    settings.ebs.list_page_size = 100;
    let repo = f.init_repo("repo").await;
    let opts = CopyOptions {
        volume: Some("paged".into()),
        settings,
        ..Default::default()
    };
    let full = f
        .copy_with(&format!("ebs:{snap}"), &repo, opts.clone())
        .await
        .unwrap();
    assert_eq!(full.blocks_read, 260);
    let incr = f
        .copy_with(&format!("ebs:{child}"), &repo, opts.clone())
        .await
        .unwrap();
    assert_eq!(incr.blocks_read, changes.len() as u64);
    f.account.reset_faults();
    let out = f.path("out.img");
    f.restore_file(&format!("{repo}#{}", incr.point.unwrap()), &out)
        .await;
    assert!(same(&out, &img2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_parent_snapshots_fall_back_to_a_full_read() {
    let f = Fixture::new().await;
    let (a, b) = (f.path("a.img"), f.path("b.img"));
    images::sparse_image(&a, GIB, 1, 0..8);
    images::sparse_image(&b, GIB, 2, 0..5);
    let sa = f.snapshot_of(&a).await;
    let sb = f.snapshot_of(&b).await;
    let repo = f.init_repo("repo").await;
    f.copy(&format!("ebs:{sa}"), &repo, Some("v"))
        .await
        .unwrap();
    // Same volume name, but an unrelated snapshot: ListChangedBlocks refuses (UNRELATED_SNAPSHOTS).
    let r = f
        .copy(&format!("ebs:{sb}"), &repo, Some("v"))
        .await
        .unwrap();
    assert_eq!(r.blocks_unchanged, 0, "{r:?}");
    let out = f.path("out.img");
    f.restore_file(&format!("{repo}#{}", r.point.unwrap()), &out)
        .await;
    assert!(same(&out, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_in_s3_survives_half_its_requests_failing() {
    let f = Fixture::new().await;
    f.init_s3_repo("flaky-backups", "r").await;
    let img = f.path("f.img");
    images::mixed_image(&img, 40, 78);
    // S3 answers SlowDown or InternalError to half the requests.
    f.account.faults(r#"{"s3_rate": 0.5}"#);
    let b = f
        .copy(&file(&img), "repo:s3://flaky-backups/r", Some("v"))
        .await;
    let out = f.path("out.img");
    let restored = match &b {
        Ok(b) => f
            .copy(
                &format!("repo:s3://flaky-backups/r#{}", b.point.clone().unwrap()),
                &file(&out),
                None,
            )
            .await
            .map(|_| ()),
        Err(_) => Ok(()),
    };
    let counters = f.account.counters();
    f.account.reset_faults();
    b.unwrap();
    restored.unwrap();
    assert!(same(&out, &img));
    assert!(
        counters["s3_faults"].as_u64().unwrap_or(0) >= 5,
        "faults were injected: {counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_in_s3_works_like_a_local_one() {
    let f = Fixture::new().await;
    let s3 = f.account.s3();
    let url = f.init_s3_repo("skiff-backups", "team/a").await;
    let img = f.path("s.img");
    images::mixed_image(&img, 40, 77);
    let b1 = f
        .copy(&file(&img), "repo:s3://skiff-backups/team/a", Some("v"))
        .await
        .unwrap();
    images::write_block(&img, 7, &images::random_block(123));
    let b2 = f
        .copy(&file(&img), "repo:s3://skiff-backups/team/a", Some("v"))
        .await
        .unwrap();
    assert_eq!(b2.parent, b1.point);
    assert!(b2.blocks_new <= 1, "{b2:?}");

    let out = f.path("out.img");
    f.restore_file(
        &format!("repo:s3://skiff-backups/team/a#{}", b2.point.unwrap()),
        &out,
    )
    .await;
    assert!(same(&out, &img));

    // Objects live under the prefix in the documented layout, and none holds plaintext.
    let listed = s3
        .list_objects_v2()
        .bucket("skiff-backups")
        .prefix("team/a/")
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert!(keys.contains(&"team/a/config".to_string()), "{keys:?}");
    for prefix in [
        "team/a/keys/",
        "team/a/data/",
        "team/a/index/",
        "team/a/points/",
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(prefix)),
            "{prefix} in {keys:?}"
        );
    }
    let sample = images::read_block(&img, 7)[4096..4128].to_vec();
    for k in &keys {
        let body = s3
            .get_object()
            .bucket("skiff-backups")
            .key(k)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        assert!(
            !body.windows(sample.len()).any(|w| w == sample.as_slice()),
            "{k} holds plaintext"
        );
    }

    // One writer at a time: a held lease (If-None-Match on S3) refuses a second.
    let aws = f.account.aws();
    let repo = std::sync::Arc::new(
        Repo::open(
            skiff::repo::backend_for(&url, Some(aws.s3().await)).unwrap(),
            &url.to_string(),
            b"correct horse",
        )
        .await
        .unwrap(),
    );
    let holder = skiff::repo::writer::Writer::start(repo.clone(), "another skiff")
        .await
        .unwrap();
    let err = f
        .copy(&file(&img), "repo:s3://skiff-backups/team/a", Some("v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "locked");
    assert!(
        err.to_string().contains("is locked by another skiff (pid "),
        "{err}"
    );
    holder.release().await.unwrap();
    let report = skiff::repo::check::check(&repo, true).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_can_come_from_an_ssm_secure_string() {
    let f = Fixture::new().await;
    let ssm = aws_sdk_ssm::Client::new(&f.account.sdk());
    ssm.put_parameter()
        .name("/skiff/repo-password")
        .value("correct horse")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let repo = f.init_repo("repo").await;
    let img = f.path("i.img");
    images::mixed_image(&img, 8, 3);
    let aws = f.account.aws();
    let opener = Opener::new(
        PasswordSource::Ssm("/skiff/repo-password".into()),
        Some(aws.clone()),
        fast_settings(),
    );
    let src = opener
        .source(&file(&img).parse().unwrap(), None, None)
        .await
        .unwrap();
    let dst = opener.target(&repo.parse().unwrap(), None).await.unwrap();
    let r = mover::copy(src, dst, &CopyOptions::default(), None)
        .await
        .unwrap();
    assert!(r.point.is_some());

    let wrong = Opener::new(
        PasswordSource::Ssm("/skiff/none".into()),
        Some(aws),
        fast_settings(),
    );
    let err = wrong
        .target(&repo.parse().unwrap(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("ParameterNotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_over_a_lost_pack_reads_the_whole_snapshot() {
    let f = Fixture::new().await;
    let ebs = f.account.ebs();
    let img1 = f.path("v1.img");
    images::sparse_image(&img1, GIB, 43, 0..24);
    let s1 = f.snapshot_of(&img1).await;
    let repo = f.init_repo("repo").await;
    let full = f
        .copy(&format!("ebs:{s1}"), &repo, Some("vol-lost"))
        .await
        .unwrap();
    // The full point's data pack is lost (its block map, in a smaller pack, is not).
    let mut packs = images::files_under(&f.path("repo/data"));
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    std::fs::remove_file(&packs[0]).unwrap();
    let changes = vec![(3u64, images::random_block(8))];
    let s2 = child_snapshot(&ebs, &s1, &changes).await;
    let img2 = f.path("v2.img");
    std::fs::copy(&img1, &img2).unwrap();
    images::write_block(&img2, 3, &changes[0].1);

    // The parent's unchanged blocks are gone with the pack: the incremental
    // reads every block instead of only the changed one, and stores them again.
    let incr = f
        .copy(&format!("ebs:{s2}"), &repo, Some("vol-lost"))
        .await
        .unwrap();
    assert_eq!(incr.parent, full.point);
    assert_eq!(incr.blocks_unchanged, 0, "{incr:?}");
    assert_eq!(
        incr.blocks_read as usize,
        image_blocks(&img2).len(),
        "{incr:?}"
    );
    let out = f.path("out.img");
    f.restore_file(&format!("{repo}#{}", incr.point.unwrap()), &out)
        .await;
    assert!(same(&out, &img2));
}
