//! File-level recovery: an operator browses the filesystems of a backed-up
//! volume (mounted read-only, one directory per partition), finds files and
//! takes them home or back to the original instance.

pub mod archive;
pub mod tree;
