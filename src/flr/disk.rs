//! The partitions of a disk image (GPT, MBR with logical partitions, or none)
//! and the filesystem on each, found by its superblock's magic. The image is
//! hostile input: every offset and size is checked against the image before
//! it is read, and no read is larger than [`MAX_TABLE_BYTES`].

use std::io;

use serde::Serialize;

use crate::failure::{Failure, Kind};

mod magic;
pub use magic::{detect_fs, Filesystem, FsKind};

/// The most a partition entry array may take: 8,192 entries of 128 bytes
/// (tools write 128). A header asking for more is refused.
pub const MAX_TABLE_BYTES: u64 = 1 << 20;
/// Logical partitions followed in an extended partition's chain.
pub const MAX_LOGICAL: u32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{op}: {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    /// A partition table that cannot be what it claims (found before anything was mounted).
    #[error("{0}")]
    Invalid(String),
}

impl DiskError {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: io::Error) -> DiskError {
        DiskError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }
}

impl From<&DiskError> for Failure {
    fn from(e: &DiskError) -> Failure {
        let kind = match e {
            DiskError::Io { .. } => Kind::Io,
            DiskError::Invalid(_) => Kind::Invalid,
        };
        Failure::from_error(kind, "flr", None, false, e)
    }
}

pub type Result<T> = std::result::Result<T, DiskError>;

/// Random access to an image: a file, a block device, or bytes in memory.
pub trait ReadAt {
    fn size(&self) -> io::Result<u64>;
    /// Reads at most `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        use std::io::Seek;
        // `metadata().len()` is 0 for a block device; seeking to the end is not.
        let mut f = self;
        f.seek(io::SeekFrom::End(0))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let rest = self.get(start..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// `len` bytes at `offset`, or `None` when the range passes `end` (the
/// image's or the partition's end).
fn read(img: &(impl ReadAt + ?Sized), offset: u64, len: u64, end: u64) -> Result<Option<Vec<u8>>> {
    if len > MAX_TABLE_BYTES || offset.checked_add(len).is_none_or(|e| e > end) {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    let mut done = 0;
    while done < buf.len() {
        match img.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DiskError::io("read image", format!("byte {offset}"), e)),
        }
    }
    Ok(Some(buf))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// CRC-32 (IEEE, reflected), as GPT uses it.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, b| {
        TABLE[((c ^ *b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Gpt,
    Mbr,
    /// No table: the whole image is one filesystem (partition 0).
    None,
}

/// A disk image's partitions, in the kernel's numbering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub table: Table,
    /// Bytes per sector the table was found with (512 or 4096).
    pub sector: u64,
    /// The image's size in bytes.
    pub size: u64,
    pub partitions: Vec<Partition>,
    /// What was wrong but worked around (a damaged primary GPT, a partition
    /// cut at the image's end), for the operator to see.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// As the kernel numbers it (`sda3` is 3); logical MBR partitions from
    /// 5; 0 is the whole image when it has no table.
    pub index: u32,
    /// Offset and length in bytes.
    pub start: u64,
    pub size: u64,
    /// "Linux filesystem", "EFI System", … or the type GUID / byte when not a common one.
    pub type_name: String,
    /// The GPT partition name.
    pub label: Option<String>,
}

/// Reads the partition table of `img`: GPT (the backup header when the
/// primary is damaged, 512- or 4096-byte sectors), MBR (primaries 1–4,
/// logicals from 5), or none (one partition 0 over the whole image).
pub fn partitions(img: &(impl ReadAt + ?Sized)) -> Result<Layout> {
    let size = img
        .size()
        .map_err(|e| DiskError::io("read image", "size", e))?;
    let mbr = read(img, 0, 512, size)?;
    let signed = mbr
        .as_ref()
        .is_some_and(|m| m[510] == 0x55 && m[511] == 0xAA);
    let protective = signed
        && mbr
            .as_ref()
            .is_some_and(|m| (0..4).any(|i| m[446 + 16 * i + 4] == 0xEE));
    if protective || !signed {
        if let Some(layout) = gpt(img, size, protective)? {
            return Ok(layout);
        }
    }
    let whole = |notes: Vec<String>| Layout {
        table: Table::None,
        sector: 512,
        size,
        partitions: vec![Partition {
            index: 0,
            start: 0,
            size,
            type_name: "whole disk".into(),
            label: None,
        }],
        notes,
    };
    // A FAT or NTFS boot sector is signed like an MBR: its filesystem decides.
    let bare = detect_fs(img, 0, size)?;
    if bare
        .as_ref()
        .is_some_and(|f| matches!(f.kind, FsKind::Vfat | FsKind::Ntfs | FsKind::Xfs))
    {
        return Ok(whole(vec![]));
    }
    if let Some(m) = mbr.filter(|_| signed) {
        if let Some(layout) = msdos(img, size, &m)? {
            return Ok(layout);
        }
    }
    Ok(whole(vec![]))
}

// ---- GPT

/// A GPT at either end of the image, for either sector size; `None` when
/// there is none. A protective MBR with no readable GPT is an error.
fn gpt(img: &(impl ReadAt + ?Sized), size: u64, protective: bool) -> Result<Option<Layout>> {
    let mut problems = Vec::new();
    let mut signed = false;
    let mut unusable = |copy: Unusable| match copy {
        Unusable::Absent(why) => why,
        Unusable::Damaged(why) => {
            signed = true;
            why
        }
    };
    for sector in [512u64, 4096] {
        match gpt_header(img, size, sector, sector)? {
            Ok(table) => return table.into_layout(size, sector, vec![]).map(Some),
            Err(copy) => problems.push(unusable(copy)),
        }
        let Some(last) = (size / sector).checked_sub(1).filter(|l| *l > 1) else {
            continue;
        };
        match gpt_header(img, size, sector, last * sector)? {
            Ok(table) => {
                let note = format!(
                    "the primary GPT header is damaged ({}); the backup at LBA {last} is used",
                    problems.last().map(String::as_str).unwrap_or("absent")
                );
                return table.into_layout(size, sector, vec![note]).map(Some);
            }
            Err(copy) => problems.push(unusable(copy)),
        }
    }
    if protective || signed {
        return Err(DiskError::Invalid(format!(
            "GPT: no usable header: {}",
            problems.join("; ")
        )));
    }
    Ok(None)
}

struct GptTable {
    entries: Vec<u8>,
    entry_size: usize,
    first_usable: u64,
    last_usable: u64,
}

/// Why one copy of the GPT header cannot be used.
enum Unusable {
    /// No header there (no signature, or past the image's end).
    Absent(String),
    /// A header that fails its checks.
    Damaged(String),
}

/// The header at byte `at` and its entry array, both CRC-checked; the
/// inner `Err` says why this copy is unusable.
fn gpt_header(
    img: &(impl ReadAt + ?Sized),
    size: u64,
    sector: u64,
    at: u64,
) -> Result<std::result::Result<GptTable, Unusable>> {
    let lba = at / sector;
    let at_lba = format!("header at LBA {lba} ({sector}-byte sectors)");
    let Some(h) = read(img, at, sector, size)? else {
        return Ok(Err(Unusable::Absent(format!(
            "{at_lba}: past the image's end"
        ))));
    };
    if &h[0..8] != b"EFI PART" {
        return Ok(Err(Unusable::Absent(format!("{at_lba}: no GPT signature"))));
    }
    let bad = |why: String| Ok(Err(Unusable::Damaged(format!("{at_lba}: {why}"))));
    let header_size = le32(&h, 12) as u64;
    if !(92..=sector).contains(&header_size) {
        return bad(format!(
            "header size {header_size} is not within 92..={sector}"
        ));
    }
    let mut copy = h[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(&h, 16) {
        return bad("header CRC32 does not match".into());
    }
    if le64(&h, 24) != lba {
        return bad(format!("it says it is at LBA {}", le64(&h, 24)));
    }
    let (first_usable, last_usable) = (le64(&h, 40), le64(&h, 48));
    let entries_lba = le64(&h, 72);
    let (count, entry_size) = (le32(&h, 80) as u64, le32(&h, 84) as u64);
    if !(128..=4096).contains(&entry_size) || !entry_size.is_power_of_two() {
        return bad(format!(
            "entry size {entry_size} is not 128 × 2^n up to 4096"
        ));
    }
    let bytes = count * entry_size;
    if bytes > MAX_TABLE_BYTES {
        return bad(format!(
            "{count} entries of {entry_size} bytes ({bytes} bytes) is more than the {MAX_TABLE_BYTES} skiff reads"
        ));
    }
    let Some(entries) = entries_lba
        .checked_mul(sector)
        .map(|off| read(img, off, bytes, size))
        .transpose()?
        .flatten()
    else {
        return bad(format!(
            "the entry array at LBA {entries_lba} is past the image's end"
        ));
    };
    if crc32(&entries) != le32(&h, 88) {
        return bad("entry array CRC32 does not match".into());
    }
    Ok(Ok(GptTable {
        entries,
        entry_size: entry_size as usize,
        first_usable,
        last_usable,
    }))
}

impl GptTable {
    fn into_layout(self, size: u64, sector: u64, mut notes: Vec<String>) -> Result<Layout> {
        let mut partitions = Vec::new();
        for (i, e) in self.entries.chunks_exact(self.entry_size).enumerate() {
            let guid: [u8; 16] = e[0..16].try_into().unwrap_or_default();
            if guid == [0; 16] {
                continue;
            }
            let index = i as u32 + 1;
            let (first, last) = (le64(e, 32), le64(e, 40));
            if first > last || first < self.first_usable || last > self.last_usable {
                return Err(DiskError::Invalid(format!(
                    "GPT partition {index}: sectors {first}..={last} are not within the usable {}..={}",
                    self.first_usable, self.last_usable
                )));
            }
            let name: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| le16(c, 0))
                .take_while(|c| *c != 0)
                .collect();
            let label = Some(String::from_utf16_lossy(&name)).filter(|s| !s.is_empty());
            let start = first.saturating_mul(sector);
            let len = (last - first + 1).saturating_mul(sector);
            if let Some(p) = place(index, start, len, size, &mut notes) {
                partitions.push(Partition {
                    index,
                    start,
                    size: p,
                    type_name: gpt_type_name(&guid),
                    label,
                });
            }
        }
        check_overlaps(&partitions, "GPT")?;
        Ok(Layout {
            table: Table::Gpt,
            sector,
            size,
            partitions,
            notes,
        })
    }
}

/// The usable length of a partition: cut at the image's end (noted);
/// `None` (noted) when it starts past the end.
fn place(index: u32, start: u64, len: u64, size: u64, notes: &mut Vec<String>) -> Option<u64> {
    if start >= size {
        notes.push(format!(
            "partition {index} starts at byte {start}, past the image's end ({size}): left out"
        ));
        return None;
    }
    let end = start.saturating_add(len);
    if end > size {
        notes.push(format!(
            "partition {index} ends at byte {end}, past the image's end ({size}): cut to {} bytes",
            size - start
        ));
        return Some(size - start);
    }
    Some(len)
}

fn check_overlaps(parts: &[Partition], table: &str) -> Result<()> {
    let mut by_start: Vec<&Partition> = parts.iter().collect();
    by_start.sort_by_key(|p| p.start);
    for w in by_start.windows(2) {
        if w[0].start + w[0].size > w[1].start {
            return Err(DiskError::Invalid(format!(
                "{table} partitions {} (bytes {}..{}) and {} (from byte {}) overlap",
                w[0].index,
                w[0].start,
                w[0].start + w[0].size,
                w[1].index,
                w[1].start
            )));
        }
    }
    Ok(())
}

/// A GUID as text: the first three fields are stored little-endian.
fn guid_text(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}-{}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        hex::encode_upper(&g[8..10]),
        hex::encode_upper(&g[10..16])
    )
}

fn gpt_type_name(g: &[u8; 16]) -> String {
    let text = guid_text(g);
    let name = match text.as_str() {
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "21686148-6449-6E6F-744E-656564454649" => "BIOS boot",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        _ => return text,
    };
    name.into()
}

// ---- MBR

fn mbr_type_name(t: u8) -> String {
    let name = match t {
        0x83 => "Linux",
        0x82 => "Linux swap",
        0x8e => "Linux LVM",
        0xfd => "Linux raid autodetect",
        0x07 => "HPFS/NTFS/exFAT",
        0x01 => "FAT12",
        0x04 | 0x06 => "FAT16",
        0x0e => "W95 FAT16 (LBA)",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0xef => "EFI System",
        0x05 | 0x0f | 0x85 => "Extended",
        _ => return format!("type 0x{t:02x}"),
    };
    name.into()
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// One MBR entry: (boot flag, type, first sector, sectors).
fn mbr_entry(sector: &[u8], i: usize) -> (u8, u8, u64, u64) {
    let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
    (e[0], e[4], le32(e, 8) as u64, le32(e, 12) as u64)
}

/// The MBR's partitions; `None` when the sector is not a partition table
/// (a boot flag other than 0 or 0x80, or no entry in use).
fn msdos(img: &(impl ReadAt + ?Sized), size: u64, mbr: &[u8]) -> Result<Option<Layout>> {
    let entries: Vec<_> = (0..4).map(|i| mbr_entry(mbr, i)).collect();
    if entries.iter().any(|e| e.0 != 0 && e.0 != 0x80) || entries.iter().all(|e| e.1 == 0) {
        return Ok(None);
    }
    let mut notes = Vec::new();
    let mut partitions = Vec::new();
    let mut extended = None;
    for (i, &(_, kind, first, count)) in entries.iter().enumerate() {
        if kind == 0 || count == 0 {
            continue;
        }
        let index = i as u32 + 1;
        if is_extended(kind) {
            if extended.is_some() {
                notes.push(format!(
                    "MBR partition {index}: a second extended partition: its logicals are left out"
                ));
            } else {
                extended = Some((first, count));
            }
            continue;
        }
        if let Some(len) = place(index, first * 512, count * 512, size, &mut notes) {
            partitions.push(Partition {
                index,
                start: first * 512,
                size: len,
                type_name: mbr_type_name(kind),
                label: None,
            });
        }
    }
    if let Some((ext_first, ext_count)) = extended {
        logicals(img, size, ext_first, ext_count, &mut partitions, &mut notes)?;
    }
    check_overlaps(&partitions, "MBR")?;
    Ok(Some(Layout {
        table: Table::Mbr,
        sector: 512,
        size,
        partitions,
        notes,
    }))
}

/// Follows the chain of extended boot records: each holds one logical
/// partition (relative to itself) and the next record (relative to the
/// extended partition's start). Bounded by [`MAX_LOGICAL`]; a record
/// outside the extended partition, or seen twice, ends the chain.
fn logicals(
    img: &(impl ReadAt + ?Sized),
    size: u64,
    ext_first: u64,
    ext_count: u64,
    partitions: &mut Vec<Partition>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let ext_end = ext_first + ext_count;
    let mut seen = std::collections::HashSet::new();
    let mut at = ext_first;
    for index in 5..5 + MAX_LOGICAL {
        if !seen.insert(at) || at < ext_first || at >= ext_end {
            notes.push(format!(
                "MBR: the extended boot record chain loops or leaves the extended partition at sector {at}: stopped before partition {index}"
            ));
            return Ok(());
        }
        let Some(ebr) = read(img, at * 512, 512, size)? else {
            notes.push(format!(
                "MBR: extended boot record at sector {at} is past the image's end: stopped before partition {index}"
            ));
            return Ok(());
        };
        if ebr[510] != 0x55 || ebr[511] != 0xAA {
            notes.push(format!(
                "MBR: no signature on the extended boot record at sector {at}: stopped before partition {index}"
            ));
            return Ok(());
        }
        let (_, kind, first, count) = mbr_entry(&ebr, 0);
        if kind != 0 && count != 0 {
            let start = (at + first) * 512;
            let end = (at + first + count).min(ext_end);
            if end < at + first + count {
                notes.push(format!(
                    "MBR partition {index}: ends past its extended partition: cut there"
                ));
            }
            let len = end.saturating_sub(at + first) * 512;
            if let Some(len) = place(index, start, len, size, notes) {
                partitions.push(Partition {
                    index,
                    start,
                    size: len,
                    type_name: mbr_type_name(kind),
                    label: None,
                });
            }
        }
        let (_, next_kind, next, _) = mbr_entry(&ebr, 1);
        if next_kind == 0 || next == 0 {
            return Ok(());
        }
        at = ext_first + next;
    }
    notes.push(format!(
        "MBR: more than {MAX_LOGICAL} logical partitions: the rest are left out"
    ));
    Ok(())
}

#[cfg(test)]
mod tests;
