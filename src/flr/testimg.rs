//! Disk images for the tests of this area: tables written by `sfdisk` (or
//! by hand, for what sfdisk will not write: 4096-byte sectors, hostile
//! headers) and filesystems made by their own `mkfs`.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

pub const MIB: u64 = 1 << 20;

/// Runs a program; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (tools/system.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse file of `size` bytes partitioned by an sfdisk script.
pub fn sfdisk(path: &Path, size: u64, script: &str) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (package fdisk; tools/system.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A filesystem of `kind` in a new sparse file of `size` bytes, with this
/// UUID and label, holding a copy of `populate` where mkfs can do that.
pub fn mkfs(kind: &str, path: &Path, size: u64, uuid: &str, label: &str, populate: Option<&Path>) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    let p = path.to_str().unwrap();
    let dir = populate.map(|d| d.to_str().unwrap().to_string());
    match kind {
        "ext4" => {
            let mut a = vec!["-q", "-F", "-t", "ext4", "-U", uuid, "-L", label];
            if let Some(d) = &dir {
                a.extend(["-d", d]);
            }
            a.push(p);
            run("mkfs.ext4", &a);
        }
        "xfs" => {
            let u = format!("uuid={uuid}");
            run("mkfs.xfs", &["-q", "-f", "-m", &u, "-L", label, p]);
            if let Some(d) = &dir {
                copy_in(path, d);
            }
        }
        "btrfs" => {
            let mut a = vec!["-q", "-f", "-U", uuid, "-L", label];
            if let Some(d) = &dir {
                a.extend(["--rootdir", d]);
            }
            a.push(p);
            run("mkfs.btrfs", &a);
        }
        "vfat" => {
            // vfat's "UUID" is its 32-bit serial.
            let serial = uuid.replace('-', "");
            run("mkfs.vfat", &["-i", &serial, "-n", label, p]);
        }
        "swap" => {
            run("mkswap", &["-q", "-U", uuid, "-L", label, p]);
        }
        _ => panic!("mkfs: {kind}?"),
    }
}

/// Copies a folder into a filesystem image through a read-write loop
/// mount (for filesystems whose mkfs cannot populate: XFS here).
pub fn copy_in(image: &Path, from: &str) {
    let at = tempfile::tempdir().unwrap();
    let m = at.path().to_str().unwrap();
    run("mount", &["-o", "loop", image.to_str().unwrap(), m]);
    let copied = Command::new("cp")
        .args(["-a", "--sparse=always", "-T", from, m])
        .status();
    run("umount", &[m]);
    assert!(
        copied.unwrap().success(),
        "cp -a {from} into {}",
        image.display()
    );
}

/// Writes the filesystem file into the disk image at `offset`, keeping holes.
pub fn place(disk: &Path, fs: &Path, offset: u64) {
    assert_eq!(offset % MIB, 0);
    run(
        "dd",
        &[
            &format!("if={}", fs.display()),
            &format!("of={}", disk.display()),
            "bs=1M",
            &format!("seek={}", offset / MIB),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

/// A GUID in GPT's on-disk order from its text.
pub fn guid_bytes(text: &str) -> [u8; 16] {
    let h = hex::decode(text.replace('-', "")).unwrap();
    let mut g = [0u8; 16];
    g.copy_from_slice(&h);
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

pub const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

fn crc(data: &[u8]) -> u32 {
    // The same polynomial as the reader's, computed bit by bit.
    let mut c = !0u32;
    for b in data {
        c ^= *b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A GPT written by hand, so tests can say anything a header can say.
pub struct Gpt {
    pub sector: u64,
    pub sectors: u64,
    /// (first LBA, last LBA, name) per entry.
    pub parts: Vec<(u64, u64, &'static str)>,
    pub entry_count: u32,
    pub entry_size: u32,
}

impl Gpt {
    pub fn new(sector: u64, sectors: u64, parts: Vec<(u64, u64, &'static str)>) -> Gpt {
        Gpt {
            sector,
            sectors,
            parts,
            entry_count: 128,
            entry_size: 128,
        }
    }

    /// The image: protective MBR, primary header and entries, backup entries and header.
    pub fn bytes(&self) -> Vec<u8> {
        let ss = self.sector as usize;
        let mut img = vec![0u8; ss * self.sectors as usize];
        let e = &mut img[446..462];
        e[4] = 0xEE;
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&(self.sectors.min(u32::MAX as u64) as u32 - 1).to_le_bytes());
        img[510] = 0x55;
        img[511] = 0xAA;
        let table_bytes = (self.entry_count as usize * self.entry_size as usize).min(16384);
        let mut entries = vec![0u8; table_bytes.max(128 * self.parts.len())];
        for (i, (first, last, name)) in self.parts.iter().enumerate() {
            let at = i * (self.entry_size.max(128) as usize);
            let e = &mut entries[at..at + 128];
            e[0..16].copy_from_slice(&guid_bytes(LINUX_FS));
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (j, u) in name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let table_sectors = (entries.len() as u64).div_ceil(self.sector);
        let last = self.sectors - 1;
        let first_usable = 2 + table_sectors;
        let last_usable = last - 1 - table_sectors;
        let crc_entries = crc(&entries);
        for (my, other, entries_at) in [(1, last, 2), (last, 1, last - table_sectors)] {
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&other.to_le_bytes());
            h[40..48].copy_from_slice(&first_usable.to_le_bytes());
            h[48..56].copy_from_slice(&last_usable.to_le_bytes());
            h[56..72].copy_from_slice(&[0x42; 16]);
            h[72..80].copy_from_slice(&entries_at.to_le_bytes());
            h[80..84].copy_from_slice(&self.entry_count.to_le_bytes());
            h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
            h[88..92].copy_from_slice(&crc_entries.to_le_bytes());
            let c = crc(&h);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            let at = my as usize * ss;
            img[at..at + 92].copy_from_slice(&h);
            let at = entries_at as usize * ss;
            img[at..at + entries.len()].copy_from_slice(&entries);
        }
        img
    }
}

/// Writes bytes into a file at an offset.
pub fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}
