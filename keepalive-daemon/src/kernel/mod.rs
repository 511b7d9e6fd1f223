//! What the running kernel looks like: BTF types, symbol addresses, tracepoint layouts.
//! Rust eBPF has no CO-RE, so everything layout-dependent is resolved here, once.

pub mod btf;
pub(crate) mod kallsyms;
pub mod tracefs;
