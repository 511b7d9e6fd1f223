// The kernel programs are the `keepalive` binary (src/main.rs), built for
// bpfel-unknown-none by keepalive-daemon's build.rs. This empty library lets the daemon
// name the crate as a build-dependency so cargo rebuilds it when this crate changes.
#![no_std]
