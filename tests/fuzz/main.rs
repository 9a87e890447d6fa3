//! Fuzz targets for every parser of repository data and for the control
//! socket, run on stable Rust for a bounded time (`SKIFF_FUZZ_SECONDS` per
//! target, default 10; `tools/fuzz` runs them longer). The seeds come from a
//! real repository made here: init, backups of a small image and of a large
//! sparse one (a two-level block map), an incremental, forget and prune.
//! Regression inputs in `fuzz/corpus/<target>/` are replayed first. The
//! partition-table target starts from small GPT and MBR images sfdisk writes.

mod engine;
#[path = "../it/images.rs"]
mod images;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use engine::{fuzz, Target};
use skiff::mover::{self, CopyOptions, ParentChoice, Source};
use skiff::repo::forget::KeepOptions;
use skiff::repo::fuzzing::Context;
use skiff::repo::prune::PruneOptions;
use skiff::repo::{Backend, Repo};
use skiff::serve::fuzzing::{self as serve_fuzzing, Server};

#[global_allocator]
static ALLOC: engine::Counting = engine::Counting;

const PASSWORD: &[u8] = b"fuzz seed repository";

struct Seeded {
    _dir: tempfile::TempDir,
    ctx: Context,
    seeds: HashMap<&'static str, Vec<Vec<u8>>>,
}

/// A text-like block that compresses well, with a little noise so blocks differ.
fn block(i: u64) -> Vec<u8> {
    let line = format!("block {i} of the fuzz seed image; ");
    let mut b: Vec<u8> = line.bytes().cycle().take(images::BS as usize).collect();
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in b[1000..1512].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    b
}

async fn backup(repo: &Arc<Repo>, image: &Path, volume: &str) {
    let src = Source::File(mover::file::FileSource::open(image).await.unwrap());
    let opts = CopyOptions {
        volume: Some(volume.into()),
        parent: ParentChoice::Auto,
        ..Default::default()
    };
    mover::copy(src, mover::Target::Repo(repo.clone()), &opts, None)
        .await
        .unwrap();
}

/// The seed repository and the inputs made from it.
fn seeded() -> &'static Seeded {
    static S: OnceLock<Seeded> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (ctx, seeds) = rt.block_on(async {
            let at = dir.path().join("repo");
            let url = at.display().to_string();
            skiff::repo::fuzzing::init(Backend::local(&at), &url, PASSWORD)
                .await
                .unwrap();
            let repo = Arc::new(
                Repo::open(Backend::local(&at), &url, PASSWORD)
                    .await
                    .unwrap(),
            );
            // A small image: text-like blocks, a zero block, a repeated block, a partial tail.
            let small = dir.path().join("small.img");
            let f = std::fs::File::create(&small).unwrap();
            for i in [0u64, 1, 2, 4] {
                f.write_all_at(&block(i), i * images::BS).unwrap();
            }
            f.write_all_at(&block(1), 5 * images::BS).unwrap();
            f.write_all_at(&[0x5a; 1000], 6 * images::BS).unwrap();
            backup(&repo, &small, "small").await;
            // An incremental: one block changed.
            f.write_all_at(&block(9), 2 * images::BS).unwrap();
            backup(&repo, &small, "small").await;
            // A sparse volume of 4101 blocks: two leaves under a root.
            let big = dir.path().join("big.img");
            let f = std::fs::File::create(&big).unwrap();
            f.set_len(4100 * images::BS + 4096).unwrap();
            for i in [0u64, 4096] {
                f.write_all_at(&block(i), i * images::BS).unwrap();
            }
            f.write_all_at(&[7; 4096], 4100 * images::BS).unwrap();
            backup(&repo, &big, "big").await;
            let keep = KeepOptions {
                keep_last: 1,
                ..Default::default()
            };
            skiff::repo::forget::forget(&repo, &keep, Some("small"), false)
                .await
                .unwrap();
            let prune = PruneOptions {
                repack_threshold: 0.0,
                ..Default::default()
            };
            skiff::repo::prune::prune(&repo, &prune).await.unwrap();
            // Reopened, as a reader meets it.
            let repo = Arc::new(
                Repo::open(Backend::local(&at), &url, PASSWORD)
                    .await
                    .unwrap(),
            );
            let mut seeds: HashMap<&'static str, Vec<Vec<u8>>> = HashMap::new();
            for (target, input) in skiff::repo::fuzzing::seeds(&repo).await.unwrap() {
                seeds.entry(target).or_default().push(input);
            }
            (Context::of(&repo, PASSWORD), seeds)
        });
        for t in skiff::repo::fuzzing::TARGETS {
            assert!(seeds.contains_key(t), "no seed for {t}: {:?}", seeds.keys());
        }
        Seeded {
            _dir: dir,
            ctx,
            seeds,
        }
    })
}

const REPO_WORDS: &[&str] = &[
    "SKPH",
    "SKIX",
    "SKND",
    "\"version\":",
    "\"id\":",
    "\"size\":",
    "\"depth\":",
    "\"root\":",
    "\"time\":",
    "\"parent\":",
    "\"tags\":",
    "\"stats\":",
    "\"block_size\":",
    "\"fanout\":",
    "\"storage_class\":",
    "\"m_cost\":",
    "\"t_cost\":",
    "\"p_cost\":",
    "\"salt\":",
    "\"key\":",
    "\"check\":",
    "\"kdf\":",
    "\"argon2id\"",
    "\"expires\":",
    "\"pid\":",
    "\"host\":",
    "2026-11-29T23:59:60Z",
    "9999-12-31T23:59:59Z",
    "-262144-01-01T00:00:00Z",
];

fn repo_target(name: &str) {
    let _one = engine::exclusive();
    let s = seeded();
    let run = |input: &[u8]| s.ctx.run(name, input);
    let dict: Vec<&[u8]> = REPO_WORDS.iter().map(|w| w.as_bytes()).collect();
    fuzz(
        Target {
            name,
            run: &run,
            seeds: s.seeds.get(name).cloned().unwrap_or_default(),
            dict,
            limit: Duration::from_secs(2),
        },
        engine::budget(),
    );
}

#[test]
fn config() {
    repo_target("config");
}

#[test]
fn key() {
    repo_target("key");
}

#[test]
fn index() {
    repo_target("index");
}

#[test]
fn point() {
    repo_target("point");
}

#[test]
fn pack() {
    repo_target("pack");
}

#[test]
fn blob() {
    repo_target("blob");
}

#[test]
fn block_map() {
    repo_target("block_map");
}

#[test]
fn lease() {
    repo_target("lease");
}

const CONTROL_WORDS: &[&str] = &[
    "\"op\":",
    "\"status\"",
    "\"policies\"",
    "\"run\"",
    "\"runs\"",
    "\"run_info\"",
    "\"wait\"",
    "\"subscribe\"",
    "\"policy\":",
    "\"limit\":",
    "\"timeout\":",
    "\"fuzz\"",
    "\n",
    "\r\n",
    "\u{2028}",
];

#[test]
fn control_request() {
    let _one = engine::exclusive();
    let dict: Vec<&[u8]> = CONTROL_WORDS.iter().map(|w| w.as_bytes()).collect();
    fuzz(
        Target {
            name: "control_request",
            run: &serve_fuzzing::requests,
            // The same inputs as sessions, without the flag byte.
            seeds: Server::seeds()
                .into_iter()
                .map(|s| s[1..].to_vec())
                .collect(),
            dict,
            limit: Duration::from_secs(2),
        },
        engine::budget(),
    );
}

#[test]
fn control_session() {
    let _one = engine::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).unwrap();
    let run = |input: &[u8]| server.session(input);
    let dict: Vec<&[u8]> = CONTROL_WORDS.iter().map(|w| w.as_bytes()).collect();
    fuzz(
        Target {
            name: "control_session",
            run: &run,
            seeds: Server::seeds(),
            dict,
            limit: serve_fuzzing::SESSION_LIMIT + Duration::from_secs(5),
        },
        engine::budget(),
    );
}

/// A 1 MiB image partitioned by sfdisk, with filesystem magics where mount would look.
fn table_seed(script: &str, magics: &[(u64, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut child = std::process::Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (package fdisk; tools/system.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk: {script}");
    let mut img = std::fs::read(&path).unwrap();
    for (at, m) in magics {
        img[*at as usize..*at as usize + m.len()].copy_from_slice(m);
    }
    img
}

#[test]
fn partition_table() {
    use skiff::flr::disk::{detect_fs, partitions};
    let _one = engine::exclusive();
    let ext = |start: u64| (start + 1080, &[0x53u8, 0xEF][..]);
    let seeds = vec![
        table_seed(
            "label: gpt\nstart=64, size=256, name=\"root\"\nstart=512, size=1024, type=uefi\n",
            &[ext(64 * 512), (512 * 512 + 54, b"FAT16   "), (512 * 512 + 510, &[0x55, 0xAA])],
        ),
        table_seed(
            "label: dos\nt1 : start=64, size=256, type=83\nt2 : start=400, size=1500, type=5\nt5 : start=432, size=300, type=83\nt6 : start=800, size=300, type=82\n",
            &[(432 * 512, b"XFSB"), (800 * 512 + 4086, b"SWAPSPACE2")],
        ),
        table_seed("label: dos\nstart=64, size=1000, type=8e\n", &[(64 * 512 + 512, b"LABELONE")]),
    ];
    let run = |input: &[u8]| -> Result<String, String> {
        let layout = partitions(input).map_err(|e| e.to_string())?;
        let mut out = format!("{:?} {}", layout.table, layout.partitions.len());
        for p in &layout.partitions {
            let fs = detect_fs(input, p.start, p.size).map_err(|e| e.to_string())?;
            out += &format!(" {:?}", fs.map(|f| f.kind));
        }
        Ok(out)
    };
    let dict: Vec<&[u8]> = vec![
        b"EFI PART",
        b"XFSB",
        b"_BHRfS_M",
        b"NTFS    ",
        b"FAT32   ",
        b"SWAPSPACE2",
        b"LABELONE",
        b"LVM2 001",
        &[0x55, 0xAA],
        &[0x53, 0xEF],
        &[0xEE],
        &[0x05],
        &[0xff, 0xff, 0xff, 0xff],
        &[0x00, 0x00, 0x00, 0x80],
    ];
    fuzz(
        Target {
            name: "partition_table",
            run: &run,
            seeds,
            dict,
            limit: Duration::from_secs(2),
        },
        engine::budget(),
    );
}
