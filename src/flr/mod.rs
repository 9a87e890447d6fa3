//! File-level recovery: an operator browses the filesystems of a backed-up
//! volume — the point's image, its partitions found and each filesystem
//! mounted read-only — in a browser over HTTPS, finds files and takes them
//! home or back to the original instance. See docs/flr.md.

pub mod archive;
pub mod attach;
pub mod cert;
pub mod disk;
pub mod pages;
mod request;
pub mod restore;
pub mod server;
pub mod session;
mod stream;
pub mod tree;
mod views;

#[cfg(test)]
mod testimg;
