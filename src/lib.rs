//! skiff: a Lua-scriptable engine that protects AWS EC2 workloads.
//!
//! The host runs Lua runbooks and policies; the primitives they call live in
//! the area modules below, which know nothing of Lua.

pub mod api;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod estate;
pub mod failure;
pub mod flr;
pub mod host;
pub mod mount;
pub mod mover;
pub mod network;
pub mod ops;
pub mod policy;
pub mod repo;
pub mod serve;
pub mod workers;

#[cfg(test)]
mod layering;
