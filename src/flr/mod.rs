//! File-level recovery: a restore point's image, its partitions and filesystems mounted read-only.

pub mod attach;
pub mod disk;

#[cfg(test)]
mod testimg;
