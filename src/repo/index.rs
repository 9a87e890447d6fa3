//! The in-memory index: blob id → pack and place, built from the index files
//! (and from the headers of packs no index file covers yet). Packs the index
//! files list but the store no longer holds are kept apart: their blobs are
//! *lost*, so a writer stores them again instead of deduplicating against them.

use std::collections::{HashMap, HashSet};

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
    /// Every pack seen, present or missing, by number.
    packs: Vec<(Id, u64)>,
    /// The packs present in the store.
    pack_no: HashMap<Id, u32>,
    blobs: HashMap<Id, Loc>,
    /// Blobs whose only known place is a pack missing from the store, with that pack.
    lost: HashMap<Id, u32>,
    /// Packs listed by index files but missing from the store.
    missing: Vec<u32>,
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
            if !self.lost.is_empty() {
                self.lost.remove(&e.id);
            }
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

    /// Records a pack the index files list but the store does not hold:
    /// its blobs indexed nowhere else are lost.
    pub fn add_missing(&mut self, p: &IndexedPack) {
        if self.pack_no.contains_key(&p.pack) {
            return;
        }
        let no = self.packs.len() as u32;
        self.packs.push((p.pack, p.size));
        self.missing.push(no);
        for e in &p.entries {
            if !self.blobs.contains_key(&e.id) {
                self.lost.entry(e.id).or_insert(no);
            }
        }
    }

    /// Takes packs found gone from the store out of the index; their blobs
    /// become lost (even one with a second place elsewhere, which the index
    /// did not keep: at worst it is stored once more). Returns how many.
    pub fn drop_packs(&mut self, gone: &HashSet<Id>) -> usize {
        let mut nos = HashSet::new();
        for id in gone {
            if let Some(no) = self.pack_no.remove(id) {
                nos.insert(no);
                self.missing.push(no);
            }
        }
        if nos.is_empty() {
            return 0;
        }
        let before = self.lost.len();
        let lost = &mut self.lost;
        self.blobs.retain(|id, loc| {
            if nos.contains(&loc.pack) {
                lost.insert(*id, loc.pack);
                false
            } else {
                true
            }
        });
        self.lost.len() - before
    }

    /// The missing pack a lost blob was in.
    pub fn lost_in(&self, id: &Id) -> Option<Id> {
        self.lost.get(id).map(|no| self.packs[*no as usize].0)
    }

    /// How many blobs are lost with the packs missing from the store.
    pub fn lost_count(&self) -> usize {
        self.lost.len()
    }

    /// Packs listed by index files but missing from the store.
    pub fn missing_packs(&self) -> Vec<Id> {
        self.missing
            .iter()
            .map(|no| self.packs[*no as usize].0)
            .collect()
    }

    /// The packs present in the store that the index covers.
    pub fn present_packs(&self) -> impl Iterator<Item = &Id> {
        self.pack_no.keys()
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

    /// Packs present in the store.
    pub fn pack_count(&self) -> usize {
        self.pack_no.len()
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

    fn entry(id: u8) -> Entry {
        Entry {
            kind: BlobKind::Data,
            flags: 0,
            offset: 0,
            length: 10,
            raw_len: 10,
            id: [id; 32],
        }
    }

    #[test]
    fn blobs_of_packs_missing_from_the_store_are_lost_not_found() {
        let pack = |p: u8, ids: &[u8]| IndexedPack {
            pack: [p; 32],
            size: 100,
            entries: ids.iter().map(|i| entry(*i)).collect(),
        };
        let mut ix = Index::default();
        ix.add(&pack(1, &[7, 8]));
        // Pack 2 is listed by an index file but gone; blob 8 has a place in pack 1.
        ix.add_missing(&pack(2, &[8, 9]));
        assert!(ix.contains(&[8; 32]) && !ix.contains(&[9; 32]));
        assert_eq!(ix.lost_in(&[9; 32]), Some([2; 32]));
        assert_eq!(ix.lost_in(&[8; 32]), None);
        assert_eq!((ix.lost_count(), ix.pack_count()), (1, 1));
        assert!(!ix.has_pack(&[2; 32]));
        assert_eq!(ix.missing_packs(), vec![[2; 32]]);
        // Pack 1 goes missing later (found by a writer's listing).
        let gone: HashSet<Id> = [[1; 32]].into_iter().collect();
        assert_eq!(ix.drop_packs(&gone), 2);
        assert!(ix.get(&[7; 32]).is_none());
        assert_eq!(ix.lost_in(&[7; 32]), Some([1; 32]));
        assert_eq!(ix.pack_count(), 0);
        assert_eq!(ix.missing_packs().len(), 2);
        // A blob stored again is found again.
        ix.add(&pack(3, &[9]));
        assert!(ix.contains(&[9; 32]) && ix.lost_in(&[9; 32]).is_none());
    }
}
