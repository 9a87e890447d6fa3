//! Entry points for fuzzers (`tests/fuzz.rs` on stable Rust, `fuzz/` for
//! cargo-fuzz): one per kind of repository data, each taking the bytes of
//! one object and reading them with the code a [`Repo`] reads them with.
//! Nothing here parses: an entry only puts the input where a repository
//! would find it, sealed as the repository seals it, and calls the readers.
//!
//! An encrypted object can be given at each of its layers; the input's
//! first byte picks one (modulo the layers the object has): [`Layer::Stored`]
//! is the object as stored, where a mutation reaches only the framing and
//! the MAC check; [`Layer::Sealed`] is the plaintext under the seal, sealed
//! here with the context's key so the decoders behind authentication see
//! every mutation; [`Layer::Plain`] is, for compressed metadata (index
//! files, points), the plaintext before compression. The input layout of
//! each target is documented on [`Context::run`]; [`seeds`] turns a real
//! repository into inputs of every target.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::crypto::{Id, KdfParams, Key, ZERO_ID};
use super::forget::{self, KeepOptions};
use super::format::{self, BlobKind, Entry, Node, Point, RepoConfig};
use super::lease::{Lease, LEASE_AAD};
use super::open::{read_config, read_key_file, CONFIG_AAD};
use super::pack::{self, PackBuilder};
use super::points::point_aad;
use super::tree::{parse_id, MapReader, TreeBuilder};
use super::{check, index_aad, open_meta, reach, seal_meta, Backend, Repo, RepoError};

/// Every target [`Context::run`] knows.
pub const TARGETS: &[&str] = &[
    "config",
    "key",
    "index",
    "point",
    "pack",
    "blob",
    "block_map",
    "lease",
];

/// What an entry point returns: `Ok` with a short summary of what was read,
/// or the error the repository gave (the expected end of most inputs).
pub type Outcome = Result<String, String>;

/// Which layer of an encrypted object an input stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The object as stored.
    Stored = 0,
    /// The plaintext under the seal.
    Sealed = 1,
    /// The plaintext before compression (compressed metadata only).
    Plain = 2,
}

/// The layer the input's first byte picks among the first `layers`, and the rest.
fn split_layer(input: &[u8], layers: u8) -> (Layer, &[u8]) {
    match input.split_first() {
        None => (Layer::Stored, input),
        Some((b, rest)) => (
            match b % layers {
                0 => Layer::Stored,
                1 => Layer::Sealed,
                _ => Layer::Plain,
            },
            rest,
        ),
    }
}

/// A fixed-size field off the front of the input (zero-padded when short).
fn take<const N: usize>(input: &[u8]) -> ([u8; N], &[u8]) {
    let mut out = [0u8; N];
    let n = N.min(input.len());
    out[..n].copy_from_slice(&input[..n]);
    (out, &input[n..])
}

/// What a check found first (the outcome, for a fuzzer's feedback).
fn first_problem(report: &check::CheckReport) -> &str {
    report
        .problems
        .first()
        .map_or("fine", |p| p.message.as_str())
}

fn msg(e: RepoError) -> String {
    e.to_string()
}

/// A repository's key and config, and a runtime to read with. Each input
/// is read from a fresh in-memory store holding only what the input made.
pub struct Context {
    key: Key,
    config: RepoConfig,
    password: Vec<u8>,
    rt: tokio::runtime::Runtime,
}

/// The master key of every repository made for fuzzing ([`init`]): inputs
/// that hold ciphertext (a pack's blobs, an object as stored) replay in
/// later runs only under the key they were sealed with.
pub const MASTER_KEY: [u8; 32] = *b"skiff fuzzing master key, fixed.";

/// Creates a repository as `Repo::init` does, with [`MASTER_KEY`] as its master key.
pub async fn init(backend: Backend, url: &str, password: &[u8]) -> Result<Repo, RepoError> {
    let key = Key::from_bytes(MASTER_KEY);
    Repo::init_with_key(backend, url, password, KdfParams::MIN, None, key).await
}

/// Key files whose derivation costs at most this many KiB × passes are
/// derived (a seed's key file costs [`KdfParams::MIN`]); costlier ones, up
/// to the bounds `Repo::open` accepts, would only measure Argon2.
const DERIVE_AT_MOST: u64 = 2 * KdfParams::MIN.m_cost as u64;

impl Context {
    /// Reads with `repo`'s key and config; `password` is tried on key files.
    /// `repo` should have been made by [`init`], or its inputs will not replay.
    pub fn of(repo: &Repo, password: &[u8]) -> Context {
        Context {
            key: repo.key().clone(),
            config: repo.config().clone(),
            password: password.to_vec(),
            rt: runtime(),
        }
    }

    /// A context of its own: a new repository in memory (password `fuzz`).
    pub fn standalone() -> Context {
        let rt = runtime();
        let repo = rt
            .block_on(init(Backend::memory(), "fuzz", b"fuzz"))
            .expect("a repository in memory");
        Context {
            key: repo.key().clone(),
            config: repo.config().clone(),
            password: b"fuzz".to_vec(),
            rt,
        }
    }

    fn repo(&self) -> Arc<Repo> {
        Arc::new(Repo::assemble(
            Backend::memory(),
            "fuzz",
            self.key.clone(),
            self.config.clone(),
        ))
    }

    /// Reads `input` as the repository data `target` names ([`TARGETS`]).
    /// Layouts (`layer` is one byte, see [`Layer`]; integers little-endian):
    ///
    /// - `config`: layer (stored, sealed) ‖ bytes — `config`, read as `Repo::open` does.
    /// - `key`: the bytes of a key file (stored in the clear); it is
    ///   checked, and derived and tried with the password when cheap.
    /// - `index`: layer ‖ name (32 bytes) ‖ bytes — `index/<hex name>`,
    ///   loaded into the index, then checked and its first blobs read.
    /// - `point`: layer ‖ id (8 bytes) ‖ bytes — `points/<hex id>`, listed,
    ///   found, its block map opened, retention applied, checked.
    /// - `pack`: layer ‖ pack id (32 bytes) ‖ bytes — stored: the pack;
    ///   sealed: blobs ‖ header plaintext ‖ u32 length of that plaintext
    ///   (sealed here). Indexed from its header, then checked reading every blob.
    /// - `blob`: layer ‖ kind (even: data, odd: node) ‖ flags ‖ u32 raw
    ///   length ‖ id (32 bytes) ‖ bytes — a blob in a pack, read back (and
    ///   decoded, for a node).
    /// - `block_map`: u64 volume size ‖ depth ‖ nodes (at most [`MAX_NODES`]),
    ///   each id (32 bytes) ‖ u32 length ‖ node plaintext — sealed into a pack; a point's root is
    ///   the first node. Read as a restore, an incremental backup, prune and check read it.
    /// - `lease`: layer (stored, sealed) ‖ bytes — the `lease`, met by a writer taking it.
    pub fn run(&self, target: &str, input: &[u8]) -> Outcome {
        match target {
            "config" => self.config(input),
            "key" => self.key_file(input),
            "index" => self.rt.block_on(self.index(input)),
            "point" => self.rt.block_on(self.point(input)),
            "pack" => self.rt.block_on(self.pack(input)),
            "blob" => self.rt.block_on(self.blob(input)),
            "block_map" => self.rt.block_on(self.block_map(input)),
            "lease" => self.rt.block_on(self.lease(input)),
            other => Err(format!("no fuzz target {other:?} (known: {TARGETS:?})")),
        }
    }

    /// The bytes to store for an object sealed with `aad`.
    fn seal(&self, layer: Layer, aad: &[u8], payload: &[u8]) -> Vec<u8> {
        match layer {
            Layer::Stored => payload.to_vec(),
            Layer::Sealed => self.key.seal(aad, payload),
            Layer::Plain => seal_meta(&self.key, aad, payload),
        }
    }

    fn config(&self, input: &[u8]) -> Outcome {
        let (layer, payload) = split_layer(input, 2);
        let sealed = self.seal(layer, CONFIG_AAD, payload);
        let c = read_config(&self.key, &sealed, "fuzz").map_err(msg)?;
        Ok(format!("config read, data archived: {}", c.data_archived()))
    }

    fn key_file(&self, input: &[u8]) -> Outcome {
        let wrapped = read_key_file("keys/fuzz", input).map_err(msg)?;
        let p = wrapped.params;
        if u64::from(p.m_cost) * u64::from(p.t_cost) > DERIVE_AT_MOST || p.p_cost > 4 {
            return Ok("accepted, not derived (costly)".into());
        }
        match self.rt.block_on(wrapped.unwrap(&self.password)) {
            Ok(Some(_)) => Ok("unwrapped".into()),
            Ok(None) => Ok("another password's key".into()),
            Err(e) => Err(msg(e)),
        }
    }

    async fn index(&self, input: &[u8]) -> Outcome {
        let (layer, rest) = split_layer(input, 3);
        let (name, payload) = take::<32>(rest);
        let base = hex::encode(name);
        let repo = self.repo();
        let sealed = self.seal(layer, &index_aad(&base), payload);
        repo.backend()
            .put(&format!("index/{base}"), sealed.into())
            .await
            .map_err(msg)?;
        repo.load_index().await.map_err(msg)?;
        let report = check::check(&repo, false).await.map_err(msg)?;
        // Reading a blob fetches it as the index says (its pack is absent).
        let mut read = Vec::new();
        for p in repo
            .read_index_file(&format!("index/{base}"))
            .await
            .map_err(msg)?
        {
            for e in p.entries.iter().take(4) {
                if let Err(err) = repo.read_blob(e.kind, &e.id).await {
                    read.push(err.to_string());
                }
            }
        }
        let ix = repo.index();
        Ok(format!(
            "{} packs, {} blobs; check: {}; reads: {}",
            ix.pack_count(),
            ix.blob_count(),
            first_problem(&report),
            read.first().map_or("fine", String::as_str)
        ))
    }

    async fn point(&self, input: &[u8]) -> Outcome {
        let (layer, rest) = split_layer(input, 3);
        let (id, payload) = take::<8>(rest);
        let id = hex::encode(id);
        let repo = self.repo();
        let sealed = self.seal(layer, &point_aad(&id), payload);
        repo.backend()
            .put(&format!("points/{id}"), sealed.into())
            .await
            .map_err(msg)?;
        let points = repo.points().await.map_err(msg)?;
        let found = repo.find_point(&id).await.map_err(msg)?;
        let reader = MapReader::new(repo.clone(), &found).map_err(msg)?;
        let keep = KeepOptions {
            keep_last: 1,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: 3,
        };
        let decisions = forget::select(&points, &keep).map_err(msg)?;
        let report = check::check(&repo, false).await.map_err(msg)?;
        Ok(format!(
            "{} leaves, kept {}; check: {}",
            reader.leaves(),
            decisions.iter().filter(|d| d.keep).count(),
            first_problem(&report)
        ))
    }

    async fn pack(&self, input: &[u8]) -> Outcome {
        let (layer, rest) = split_layer(input, 2);
        let (id, payload) = take::<32>(rest);
        let bytes = match layer {
            Layer::Stored => payload.to_vec(),
            _ => {
                let (body, hlen) = match payload.len().checked_sub(4) {
                    Some(n) => (
                        &payload[..n],
                        u32::from_le_bytes(payload[n..].try_into().unwrap()) as usize,
                    ),
                    None => (payload, 0),
                };
                let (blobs, plain) = body.split_at(body.len() - hlen.min(body.len()));
                let header = self.key.seal(&format::pack_header_aad(&id), plain);
                let mut b = blobs.to_vec();
                b.extend_from_slice(&header);
                b.extend_from_slice(&(header.len() as u32).to_le_bytes());
                b
            }
        };
        let repo = self.repo();
        repo.backend()
            .put(&pack::pack_name(&id), bytes.into())
            .await
            .map_err(msg)?;
        repo.load_index().await.map_err(msg)?;
        let report = check::check(&repo, true).await.map_err(msg)?;
        Ok(format!(
            "{} blobs, {} bytes verified; check: {}",
            repo.index().blob_count(),
            report.bytes_verified,
            first_problem(&report)
        ))
    }

    async fn blob(&self, input: &[u8]) -> Outcome {
        let (layer, rest) = split_layer(input, 2);
        let ([kind], rest) = take::<1>(rest);
        let ([flags], rest) = take::<1>(rest);
        let (raw_len, rest) = take::<4>(rest);
        let (id, payload) = take::<32>(rest);
        let kind = if kind % 2 == 0 {
            BlobKind::Data
        } else {
            BlobKind::Node
        };
        let sealed = match layer {
            Layer::Stored => payload.to_vec(),
            _ => self.key.seal(&Entry::aad(kind, &id), payload),
        };
        let repo = self.repo();
        let mut pb = PackBuilder::new(sealed.len() + 4096);
        pb.add_raw(kind, id, flags, u32::from_le_bytes(raw_len), &sealed);
        let (bytes, indexed) = pb.finish(&self.key);
        repo.backend()
            .put_pack(&pack::pack_name(&indexed.pack), bytes)
            .await
            .map_err(msg)?;
        repo.add_to_index(&indexed);
        let plain = repo.read_blob(kind, &id).await.map_err(msg)?;
        if kind == BlobKind::Node {
            let node = Node::decode(&plain)?;
            return Ok(format!("node on level {}", node.level));
        }
        Ok(format!(
            "data, its id {}",
            if repo.block_hasher().id(&plain) == id {
                "matches"
            } else {
                "differs"
            }
        ))
    }

    async fn block_map(&self, input: &[u8]) -> Outcome {
        let (size, rest) = take::<8>(input);
        let ([depth], mut rest) = take::<1>(rest);
        let mut nodes: Vec<(Id, &[u8])> = Vec::new();
        // A seed's map has three nodes; more only slows each input down.
        while rest.len() >= 36 && nodes.len() < MAX_NODES {
            let (id, r) = take::<32>(rest);
            let (len, r) = take::<4>(r);
            let n = (u32::from_le_bytes(len) as usize).min(r.len());
            nodes.push((id, &r[..n]));
            rest = &r[n..];
        }
        let repo = self.repo();
        if !nodes.is_empty() {
            // Sealed one by one, as a writer does: a sealed blob holds a
            // block-sized buffer until it is packed.
            let room = nodes
                .iter()
                .map(|(_, plain)| plain.len() + super::crypto::OVERHEAD + format::ENTRY_LEN)
                .sum::<usize>();
            let mut pb = PackBuilder::new(room + 4096);
            for (id, plain) in &nodes {
                let level = repo.settings.compression_level;
                pb.add(&pack::seal_blob(
                    &self.key,
                    BlobKind::Node,
                    *id,
                    plain,
                    level,
                ));
            }
            let (bytes, indexed) = pb.finish(&self.key);
            repo.backend()
                .put_pack(&pack::pack_name(&indexed.pack), bytes)
                .await
                .map_err(msg)?;
            repo.write_index(std::slice::from_ref(&indexed))
                .await
                .map_err(msg)?;
            repo.add_to_index(&indexed);
        }
        let point = Point {
            version: format::VERSION,
            id: "00000000000000f0".into(),
            volume: "fuzz".into(),
            size: u64::from_le_bytes(size),
            block_size: format::BLOCK_SIZE,
            time: format::now_rfc3339(),
            parent: None,
            source: "fuzz".into(),
            snapshot: None,
            tags: Default::default(),
            root: hex::encode(nodes.first().map_or(ZERO_ID, |n| n.0)),
            depth,
            host: "fuzz".into(),
            stats: Default::default(),
        };
        repo.write_point(&point).await.map_err(msg)?;
        // A restore reads leaves in order; reading a few of them, far apart,
        // reaches every level without walking a huge volume.
        let mut reader = MapReader::new(repo.clone(), &point).map_err(msg)?;
        let leaves = reader.leaves();
        let some: BTreeSet<u64> = [0, 1, leaves / 2, leaves.saturating_sub(1)]
            .into_iter()
            .filter(|n| *n < leaves)
            .collect();
        let mut present = 0;
        for n in some {
            if reader.leaf(n).await.map_err(msg)?.is_some() {
                present += 1;
            }
        }
        // An incremental backup of a volume of (at most) three leaves, with
        // this point as its parent, in which one block changed.
        let blocks = reader.blocks().min(2 * format::FANOUT as u64 + 1);
        let parent = MapReader::new(repo.clone(), &point).map_err(msg)?;
        let mut builder = TreeBuilder::new(blocks, Some(parent));
        if blocks > 0 {
            builder.set(blocks / 2, [7; 32]).await.map_err(msg)?;
        }
        let (root, _) = builder.finish().await.map_err(msg)?;
        let reach = reach::reach(&repo).await.map_err(msg)?;
        let (points, used) = (reach.points.len(), reach.used);
        let report = check::check(&repo, false).await.map_err(msg)?;
        Ok(format!(
            "{present} leaves present, new root {}, {points} point(s) use {} blobs; check: {}",
            if root == ZERO_ID { "zero" } else { "set" },
            used.len(),
            first_problem(&report)
        ))
    }

    async fn lease(&self, input: &[u8]) -> Outcome {
        let (layer, payload) = split_layer(input, 2);
        let sealed = self.seal(layer, LEASE_AAD, payload);
        let repo = self.repo();
        repo.backend()
            .write_lease(Bytes::from(sealed), None)
            .await
            .map_err(msg)?;
        let lease = Lease::acquire(&repo, "fuzz").await.map_err(msg)?;
        lease.release().await.map_err(msg)?;
        Ok("taken over".into())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn with_layer(layer: Layer, parts: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![layer as u8];
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

/// Nodes a `block_map` input may hold; the rest of it is ignored.
pub const MAX_NODES: usize = 64;

/// At most this many blobs of each kind become `blob` seeds.
const BLOB_SEEDS: usize = 4;

/// Inputs for every target, made from the objects of a real repository
/// (`repo` is open; `lease` seeds take and release its lease).
pub async fn seeds(repo: &Arc<Repo>) -> Result<Vec<(&'static str, Vec<u8>)>, RepoError> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let b = repo.backend();
    let key = repo.key();
    let unauthentic = |what: &str| RepoError::corrupt("fuzz.seeds", what, "does not open");

    let config = b.get("config").await?;
    let plain = key
        .open(CONFIG_AAD, &config)
        .map_err(|_| unauthentic("config"))?;
    out.push(("config", with_layer(Layer::Stored, &[&config])));
    out.push(("config", with_layer(Layer::Sealed, &[&plain])));

    for k in b.list("keys").await? {
        out.push(("key", b.get(&k.name).await?.to_vec()));
    }

    // Compressed metadata, at all three layers.
    for (folder, target, aad) in [
        ("index", "index", index_aad as fn(&str) -> Vec<u8>),
        ("points", "point", point_aad),
    ] {
        for l in b.list(folder).await? {
            let base = l.name.rsplit('/').next().unwrap_or_default();
            let Ok(name) = hex::decode(base) else {
                continue;
            };
            let stored = b.get(&l.name).await?;
            let z = key
                .open(&aad(base), &stored)
                .map_err(|_| unauthentic(&l.name))?;
            let plain = open_meta(key, &aad(base), &stored, &l.name, "fuzz.seeds")?;
            out.push((target, with_layer(Layer::Stored, &[&name, &stored])));
            out.push((target, with_layer(Layer::Sealed, &[&name, &z])));
            out.push((target, with_layer(Layer::Plain, &[&name, &plain])));
        }
    }

    let mut blob_seeds = [0usize; 2];
    for l in b.list("data").await? {
        let Some(id) = pack::pack_id_of(&l.name) else {
            continue;
        };
        let bytes = b.get(&l.name).await?;
        let header = pack::read_header(b, key, &l.name, l.size).await?;
        let plain = format::encode_pack_header(&header.entries);
        let data_end = bytes.len() - 4 - (plain.len() + super::crypto::OVERHEAD);
        out.push(("pack", with_layer(Layer::Stored, &[&id, &bytes])));
        let len = (plain.len() as u32).to_le_bytes();
        let sealed_layer = [&id[..], &bytes[..data_end], &plain, &len];
        out.push(("pack", with_layer(Layer::Sealed, &sealed_layer)));
        for e in &header.entries {
            let n = &mut blob_seeds[e.kind as usize];
            if *n >= BLOB_SEEDS {
                continue;
            }
            *n += 1;
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            let inner = key
                .open(&Entry::aad(e.kind, &e.id), sealed)
                .map_err(|_| unauthentic("blob"))?;
            let head = [e.kind as u8, e.flags];
            let raw_len = e.raw_len.to_le_bytes();
            for (layer, body) in [(Layer::Stored, sealed), (Layer::Sealed, &inner[..])] {
                out.push(("blob", with_layer(layer, &[&head, &raw_len, &e.id, body])));
            }
        }
    }

    // Each point's block map: its nodes, root first.
    for p in repo.points().await? {
        let mut seed = p.size.to_le_bytes().to_vec();
        seed.push(p.depth);
        let root = parse_id(&p.root).ok_or_else(|| unauthentic(&p.root))?;
        let mut queue = std::collections::VecDeque::from([root]);
        let mut seen = BTreeSet::new();
        while let Some(id) = queue.pop_front() {
            if id == ZERO_ID || !seen.insert(id) {
                continue;
            }
            let plain = repo.read_blob(BlobKind::Node, &id).await?;
            let node = Node::decode(&plain).map_err(|m| unauthentic(&m))?;
            if node.level > 0 {
                queue.extend(node.entries.iter().copied());
            }
            seed.extend_from_slice(&id);
            seed.extend_from_slice(&(plain.len() as u32).to_le_bytes());
            seed.extend_from_slice(&plain);
        }
        out.push(("block_map", seed));
    }

    let lease = Lease::acquire(repo, "fuzz seeds").await?;
    if let Some((stored, _)) = b.read_lease().await? {
        let plain = key
            .open(LEASE_AAD, &stored)
            .map_err(|_| unauthentic("lease"))?;
        out.push(("lease", with_layer(Layer::Stored, &[&stored])));
        out.push(("lease", with_layer(Layer::Sealed, &[&plain])));
    }
    lease.release().await?;
    Ok(out)
}
