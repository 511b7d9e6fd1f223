//! The per-packet path shared by the ingress and egress programs.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    programs::TcContext,
};
use keepalive_common::{
    Direction,
    classify::classify,
    counters::{self, KernelError},
    flow::{FlowKey, FlowState},
    packet::{
        Header, Packet, ParseError, Parsed, Segment, TCP_ACK, TCP_FIN, TCP_RST, parse_ethernet,
    },
    ports,
};

use crate::maps::{FLOWS, count, count_port};

/// TC_ACT_UNSPEC: let the next program or filter decide (TCX_NEXT under TCX). We only
/// observe, and must not cut other programs on the same hook short.
pub const TC_ACT_UNSPEC: i32 = -1;

/// Headers a probe needs in the linear area: Ethernet + 2 VLAN tags + IPv6 + a few
/// extension headers + TCP with options.
const PULL_LEN: u32 = 192;
const EEXIST: i32 = 17;

/// The skb's linear data, read with direct packet access (no helper calls).
struct LinearData {
    data: usize,
    end: usize,
    /// skb->len: the whole frame, linear part and pages.
    len: usize,
}

/// A header inside the linear data, already bounds-checked for its length.
#[derive(Clone, Copy)]
struct CheckedHeader(*const u8);

impl Packet for LinearData {
    type Header = CheckedHeader;

    #[inline(always)]
    fn header(&self, offset: usize, len: usize) -> Option<CheckedHeader> {
        let start = self.data + offset;
        if start + len > self.end {
            return None;
        }
        Some(CheckedHeader(start as *const u8))
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len
    }
}

// SAFETY (all reads below): `header` proved [ptr, ptr + len) lies inside the linear
// packet data, and the parser reads only constant offsets inside `len`. The loads may be
// unaligned: the kernel only rejects misaligned packet access under
// BPF_F_STRICT_ALIGNMENT or on architectures without efficient unaligned access
// (kernel/bpf/verifier.c, check_pkt_ptr_alignment), while read_unaligned would make LLVM
// split every field into byte loads.
#[allow(clippy::cast_ptr_alignment)]
impl Header for CheckedHeader {
    #[inline(always)]
    fn u8(&self, at: usize) -> u8 {
        // SAFETY: see above.
        unsafe { self.0.add(at).read_volatile() }
    }
    #[inline(always)]
    fn be16(&self, at: usize) -> u16 {
        // SAFETY: see above.
        u16::from_be(unsafe { (self.0.add(at) as *const u16).read_volatile() })
    }
    #[inline(always)]
    fn be32(&self, at: usize) -> u32 {
        // SAFETY: see above.
        u32::from_be(unsafe { (self.0.add(at) as *const u32).read_volatile() })
    }
    #[inline(always)]
    fn raw32(&self, at: usize) -> u32 {
        // SAFETY: see above.
        unsafe { (self.0.add(at) as *const u32).read_volatile() }
    }
}

#[inline(always)]
fn linear(ctx: &TcContext) -> LinearData {
    LinearData {
        data: ctx.data(),
        end: ctx.data_end(),
        len: ctx.len() as usize,
    }
}

/// Observes one segment. `LOG` selects the program variant: `false` for ka_tc_ingress
/// and ka_tc_egress, which contain no logging at all, `true` for ka_tc_ing_log and
/// ka_tc_egr_log, which the daemon loads instead only when --log.kernel-level is not
/// off. Why two variants and not one program gated on aya-log's level in .rodata: the
/// verifier does prune the disabled log calls, but the gated program still came out 67
/// instructions longer than without aya-log (1272 against 1205 translated instructions
/// for ingress on 6.18; the level check and the register allocation around the calls
/// stay on the valid-packet path). With a const generic the `if LOG` blocks vanish
/// before code generation, so the variant without logging is the program as it was.
#[inline(always)]
pub fn observe<const LOG: bool>(ctx: &TcContext, dir: Direction) -> i32 {
    if let Err(e) = try_observe::<LOG>(ctx, dir) {
        count(counters::error(match e {
            ParseError::Truncated => KernelError::Truncated,
            ParseError::Malformed => KernelError::Malformed,
        }));
        if LOG {
            log_bad_frame(
                ctx.as_ptr() as *const __sk_buff,
                matches!(e, ParseError::Truncated),
                matches!(dir, Direction::Received),
            );
        }
    }
    TC_ACT_UNSPEC
}

/// Detail for --log.kernel-level debug; the counter is the source of truth. A separate
/// BPF function (inline(never)) so that its registers and spills stay out of the
/// per-packet path of the logging variant too; aya-log checks the level (a .rodata
/// constant) inside, so at warn the verifier prunes its body.
#[inline(never)]
fn log_bad_frame(skb: *const __sk_buff, truncated: bool, ingress: bool) {
    let what = if truncated { "truncated" } else { "malformed" };
    let way = if ingress { "ingress" } else { "egress" };
    aya_log_ebpf::debug!(
        &(),
        target: "keepalive_ebpf",
        "{} frame on ifindex {} ({}): frame length {}, linear data ends at offset {}",
        what,
        // SAFETY: `skb` is this tc run's context; these are plain fields tc programs
        // may read.
        unsafe { (*skb).ifindex },
        way,
        // SAFETY: as above.
        unsafe { (*skb).len },
        // SAFETY: as above.
        unsafe { (*skb).data_end.wrapping_sub((*skb).data) }
    );
}

#[inline(always)]
fn try_observe<const LOG: bool>(ctx: &TcContext, dir: Direction) -> Result<(), ParseError> {
    if let Parsed::Candidate(seg) = parse(ctx)? {
        track::<LOG>(&seg, dir);
    }
    Ok(())
}

/// Parses the frame, pulling paged headers into the linear area when needed.
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Parsed, ParseError> {
    let pkt = linear(ctx);
    let parsed = match parse_ethernet(&pkt) {
        // Headers beyond the linear area (paged skbs): pull them in once and retry.
        Err(ParseError::Truncated) if ctx.len() as usize > pkt.end - pkt.data => {
            let want = if ctx.len() < PULL_LEN {
                ctx.len()
            } else {
                PULL_LEN
            };
            ctx.pull_data(want).map_err(|_| ParseError::Truncated)?;
            parse_ethernet(&linear(ctx))?
        }
        other => other?,
    };
    Ok(parsed)
}

/// What the per-packet path costs at least, for `cargo xtask bench`
/// (--debug.wire-floor): `LOOKUP` false stops after the parser and its early exit;
/// true also does the flow-map lookup every candidate segment needs (inserting on a
/// miss, so that later lookups find the entry) and reads the state, but classifies
/// nothing and counts nothing. Errors are dropped: the floor measures the work, not
/// the counters.
#[inline(always)]
pub fn floor<const LOOKUP: bool>(ctx: &TcContext, dir: Direction) -> i32 {
    if let Ok(Parsed::Candidate(seg)) = parse(ctx)
        && LOOKUP
    {
        let key = FlowKey::from_segment(&seg, dir);
        match FLOWS.get_ptr(&key) {
            Some(state) => {
                // SAFETY: the pointer comes from a successful lookup and stays valid for
                // the rest of this program run (RCU). Volatile, so that the read the
                // classifier would make is not optimised away.
                let _ = unsafe { core::ptr::addr_of!((*state).dir[0].next_seq).read_volatile() };
            }
            None => {
                let state = FlowState::first_sighting(&seg, dir, 0);
                let _ = FLOWS.insert(&key, &state, BPF_NOEXIST as u64);
            }
        }
    }
    TC_ACT_UNSPEC
}

#[inline(always)]
fn track<const LOG: bool>(seg: &Segment, dir: Direction) {
    let key = FlowKey::from_segment(seg, dir);
    // SAFETY: a plain helper call without arguments.
    let now = || unsafe { bpf_ktime_get_ns() };
    match FLOWS.get_ptr_mut(&key) {
        Some(state) => {
            // SAFETY: the pointer comes from a successful lookup and stays valid for the
            // rest of this program run (RCU). The ingress and egress runs of one
            // connection can overlap on two CPUs; the classifier stores a flag word only
            // when it changes, so they cannot undo each other's transitions (classify.rs,
            // `set`/`clear`).
            let state = unsafe { &mut *state };
            let verdict = classify(state, seg, dir, now);
            if let Some(slot) = counters::for_verdict(verdict, dir, seg.family) {
                count(slot);
                if let Some(port_slot) = ports::for_verdict(verdict, dir) {
                    count_port(key.local_port, port_slot);
                }
            }
        }
        None => {
            // Track from the first small ACK-only segment; FIN/RST of an unknown
            // connection teach nothing worth a map entry.
            if seg.flags & (TCP_FIN | TCP_RST) != 0 || seg.flags & TCP_ACK == 0 {
                return;
            }
            let state = FlowState::first_sighting(seg, dir, now());
            match FLOWS.insert(&key, &state, BPF_NOEXIST as u64) {
                Ok(()) => count(counters::FLOWS_CREATED),
                // EEXIST: the other direction inserted it first on another CPU.
                Err(e) if e != -EEXIST => {
                    count(counters::error(KernelError::FlowInsertFailed));
                    if LOG {
                        flow_insert_failed(key.local_port, key.remote_port, e);
                    }
                }
                Err(_) => {}
            }
        }
    }
}

/// Detail for --log.kernel-level warn (the counter is the source of truth); out of line
/// for the reason given at [`log_bad_frame`].
#[inline(never)]
fn flow_insert_failed(local_port: u16, remote_port: u16, err: i32) {
    aya_log_ebpf::warn!(
        &(),
        target: "keepalive_ebpf",
        "flow insert failed: local port {} remote port {}: error {}",
        local_port,
        remote_port,
        err
    );
}
