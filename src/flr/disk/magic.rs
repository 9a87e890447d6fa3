//! Which filesystem a partition holds, by its superblock's magic, with its
//! UUID and label: the UUID is how the original instance's mounts
//! (`/etc/fstab`, `findmnt`) name it.

use serde::Serialize;

use super::{le16, le32, le64, read, ReadAt, Result};

/// What a partition holds, by its superblock's magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
    Vfat,
    Ntfs,
    Swap,
    /// An LVM physical volume.
    LvmPv,
}

impl FsKind {
    /// The kernel's driver for it (`/proc/filesystems`); `None` for what is
    /// never mounted (swap, LVM).
    pub fn driver(self) -> Option<&'static str> {
        match self {
            // The ext4 driver reads ext2 and ext3 too.
            FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Some("ext4"),
            FsKind::Xfs => Some("xfs"),
            FsKind::Btrfs => Some("btrfs"),
            FsKind::Vfat => Some("vfat"),
            FsKind::Ntfs => Some("ntfs3"),
            FsKind::Swap | FsKind::LvmPv => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Vfat => "vfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
            FsKind::LvmPv => "LVM2_member",
        }
    }
}

/// A filesystem found in a partition, with its UUID (as `blkid` prints it:
/// what `/etc/fstab` and the original instance's mounts name) and label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    pub kind: FsKind,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn uuid_text(b: &[u8]) -> Option<String> {
    if b.iter().all(|x| *x == 0) {
        return None;
    }
    let h = hex::encode(b);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A NUL- or space-padded label.
fn label_text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|x| *x == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    Some(s).filter(|s| !s.is_empty())
}

/// The filesystem in `size` bytes at `start`, by its magic; `None` when no
/// known one is there. Reads only inside the partition.
pub fn detect_fs(
    img: &(impl ReadAt + ?Sized),
    start: u64,
    size: u64,
) -> Result<Option<Filesystem>> {
    let end = start
        .saturating_add(size)
        .min(img.size().unwrap_or(u64::MAX));
    let at = |off: u64, len: u64| read(img, start.saturating_add(off), len, end);
    let found = |kind, uuid, label| Ok(Some(Filesystem { kind, uuid, label }));
    if let Some(b) = at(0, 512)? {
        if &b[0..4] == b"XFSB" {
            return found(FsKind::Xfs, uuid_text(&b[32..48]), label_text(&b[108..120]));
        }
    }
    if let Some(s) = at(1024, 1024)? {
        if le16(&s, 56) == 0xEF53 {
            let (compat, incompat) = (le32(&s, 0x5C), le32(&s, 0x60));
            // extents, 64bit or flex_bg: ext4; a journal: ext3.
            let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
                FsKind::Ext4
            } else if compat & 0x4 != 0 {
                FsKind::Ext3
            } else {
                FsKind::Ext2
            };
            return found(kind, uuid_text(&s[104..120]), label_text(&s[120..136]));
        }
    }
    if let Some(s) = at(0x10000, 0x1000)? {
        if &s[0x40..0x48] == b"_BHRfS_M" {
            return found(
                FsKind::Btrfs,
                uuid_text(&s[0x20..0x30]),
                label_text(&s[0x12B..0x22B]),
            );
        }
    }
    if let Some(b) = at(0, 512)? {
        if &b[3..11] == b"NTFS    " {
            let serial = format!("{:016X}", le64(&b, 0x48));
            return found(FsKind::Ntfs, Some(serial), None);
        }
        let signed = b[510] == 0x55 && b[511] == 0xAA;
        let fat16 = b[54..57] == *b"FAT";
        let fat32 = b[82..87] == *b"FAT32";
        if signed && (fat16 || fat32) {
            let base = if fat32 { 67 } else { 39 };
            let serial = le32(&b, base);
            let label = label_text(&b[base + 4..base + 15]).filter(|l| l != "NO NAME");
            let uuid = format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff);
            return found(FsKind::Vfat, Some(uuid), label);
        }
    }
    for page in [4096u64, 8192, 16384, 65536] {
        if let Some(b) = at(page - 10, 10)? {
            if b == b"SWAPSPACE2" {
                let h = at(1024, 48)?.unwrap_or_default();
                let uuid = h.get(12..28).and_then(uuid_text);
                let label = h.get(28..44).and_then(label_text);
                return found(FsKind::Swap, uuid, label);
            }
        }
    }
    for sector in 0..4u64 {
        if let Some(b) = at(sector * 512, 512)? {
            if &b[0..8] == b"LABELONE" && &b[24..32] == b"LVM2 001" {
                let pv = (le32(&b, 20) as usize).min(512 - 32);
                let id = String::from_utf8_lossy(&b[pv..pv + 32]).to_string();
                let uuid = [
                    (0, 6),
                    (6, 10),
                    (10, 14),
                    (14, 18),
                    (18, 22),
                    (22, 26),
                    (26, 32),
                ]
                .iter()
                .map(|(a, z)| id.get(*a..*z).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("-");
                return found(FsKind::LvmPv, Some(uuid), None);
            }
        }
    }
    Ok(None)
}
