//! The daemon's command-line definition, as a library so packaging (`cargo xtask
//! package`) can generate the man page and shell completions from the same source.

pub mod cli;
pub mod error_chain;
pub mod exporter;
pub mod kernel;
pub mod metric_names;
pub mod sockhooks;
pub mod web;
pub mod wire;
