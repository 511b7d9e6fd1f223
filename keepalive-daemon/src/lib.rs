//! keepalive-daemon as a library: the command-line definition (also used by packaging,
//! `cargo xtask package`, for the man page and shell completions), the kernel facts
//! (kernel), the wire programs (wire), the socket hooks (sockhooks), the Prometheus side
//! (exporter) and the HTTP side (web). The binary (main.rs, lifecycle/) runs them as
//! named steps. Errors here are thiserror enums; main.rs prints them with their causes.

pub mod audit;
pub mod cli;
pub mod error_chain;
pub mod exporter;
pub mod kernel;
pub mod metric_names;
pub mod sockhooks;
pub mod web;
pub mod wire;
