//! The repository's stored formats, byte by byte (docs/repository-format.md
//! describes the same): pack headers, index files, block-map nodes, and the
//! JSON documents (config, key files, restore points).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::crypto::{Id, OVERHEAD, ZERO_ID};

pub const VERSION: u32 = 1;

/// EBS's block size, and the repository's.
pub const BLOCK_SIZE: u32 = 512 * 1024;

/// Entries per block-map node: a leaf maps 4096 blocks (2 GiB of volume).
pub const FANOUT: usize = 4096;

const PACK_HEADER_MAGIC: &[u8; 4] = b"SKPH";
const INDEX_MAGIC: &[u8; 4] = b"SKIX";
const NODE_MAGIC: &[u8; 4] = b"SKND";

/// Size of one blob entry in pack headers and index files.
pub const ENTRY_LEN: usize = 48;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    /// A 512 KiB volume block; its id is the keyed BLAKE3 hash of its plaintext.
    Data = 0,
    /// A block-map node; its id is the SHA-256 of its encoded plaintext.
    Node = 1,
}

impl BlobKind {
    fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Node),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Node => "node",
        }
    }
}

/// Blob flag: the plaintext was zstd-compressed before sealing.
pub const FLAG_ZSTD: u8 = 1;

/// Where one blob lives inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: BlobKind,
    pub flags: u8,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Sealed length (nonce + ciphertext + tag).
    pub length: u32,
    /// Length of the plaintext before compression.
    pub raw_len: u32,
    pub id: Id,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        out.push(self.flags);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.id);
    }

    fn decode(b: &[u8]) -> Result<Entry, String> {
        let kind = BlobKind::from_u8(b[0]).ok_or_else(|| format!("unknown blob type {}", b[0]))?;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let e = Entry {
            kind,
            flags: b[1],
            offset: u32_at(4),
            length: u32_at(8),
            raw_len: u32_at(12),
            id: b[16..48].try_into().unwrap(),
        };
        e.check_size()?;
        Ok(e)
    }

    /// Refuses sizes no blob of its kind has: reading it would allocate
    /// what the entry says (up to 4 GiB) before finding out.
    pub fn check_size(&self) -> Result<(), String> {
        let max = max_raw_len(self.kind);
        // Compression is kept only when it shrinks a blob.
        if self.raw_len > max || self.length as usize > max as usize + OVERHEAD {
            return Err(format!(
                "a {} blob of {} bytes ({} sealed) is larger than any blob skiff writes ({max})",
                self.kind.as_str(),
                self.raw_len,
                self.length
            ));
        }
        Ok(())
    }

    /// The AAD a blob is sealed with: its type and id, so a blob cannot be
    /// moved to answer for another id without failing authentication.
    pub fn aad(kind: BlobKind, id: &Id) -> [u8; 33] {
        let mut a = [0u8; 33];
        a[0] = kind as u8;
        a[1..].copy_from_slice(id);
        a
    }
}

/// The largest plaintext a blob of `kind` holds: a block, or a full node.
pub fn max_raw_len(kind: BlobKind) -> u32 {
    match kind {
        BlobKind::Data => BLOCK_SIZE,
        BlobKind::Node => (12 + FANOUT * 32) as u32,
    }
}

fn decode_entries(b: &[u8], count: usize) -> Result<Vec<Entry>, String> {
    if b.len() != count * ENTRY_LEN {
        return Err(format!("expected {count} entries, found {} bytes", b.len()));
    }
    b.chunks_exact(ENTRY_LEN).map(Entry::decode).collect()
}

/// The 12 bytes a pack header, an index file and a node start with: magic,
/// format version, a byte of the kind's own (a node's level), two zero bytes,
/// and the count of what follows; with room for `body` more bytes.
fn preamble(magic: &[u8; 4], own: u8, count: usize, body: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + body);
    out.extend_from_slice(magic);
    out.extend_from_slice(&[VERSION as u8, own, 0, 0]);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out
}

/// Checks a preamble's magic and version; the count it gives.
fn read_preamble(b: &[u8], magic: &[u8; 4], a_what: &str, what: &str) -> Result<usize, String> {
    if b.len() < 12 || &b[..4] != magic {
        return Err(format!("not {a_what}"));
    }
    if u32::from(b[4]) != VERSION {
        return Err(format!("{what} version {} is not supported", b[4]));
    }
    Ok(u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize)
}

/// A pack's header plaintext: magic, version, count, entries.
pub fn encode_pack_header(entries: &[Entry]) -> Vec<u8> {
    let mut out = preamble(
        PACK_HEADER_MAGIC,
        0,
        entries.len(),
        entries.len() * ENTRY_LEN,
    );
    for e in entries {
        e.encode(&mut out);
    }
    out
}

pub fn decode_pack_header(b: &[u8]) -> Result<Vec<Entry>, String> {
    let count = read_preamble(b, PACK_HEADER_MAGIC, "a pack header", "pack header")?;
    decode_entries(&b[12..], count)
}

/// The AAD of a pack header: binds it to the pack's name.
pub fn pack_header_aad(pack: &Id) -> Vec<u8> {
    let mut a = b"skiff pack header ".to_vec();
    a.extend_from_slice(pack);
    a
}

/// One pack's part of an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    pub pack: Id,
    /// The pack's size in bytes, so `check` can compare it with the store.
    pub size: u64,
    pub entries: Vec<Entry>,
}

/// An index file's plaintext (before compression and sealing).
pub fn encode_index(packs: &[IndexedPack]) -> Vec<u8> {
    let n: usize = packs.iter().map(|p| 44 + p.entries.len() * ENTRY_LEN).sum();
    let mut out = preamble(INDEX_MAGIC, 0, packs.len(), n);
    for p in packs {
        out.extend_from_slice(&p.pack);
        out.extend_from_slice(&p.size.to_le_bytes());
        out.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
        for e in &p.entries {
            e.encode(&mut out);
        }
    }
    out
}

pub fn decode_index(b: &[u8]) -> Result<Vec<IndexedPack>, String> {
    let count = read_preamble(b, INDEX_MAGIC, "an index file", "index")?;
    // No more than the bytes can hold: the count is not trusted.
    let mut packs = Vec::with_capacity(count.min((b.len() - 12) / 44));
    let mut at = 12;
    for _ in 0..count {
        if b.len() < at + 44 {
            return Err("index file is truncated".into());
        }
        let pack: Id = b[at..at + 32].try_into().unwrap();
        let size = u64::from_le_bytes(b[at + 32..at + 40].try_into().unwrap());
        let n = u32::from_le_bytes(b[at + 40..at + 44].try_into().unwrap()) as usize;
        at += 44;
        let end = at + n * ENTRY_LEN;
        if b.len() < end {
            return Err("index file is truncated".into());
        }
        packs.push(IndexedPack {
            pack,
            size,
            entries: decode_entries(&b[at..end], n)?,
        });
        at = end;
    }
    if at != b.len() {
        return Err("index file has trailing bytes".into());
    }
    Ok(packs)
}

/// A block-map node: `level` 0 maps blocks to data-blob ids, level n > 0 maps
/// to level n-1 node ids; [`ZERO_ID`] stands for an all-zero block or subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub level: u8,
    pub entries: Vec<Id>,
}

impl Node {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = preamble(
            NODE_MAGIC,
            self.level,
            self.entries.len(),
            self.entries.len() * 32,
        );
        for e in &self.entries {
            out.extend_from_slice(e);
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Node, String> {
        let count = read_preamble(b, NODE_MAGIC, "a block-map node", "node")?;
        if count > FANOUT || b.len() != 12 + count * 32 {
            return Err("block-map node has a bad length".into());
        }
        Ok(Node {
            level: b[5],
            entries: b[12..]
                .chunks_exact(32)
                .map(|c| c.try_into().unwrap())
                .collect(),
        })
    }

    pub fn is_all_zero(&self) -> bool {
        self.entries.iter().all(|e| *e == ZERO_ID)
    }
}

/// `config`: what every reader needs to interpret the repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub version: u32,
    /// Random, hex; names the repository in leases and messages.
    pub id: String,
    pub block_size: u32,
    pub fanout: u32,
    /// How data blobs are named: "blake3-keyed" (node blobs: SHA-256 of their encoding).
    pub id_hash: String,
    pub compression: String,
    pub created: String,
    /// S3 storage class of data packs (archive repositories: GLACIER,
    /// DEEP_ARCHIVE…); metadata stays in STANDARD so it reads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl RepoConfig {
    /// Whether data packs sit in a tier that must be restored before
    /// reading (GLACIER_IR and the STANDARD family read at once).
    pub fn data_archived(&self) -> bool {
        matches!(
            self.storage_class.as_deref(),
            Some("GLACIER" | "DEEP_ARCHIVE" | "INTELLIGENT_TIERING")
        )
    }
}

/// `keys/<id>`: the master key, wrapped by a key derived from one password.
/// The only object stored in the clear; it holds nothing but the wrapped key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub kdf: String,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// base64
    pub salt: String,
    /// base64 of the sealed 32-byte master key.
    pub key: String,
    pub created: String,
    /// Hex SHA-256 of the fields above that opening uses ([`KeyFile::checksum`]),
    /// so a damaged file is told from a wrong password. It detects damage,
    /// not tampering: the AEAD and the cost bounds stand against that.
    /// Absent in key files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

impl KeyFile {
    pub fn checksum(&self) -> String {
        let canonical = format!(
            "{}:{}:{}:{}:{}:{}",
            self.kdf, self.m_cost, self.t_cost, self.p_cost, self.salt, self.key
        );
        hex::encode(super::crypto::sha256(canonical.as_bytes()))
    }
}

/// What a copy moved, recorded in each point.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PointStats {
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub blocks_new: u64,
    pub blocks_dedup: u64,
    pub blocks_zero: u64,
    /// Blocks taken unchanged from the parent without being read.
    pub blocks_unchanged: u64,
    pub seconds: f64,
}

/// `points/<id>`: a restore point. It references only the root of its block
/// map, so an incremental point shares every unchanged node with its parent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Point {
    pub version: u32,
    pub id: String,
    /// The protected volume's name (a volume id, a path…): retention groups by it.
    pub volume: String,
    /// Volume size in bytes.
    pub size: u64,
    pub block_size: u32,
    /// RFC 3339 UTC.
    pub time: String,
    pub parent: Option<String>,
    /// Where the data came from: `ebs:snap-…`, `file:/path`, `repo:…#id`.
    pub source: String,
    /// The EBS snapshot read, when the source was one (for ListChangedBlocks).
    pub snapshot: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Hex id of the block map's root node, or the zero id for an all-zero volume.
    pub root: String,
    /// Levels of nodes: 1 when the root is a leaf.
    pub depth: u8,
    pub host: String,
    pub stats: PointStats,
}

/// Levels a block map for `blocks` blocks needs (at least one).
pub fn depth_for(blocks: u64) -> u8 {
    let mut depth = 1u8;
    let mut span = FANOUT as u64;
    while span < blocks {
        span = span.saturating_mul(FANOUT as u64);
        depth += 1;
    }
    depth
}

pub fn blocks_for(size: u64) -> u64 {
    size.div_ceil(u64::from(BLOCK_SIZE))
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8) -> Entry {
        Entry {
            kind: if i % 2 == 0 {
                BlobKind::Data
            } else {
                BlobKind::Node
            },
            flags: FLAG_ZSTD,
            offset: u32::from(i) * 1000,
            length: 999,
            raw_len: 4096,
            id: [i; 32],
        }
    }

    #[test]
    fn pack_header_round_trip() {
        let entries: Vec<Entry> = (0..5).map(entry).collect();
        let b = encode_pack_header(&entries);
        assert_eq!(b.len(), 12 + 5 * ENTRY_LEN);
        assert_eq!(decode_pack_header(&b).unwrap(), entries);
        assert!(decode_pack_header(&b[..b.len() - 1]).is_err());
        let mut bad = b.clone();
        bad[12] = 9;
        assert_eq!(decode_pack_header(&bad).unwrap_err(), "unknown blob type 9");
    }

    #[test]
    fn index_round_trip() {
        let packs = vec![
            IndexedPack {
                pack: [7; 32],
                size: 1234,
                entries: (0..3).map(entry).collect(),
            },
            IndexedPack {
                pack: [8; 32],
                size: 99,
                entries: vec![],
            },
        ];
        let b = encode_index(&packs);
        assert_eq!(decode_index(&b).unwrap(), packs);
        assert!(decode_index(&b[..b.len() - 3]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode_index(&extra).is_err());
    }

    #[test]
    fn entries_larger_than_any_blob_are_refused() {
        let index = |e: Entry| {
            encode_index(&[IndexedPack {
                pack: [7; 32],
                size: 1 << 30,
                entries: vec![e],
            }])
        };
        let node_max = (12 + FANOUT * 32) as u32;
        let largest = [(BlobKind::Data, BLOCK_SIZE), (BlobKind::Node, node_max)];
        for (kind, max) in largest {
            let e = Entry {
                kind,
                raw_len: max,
                length: max + OVERHEAD as u32,
                ..entry(0)
            };
            assert_eq!(decode_index(&index(e)).unwrap()[0].entries, vec![e]);
            for bad in [
                Entry {
                    raw_len: max + 1,
                    ..e
                },
                Entry {
                    length: max + OVERHEAD as u32 + 1,
                    ..e
                },
                Entry {
                    raw_len: u32::MAX,
                    ..e
                },
            ] {
                let err = decode_index(&index(bad)).unwrap_err();
                assert!(
                    err.contains("is larger than any blob skiff writes"),
                    "{err}"
                );
                let header = encode_pack_header(&[bad]);
                assert_eq!(decode_pack_header(&header).unwrap_err(), err);
            }
        }
    }

    #[test]
    fn node_round_trip() {
        let n = Node {
            level: 2,
            entries: vec![[1; 32], ZERO_ID, [3; 32]],
        };
        assert_eq!(Node::decode(&n.encode()).unwrap(), n);
        assert!(!n.is_all_zero());
        assert!(Node {
            level: 0,
            entries: vec![ZERO_ID; 4]
        }
        .is_all_zero());
        assert!(Node::decode(b"SKND\x02\0\0\0\0\0\0\0").is_err());
    }

    #[test]
    fn depths() {
        assert_eq!(depth_for(1), 1);
        assert_eq!(depth_for(4096), 1);
        assert_eq!(depth_for(4097), 2);
        assert_eq!(depth_for(4096 * 4096), 2);
        assert_eq!(depth_for(4096 * 4096 + 1), 3);
        assert_eq!(blocks_for(1), 1);
        assert_eq!(blocks_for(u64::from(BLOCK_SIZE) * 3), 3);
    }
}
