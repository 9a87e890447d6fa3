//! Blobs and packs: a blob is a (compressed) plaintext sealed with its type
//! and id as AAD; a pack is sealed blobs back to back, then the sealed header
//! listing them, then the header's length as 4 little-endian bytes, so any
//! pack can be re-indexed from its own tail.

use std::cell::RefCell;

use bytes::Bytes;

use super::backend::Backend;
use super::buf::{self, AlignedBuf};
use super::crypto::{random, Id, Key, OVERHEAD, PREFIX};
use super::error::{RepoError, Result};
use super::format::{self, BlobKind, Entry, IndexedPack, FLAG_ZSTD};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A sealed blob ready to be packed.
pub struct SealedBlob {
    pub kind: BlobKind,
    pub id: Id,
    pub flags: u8,
    pub raw_len: u32,
    /// The sealed bytes are `bytes[start..]`.
    pub bytes: AlignedBuf,
    pub start: usize,
}

impl SealedBlob {
    pub fn sealed(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

fn buffer_for(len: usize) -> AlignedBuf {
    if len <= buf::BLOCK_BUF {
        buf::block_buf()
    } else {
        AlignedBuf::with_capacity(len)
    }
}

/// `plain` compressed with zstd at `level` into a new buffer, at
/// `[PREFIX..PREFIX + n]` with room to seal it; None when that does not
/// shrink it (or `level` is 0).
fn compress(plain: &[u8], level: i32) -> Option<(AlignedBuf, usize)> {
    if level == 0 || plain.len() < 2 || incompressible(plain, level) {
        return None;
    }
    let mut out = buffer_for(plain.len() + OVERHEAD);
    // Room for one byte less than the plaintext: zstd fails unless it shrinks it.
    let dst = &mut out.spare()[PREFIX..PREFIX + plain.len() - 1];
    let n = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut()
            .and_then(|(_, z)| z.compress_to_buffer(plain, dst).ok())
    })?;
    Some((out, n))
}

/// Bytes of each sample `incompressible` tries.
const SAMPLE: usize = 4096;

/// Whether a large plaintext looks like data zstd cannot shrink (already
/// compressed or encrypted): three samples, from its start, middle and end,
/// compress by less than 2 %. Costs about 1/40 of compressing a 512 KiB
/// block, and saves all of it for such blocks — a large share of real
/// volumes and of the benchmark image.
fn incompressible(plain: &[u8], level: i32) -> bool {
    if plain.len() < 32 * SAMPLE {
        return false;
    }
    let mid = plain.len() / 2 - SAMPLE / 2;
    let end = plain.len() - SAMPLE;
    let mut dst = [0u8; SAMPLE];
    [0, mid, end].iter().all(|&at| {
        let sample = &plain[at..at + SAMPLE];
        let n = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            c.as_mut()
                .and_then(|(_, z)| z.compress_to_buffer(sample, &mut dst[..]).ok())
        });
        // No output (it did not fit) means it did not shrink at all.
        n.is_none_or(|n| n * 100 >= SAMPLE * 98)
    })
}

fn sealed(
    key: &Key,
    kind: BlobKind,
    id: Id,
    mut buf: AlignedBuf,
    start: usize,
    n: usize,
    flags: u8,
    raw_len: usize,
) -> SealedBlob {
    let len = key.seal_slice(&Entry::aad(kind, &id), &mut buf.spare()[start..], n);
    buf.set_len(start + len);
    SealedBlob {
        kind,
        id,
        flags,
        raw_len: raw_len as u32,
        bytes: buf,
        start,
    }
}

/// Compresses `plain` with zstd at `level` (kept only if it shrinks the
/// blob; level 0 turns compression off) and seals it. CPU work: call it from
/// a worker thread; compression contexts are reused per thread.
pub fn seal_blob(key: &Key, kind: BlobKind, id: Id, plain: &[u8], level: i32) -> SealedBlob {
    match compress(plain, level) {
        Some((out, n)) => sealed(key, kind, id, out, 0, n, FLAG_ZSTD, plain.len()),
        None => {
            let mut out = buffer_for(plain.len() + OVERHEAD);
            out.spare()[PREFIX..PREFIX + plain.len()].copy_from_slice(plain);
            sealed(key, kind, id, out, 0, plain.len(), 0, plain.len())
        }
    }
}

/// `seal_blob` for a data block held at `buf[at..]`, with room for the
/// nonce in front and the tag after it: compressed into a new buffer when
/// zstd shrinks it, else sealed where it lies — a random block (a quarter
/// of a typical volume) is not copied (measured: copies were 12 % of a
/// full backup's CPU).
pub fn seal_block_in_place(
    key: &Key,
    id: Id,
    buf: AlignedBuf,
    at: usize,
    level: i32,
) -> SealedBlob {
    let n = buf.len() - at;
    assert!(
        at >= PREFIX && buf.capacity() >= buf.len() + super::crypto::TAG_LEN,
        "no room to seal in place"
    );
    match compress(&buf[at..], level) {
        Some((out, c)) => sealed(key, BlobKind::Data, id, out, 0, c, FLAG_ZSTD, n),
        None => sealed(key, BlobKind::Data, id, buf, at - PREFIX, n, 0, n),
    }
}

/// Where a sealed blob is placed in a buffer before it is opened, so that its
/// plaintext (after the 12-byte nonce) starts on a page boundary.
pub const OPEN_AT: usize = buf::ALIGN - PREFIX;

/// Opens the sealed blob at `buf[OPEN_AT..OPEN_AT + entry.length]` and undoes
/// its compression; fails if it does not authenticate (corrupt, tampered, or
/// not the blob this id names). The plaintext comes back page-aligned.
pub fn open_blob_in(
    key: &Key,
    entry: &Entry,
    mut buf: AlignedBuf,
) -> std::result::Result<Bytes, String> {
    entry.check_size()?;
    let len = entry.length as usize;
    if OPEN_AT + len > buf.capacity() {
        return Err(format!(
            "a sealed blob of {len} bytes does not fit the buffer"
        ));
    }
    let range = key
        .open_in_place(
            &Entry::aad(entry.kind, &entry.id),
            &mut buf.spare()[OPEN_AT..OPEN_AT + len],
        )
        .map_err(|_| "the blob does not authenticate (corrupt or tampered with)".to_string())?;
    let (start, end) = (OPEN_AT + range.start, OPEN_AT + range.end);
    let raw = entry.raw_len as usize;
    if entry.flags & FLAG_ZSTD == 0 {
        if end - start != raw {
            return Err(format!("expected {raw} bytes, found {}", end - start));
        }
        buf.set_len(end);
        return Ok(buf.into_bytes().slice(start..end));
    }
    let mut out = buffer_for(raw);
    buf.set_len(end);
    let n = DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut()
                .ok_or_else(|| std::io::Error::other("no zstd context"))
                .and_then(|d| d.decompress_to_buffer(&buf[start..end], &mut out.spare()[..raw]))
        })
        .map_err(|e| format!("decompression failed: {e}"))?;
    if n != raw {
        return Err(format!("expected {raw} bytes, decompressed {n}"));
    }
    out.set_len(raw);
    Ok(out.into_bytes())
}

/// Opens a sealed blob given as a slice (copies it into a buffer first).
pub fn open_blob(key: &Key, entry: &Entry, sealed: &[u8]) -> std::result::Result<Bytes, String> {
    let mut b = buffer_for(OPEN_AT + sealed.len());
    b.set_len(OPEN_AT);
    b.extend_from_slice(sealed);
    open_blob_in(key, entry, b)
}

/// The name of a pack in the store: `data/<first two hex digits>/<hex id>`.
pub fn pack_name(pack: &Id) -> String {
    let h = hex::encode(pack);
    format!("data/{}/{h}", &h[..2])
}

/// The pack id a `data/…` name stands for, if it is one.
pub fn pack_id_of(name: &str) -> Option<Id> {
    let h = name.rsplit('/').next()?;
    let mut id = [0u8; 32];
    hex::decode_to_slice(h, &mut id).ok()?;
    (pack_name(&id) == name).then_some(id)
}

/// Blobs collected into one pack, in a page-aligned buffer (written with
/// O_DIRECT to local repositories).
pub struct PackBuilder {
    buf: AlignedBuf,
    entries: Vec<Entry>,
}

impl PackBuilder {
    /// A pack holding up to `capacity` bytes, header included.
    pub fn new(capacity: usize) -> PackBuilder {
        PackBuilder {
            buf: buf::pack_buf(capacity),
            entries: Vec::new(),
        }
    }

    /// Whether a blob of `len` sealed bytes still fits, with room for the header.
    pub fn fits(&self, len: usize) -> bool {
        let header = 12 + (self.entries.len() + 1) * format::ENTRY_LEN + OVERHEAD + 4;
        self.buf.len() + len + header <= self.buf.capacity()
    }

    pub fn add(&mut self, blob: &SealedBlob) {
        self.add_raw(blob.kind, blob.id, blob.flags, blob.raw_len, blob.sealed());
    }

    pub fn add_raw(&mut self, kind: BlobKind, id: Id, flags: u8, raw_len: u32, sealed: &[u8]) {
        self.entries.push(Entry {
            kind,
            flags,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_len,
            id,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and its length; names the pack with a random id.
    pub fn finish(mut self, key: &Key) -> (AlignedBuf, IndexedPack) {
        let pack: Id = random();
        let header = key.seal(
            &format::pack_header_aad(&pack),
            &format::encode_pack_header(&self.entries),
        );
        self.buf.extend_from_slice(&header);
        self.buf
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        let size = self.buf.len() as u64;
        (
            self.buf,
            IndexedPack {
                pack,
                size,
                entries: self.entries,
            },
        )
    }
}

/// No pack's header is longer (a 32 MiB pack of the smallest possible blobs
/// would need about 53 MiB): a longer one is damage, and is not read.
const MAX_HEADER: u64 = 64 << 20;

/// How much of a pack's tail to fetch at first: headers of ~32 MiB packs are
/// a few KiB, so one request usually gets all of it.
const TAIL_GUESS: u64 = 64 * 1024;

/// Reads a pack's header from its tail and checks that every entry lies
/// inside the pack; `size` is the pack's size as listed by the store.
pub async fn read_header(
    backend: &Backend,
    key: &Key,
    name: &str,
    size: u64,
) -> Result<IndexedPack> {
    let pack = pack_id_of(name)
        .ok_or_else(|| RepoError::corrupt("repo.read_pack", name, "not a pack name"))?;
    let bad = |m: String| RepoError::corrupt("repo.read_pack", format!("pack {name}"), m);
    if size < 4 + crate::repo::crypto::OVERHEAD as u64 {
        return Err(bad(format!(
            "only {size} bytes: too short to hold a header"
        )));
    }
    let first = TAIL_GUESS.min(size);
    let tail = backend.get_range(name, size - first, first).await?;
    let hlen = u64::from(u32::from_le_bytes(
        tail[tail.len() - 4..].try_into().unwrap(),
    ));
    if hlen + 4 > size {
        return Err(bad(format!(
            "header length {hlen} exceeds the pack's {size} bytes"
        )));
    }
    if hlen > MAX_HEADER {
        return Err(bad(format!(
            "header length {hlen} is more than any pack's header ({MAX_HEADER} bytes)"
        )));
    }
    let sealed: Vec<u8> = if hlen + 4 <= first {
        tail[(first - 4 - hlen) as usize..(first - 4) as usize].to_vec()
    } else {
        backend
            .get_range(name, size - 4 - hlen, hlen)
            .await?
            .to_vec()
    };
    let plain = key
        .open(&format::pack_header_aad(&pack), &sealed)
        .map_err(|_| bad("the header does not authenticate (corrupt or tampered with)".into()))?;
    let entries = format::decode_pack_header(&plain).map_err(bad)?;
    let data_end = size - 4 - hlen;
    for e in &entries {
        if u64::from(e.offset) + u64::from(e.length) > data_end {
            return Err(bad(format!(
                "blob {} lies outside the pack",
                hex::encode(e.id)
            )));
        }
    }
    Ok(IndexedPack {
        pack,
        size,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::crypto::sha256;

    #[test]
    fn random_blocks_skip_compression_and_compressible_ones_do_not() {
        let random: Vec<u8> = (0..512 * 1024).map(|_| rand::random::<u8>()).collect();
        assert!(incompressible(&random, -3));
        assert!(compress(&random, -3).is_none());
        // Text with random bytes in the middle still gets compressed: one
        // compressible sample is enough.
        let mut mixed: Vec<u8> = b"2026-11-29 served in 12 ms\n"
            .iter()
            .copied()
            .cycle()
            .take(512 * 1024)
            .collect();
        mixed[200 * 1024..300 * 1024].copy_from_slice(&random[..100 * 1024]);
        assert!(!incompressible(&mixed, -3));
        let (_, n) = compress(&mixed, -3).expect("compressible");
        assert!(n < 200 * 1024, "{n}");
        // Small plaintexts (metadata) are never sampled.
        assert!(!incompressible(&random[..4096], -3));
    }

    #[test]
    fn blobs_round_trip_compressed_and_raw() {
        let key = Key::generate();
        let text = b"the quick brown fox ".repeat(1000);
        let id = sha256(&text);
        let b = seal_blob(&key, BlobKind::Data, id, &text, 1);
        assert_eq!(b.flags, FLAG_ZSTD);
        assert!(b.bytes.len() < text.len() / 10);
        let e = Entry {
            kind: BlobKind::Data,
            flags: b.flags,
            offset: 0,
            length: b.bytes.len() as u32,
            raw_len: b.raw_len,
            id,
        };
        assert_eq!(open_blob(&key, &e, &b.bytes).unwrap(), text);
        // The id is bound: the same bytes do not open as another blob.
        let other = Entry { id: [1; 32], ..e };
        assert!(open_blob(&key, &other, &b.bytes).is_err());

        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let noise: Vec<u8> = random
            .iter()
            .zip(crate::repo::crypto::random::<32>().iter().cycle())
            .map(|(a, b)| a ^ b)
            .collect();
        let nb = seal_blob(&key, BlobKind::Data, sha256(&noise), &noise, 0);
        assert_eq!(nb.flags, 0);
        let ne = Entry {
            kind: BlobKind::Data,
            flags: 0,
            offset: 0,
            length: nb.bytes.len() as u32,
            raw_len: nb.raw_len,
            id: nb.id,
        };
        assert_eq!(open_blob(&key, &ne, &nb.bytes).unwrap(), noise);
    }

    #[test]
    fn a_raw_length_beyond_any_blob_is_refused_before_it_is_allocated() {
        let key = Key::generate();
        let text = b"the quick brown fox ".repeat(1000);
        let id = sha256(&text);
        let b = seal_blob(&key, BlobKind::Data, id, &text, 1);
        let e = Entry {
            kind: BlobKind::Data,
            flags: b.flags,
            offset: 0,
            length: b.bytes.len() as u32,
            raw_len: u32::MAX,
            id,
        };
        let err = open_blob(&key, &e, &b.bytes).unwrap_err();
        assert!(
            err.contains("is larger than any blob skiff writes"),
            "{err}"
        );
    }

    #[test]
    fn names() {
        let id = [0xab; 32];
        let n = pack_name(&id);
        assert!(n.starts_with("data/ab/abab"));
        assert_eq!(pack_id_of(&n), Some(id));
        assert_eq!(pack_id_of("data/cd/abab"), None);
        assert_eq!(pack_id_of("data/ab/.tmp-1"), None);
    }

    #[tokio::test]
    async fn pack_header_from_tail_and_corruption() {
        let key = Key::generate();
        let backend = Backend::memory();
        let mut pb = PackBuilder::new(1 << 20);
        for i in 0..3u8 {
            let plain = vec![i; 1000];
            pb.add(&seal_blob(&key, BlobKind::Data, sha256(&plain), &plain, 1));
        }
        let (bytes, indexed) = pb.finish(&key);
        let name = pack_name(&indexed.pack);
        let len = bytes.len();
        backend.put_pack(&name, bytes).await.unwrap();
        let read = read_header(&backend, &key, &name, len as u64)
            .await
            .unwrap();
        assert_eq!(read, indexed);
        backend.tamper(&name, len - 10);
        let err = read_header(&backend, &key, &name, len as u64)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");

        // A junk file with a pack's name claiming a huge header: refused unread.
        let hlen = MAX_HEADER + 1;
        let mut junk = vec![0u8; hlen as usize + 8];
        let n = junk.len();
        junk[n - 4..].copy_from_slice(&(hlen as u32).to_le_bytes());
        let name = pack_name(&[7; 32]);
        backend.put(&name, Bytes::from(junk)).await.unwrap();
        let err = read_header(&backend, &key, &name, n as u64)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is more than any pack's header"),
            "{err}"
        );
    }
}
