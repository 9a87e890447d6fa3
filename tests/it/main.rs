//! skiff's integration tests: one binary (debug binaries are large), one
//! emulator per run of this binary, one fresh emulated AWS account per test
//! so tests run in parallel without sharing state.

mod harness;

mod backup;
mod boot;
mod browser;
mod examples;
mod flr;
mod flr_images;
mod flr_restore;
mod host;
mod images;
mod mount;
mod mover_emu;
mod network;
mod policy_run;
mod repo_cli;
mod repo_repair;
mod scenario;
mod serve;
mod serve_lifecycle;
mod soak;
mod specs;
mod verify_groups;
mod volume;
mod workers;
