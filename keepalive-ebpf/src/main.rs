//! TCP keepalive observation programs. One file per hook; each program is a thin
//! wrapper over a fallible function, and all classification lives in keepalive-common.
#![no_std]
#![no_main]

mod active_reset_fentry;
mod active_reset_kprobe;
mod audit_iter;
mod audit_sock;
mod error_report_tracepoint;
mod idle_death;
mod idle_death_fentry;
mod idle_death_kprobe;
mod idle_death_tracepoint;
mod maps;
mod send_reset_tracepoint;
mod sock;
mod tc_egress;
mod tc_empty;
mod tc_floor;
mod tc_ingress;
mod timer_fn_calibration;
mod timer_tracepoint;
mod wire;
mod write_wakeup_fentry;
mod write_wakeup_kprobe;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could
    // get here, so a panic shows up as a load error, never at run time.
    loop {}
}

// GPL-compatible: bpf_probe_read_kernel and the tracing program types require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
