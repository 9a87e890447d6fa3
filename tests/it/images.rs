//! Test images: deterministic block contents (zero, text-like, random,
//! duplicates), sparse files, and byte comparison.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::Path;

pub const BS: u64 = 512 * 1024;

/// Deterministic content for block `index`: zero, text, random or a copy of another block.
pub fn block(seed: u64, index: u64) -> Vec<u8> {
    let mut x = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    match next() % 4 {
        0 => vec![0u8; BS as usize],
        1 => {
            let words = [
                "alpha ", "beta ", "gamma ", "delta ", "request ", "ok\n", "error ",
            ];
            let mut v = Vec::with_capacity(BS as usize);
            while v.len() < BS as usize {
                v.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
            }
            v.truncate(BS as usize);
            v
        }
        2 => random_block(next()),
        _ if index == 0 => vec![0xa5; BS as usize],
        _ => block(seed, index / 2),
    }
}

pub fn random_block(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; BS as usize];
    for c in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    v
}

/// A sparse image of `size` bytes with `block(seed, i)` written at each of `blocks`.
pub fn sparse_image(path: &Path, size: u64, seed: u64, blocks: impl IntoIterator<Item = u64>) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for i in blocks {
        f.write_all_at(&block(seed, i), i * BS).unwrap();
    }
}

/// An image of `blocks` blocks, each `block(seed, i)`.
pub fn mixed_image(path: &Path, blocks: u64, seed: u64) {
    sparse_image(path, blocks * BS, seed, 0..blocks);
}

pub fn write_block(path: &Path, index: u64, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, index * BS).unwrap();
}

pub fn read_block(path: &Path, index: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; BS as usize];
    f.read_exact_at(&mut b, index * BS).unwrap();
    b
}

/// Byte equality of two files.
pub fn same(a: &Path, b: &Path) -> bool {
    std::process::Command::new("cmp")
        .arg("-s")
        .arg(a)
        .arg(b)
        .status()
        .unwrap()
        .success()
}

/// Every regular file under a directory.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
