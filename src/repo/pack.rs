//! Blobs and packs: a blob is a (compressed) plaintext sealed with its type
//! and id as AAD; a pack is sealed blobs back to back, then the sealed header
//! listing them, then the header's length as 4 little-endian bytes, so any
//! pack can be re-indexed from its own tail.

use std::cell::RefCell;
use std::io::Cursor;

use bytes::Bytes;

use super::backend::Backend;
use super::crypto::{random, Id, Key, PREFIX, TAG_LEN};
use super::error::{RepoError, Result};
use super::format::{self, BlobKind, Entry, IndexedPack, FLAG_ZSTD};

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A sealed blob ready to be packed.
#[derive(Debug)]
pub struct SealedBlob {
    pub kind: BlobKind,
    pub id: Id,
    pub flags: u8,
    pub raw_len: u32,
    pub bytes: Vec<u8>,
}

/// Compresses `plain` with zstd at `level` (kept only if it shrinks the
/// blob; level 0 turns compression off) and seals it. CPU work: call it from
/// a worker thread; compression contexts are reused per thread.
pub fn seal_blob(key: &Key, kind: BlobKind, id: Id, plain: &[u8], level: i32) -> SealedBlob {
    let mut buf: Vec<u8> = Vec::with_capacity(PREFIX + plain.len() + TAG_LEN);
    buf.resize(PREFIX, 0);
    let mut flags = 0;
    if level != 0 {
        let mut cursor = Cursor::new(buf);
        cursor.set_position(PREFIX as u64);
        let compressed = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(l, _)| *l != level) {
                *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
            }
            c.as_mut()
                .and_then(|(_, z)| z.compress_to_buffer(plain, &mut cursor).ok())
        });
        buf = cursor.into_inner();
        match compressed {
            Some(n) if n < plain.len() => flags = FLAG_ZSTD,
            _ => buf.truncate(PREFIX),
        }
    }
    if flags == 0 {
        buf.extend_from_slice(plain);
    }
    key.seal_in_place(&Entry::aad(kind, &id), &mut buf);
    SealedBlob {
        kind,
        id,
        flags,
        raw_len: plain.len() as u32,
        bytes: buf,
    }
}

/// Opens a sealed blob and undoes its compression; fails if it does not
/// authenticate (corrupt, tampered, or not the blob this id names).
pub fn open_blob(
    key: &Key,
    entry: &Entry,
    mut sealed: Vec<u8>,
) -> std::result::Result<Vec<u8>, String> {
    let range = key
        .open_in_place(&Entry::aad(entry.kind, &entry.id), &mut sealed)
        .map_err(|_| "the blob does not authenticate (corrupt or tampered with)".to_string())?;
    if entry.flags & FLAG_ZSTD == 0 {
        if range.len() != entry.raw_len as usize {
            return Err(format!(
                "expected {} bytes, found {}",
                entry.raw_len,
                range.len()
            ));
        }
        sealed.truncate(range.end);
        sealed.drain(..range.start);
        return Ok(sealed);
    }
    let mut out = Vec::with_capacity(entry.raw_len as usize);
    let n = DECOMPRESSOR
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut()
                .ok_or_else(|| std::io::Error::other("no zstd context"))
                .and_then(|d| d.decompress_to_buffer(&sealed[range.clone()], &mut out))
        })
        .map_err(|e| format!("decompression failed: {e}"))?;
    if n != entry.raw_len as usize {
        return Err(format!(
            "expected {} bytes, decompressed {n}",
            entry.raw_len
        ));
    }
    Ok(out)
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

/// Blobs collected into one pack.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

impl PackBuilder {
    pub fn new(capacity: usize) -> PackBuilder {
        PackBuilder {
            buf: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, blob: &SealedBlob) {
        self.entries.push(Entry {
            kind: blob.kind,
            flags: blob.flags,
            offset: self.buf.len() as u32,
            length: blob.bytes.len() as u32,
            raw_len: blob.raw_len,
            id: blob.id,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the sealed header and its length; names the pack with a random id.
    pub fn finish(mut self, key: &Key) -> (Bytes, IndexedPack) {
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
            Bytes::from(self.buf),
            IndexedPack {
                pack,
                size,
                entries: self.entries,
            },
        )
    }
}

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
        assert_eq!(open_blob(&key, &e, b.bytes.clone()).unwrap(), text);
        // The id is bound: the same bytes do not open as another blob.
        let other = Entry { id: [1; 32], ..e };
        assert!(open_blob(&key, &other, b.bytes.clone()).is_err());

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
        assert_eq!(open_blob(&key, &ne, nb.bytes).unwrap(), noise);
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
        backend.put(&name, bytes.clone()).await.unwrap();
        let read = read_header(&backend, &key, &name, bytes.len() as u64)
            .await
            .unwrap();
        assert_eq!(read, indexed);
        backend.tamper(&name, bytes.len() - 10);
        let err = read_header(&backend, &key, &name, bytes.len() as u64)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not authenticate"), "{err}");
    }
}
