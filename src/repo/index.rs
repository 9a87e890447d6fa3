//! The in-memory index: blob id → pack and place, built from the index files
//! (and from the headers of packs no index file covers yet).

use std::collections::HashMap;

use super::crypto::Id;
use super::format::{BlobKind, Entry, IndexedPack};

/// A blob's place, kept compact: the index holds one per stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    pack: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
    kind: BlobKind,
    flags: u8,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    pack_no: HashMap<Id, u32>,
    blobs: HashMap<Id, Loc>,
}

impl Index {
    /// Adds a pack's blobs; a blob already indexed elsewhere keeps its first place.
    pub fn add(&mut self, p: &IndexedPack) {
        let no = match self.pack_no.get(&p.pack) {
            Some(n) => *n,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push((p.pack, p.size));
                self.pack_no.insert(p.pack, n);
                n
            }
        };
        self.blobs.reserve(p.entries.len());
        for e in &p.entries {
            self.blobs.entry(e.id).or_insert(Loc {
                pack: no,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
                kind: e.kind,
                flags: e.flags,
            });
        }
    }

    /// The pack holding a blob and the blob's entry.
    pub fn get(&self, id: &Id) -> Option<(Id, Entry)> {
        self.blobs.get(id).map(|l| {
            (
                self.packs[l.pack as usize].0,
                Entry {
                    kind: l.kind,
                    flags: l.flags,
                    offset: l.offset,
                    length: l.length,
                    raw_len: l.raw_len,
                    id: *id,
                },
            )
        })
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn has_pack(&self, pack: &Id) -> bool {
        self.pack_no.contains_key(pack)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_place_wins() {
        let e = |id: u8, off: u32| Entry {
            kind: BlobKind::Data,
            flags: 0,
            offset: off,
            length: 10,
            raw_len: 10,
            id: [id; 32],
        };
        let mut ix = Index::default();
        ix.add(&IndexedPack {
            pack: [1; 32],
            size: 100,
            entries: vec![e(7, 0), e(8, 10)],
        });
        ix.add(&IndexedPack {
            pack: [2; 32],
            size: 100,
            entries: vec![e(8, 50), e(9, 60)],
        });
        assert_eq!(ix.get(&[8; 32]).unwrap(), ([1; 32], e(8, 10)));
        assert_eq!(ix.get(&[9; 32]).unwrap(), ([2; 32], e(9, 60)));
        assert!(ix.get(&[3; 32]).is_none());
        assert_eq!((ix.blob_count(), ix.pack_count()), (3, 2));
        assert!(ix.has_pack(&[2; 32]) && !ix.has_pack(&[3; 32]));
    }
}
