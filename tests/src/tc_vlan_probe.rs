//! What a tc program sees of VLAN tags: a tiny TCX program, written as raw BPF
//! instructions (no toolchain needed), attached next to the daemon's on both hooks of
//! an interface. Per hook it counts every frame, the frames whose tag the kernel moved
//! into skb metadata (`__sk_buff.vlan_present`), and the frames whose outer ethertype
//! in the packet bytes is 802.1Q or 802.1ad (a tag still in the frame).
//!
//! The links are released (and the programs detached) on drop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::bpf_syscall::{
    Attr, BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_PROG_LOAD, bpf_fd, map_lookup,
};
use crate::netns::Netns;

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;
const FUNC_SKB_LOAD_BYTES: i32 = 26;
/// `offsetof(struct __sk_buff, vlan_present)`.
const SKB_VLAN_PRESENT: i16 = 20;
const SLOTS_PER_HOOK: u32 = 3;

/// What one hook saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanSeen {
    pub frames: u64,
    /// Tag in skb metadata (`skb->vlan_tci`, `__sk_buff.vlan_present`).
    pub tag_in_metadata: u64,
    /// Outer ethertype 0x8100 or 0x88a8 in the frame bytes tc reads.
    pub tag_in_frame: u64,
}

/// The probe programs attached to one interface; detached on drop.
#[derive(Debug)]
pub struct VlanProbe {
    map: OwnedFd,
    _links: Vec<OwnedFd>,
}

impl VlanProbe {
    /// Attaches the probe to both tc hooks of `ifname` in `ns`.
    pub fn attach(ns: &Netns, ifname: &str) -> io::Result<VlanProbe> {
        let name = ifname.to_owned();
        ns.run_in(move || {
            let cname = std::ffi::CString::new(name).expect("interface name");
            // SAFETY: if_nametoindex reads a NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let map = map_create(2 * SLOTS_PER_HOOK)?;
            let mut links = Vec::new();
            for (hook, attach_type) in [(0, BPF_TCX_EGRESS), (1, BPF_TCX_INGRESS)] {
                let prog = prog_load(&program(map.as_raw_fd(), hook * SLOTS_PER_HOOK))?;
                links.push(link_create(&prog, ifindex, attach_type)?);
            }
            Ok(VlanProbe { map, _links: links })
        })
    }

    /// (egress, ingress) counts so far.
    pub fn read(&self) -> io::Result<(VlanSeen, VlanSeen)> {
        let mut v = [0u64; 6];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = read_slot(&self.map, i as u32)?;
        }
        let seen = |b: usize| VlanSeen {
            frames: v[b],
            tag_in_metadata: v[b + 1],
            tag_in_frame: v[b + 2],
        };
        Ok((seen(0), seen(3)))
    }
}

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf) << 8)
        | (u64::from(src & 0xf) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

// Opcodes (class | size/op | mode/source).
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const LD_IMM64: u8 = 0x18;
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const ST_W: u8 = 0x62;
const ATOMIC_DW: u8 = 0xdb;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;

/// `map[slot] += 1` (9 instructions; clobbers r0-r5).
fn increment(map_fd: i32, slot: u32) -> Vec<u64> {
    vec![
        insn(ST_W, 10, 0, -4, slot as i32),
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -4),
        insn(CALL, 0, 0, 0, FUNC_MAP_LOOKUP_ELEM),
        insn(JEQ_K, 0, 0, 2, 0),
        insn(MOV64_K, 1, 0, 0, 1),
        insn(ATOMIC_DW, 0, 1, 0, 0), // lock *(u64 *)(r0 + 0) += r1
    ]
}

/// The probe program counting into slots `base..base + 3`.
fn program(map_fd: i32, base: u32) -> Vec<u64> {
    let inc = |slot| increment(map_fd, base + slot);
    let mut p = vec![insn(MOV64_X, 6, 1, 0, 0)]; // r6 = skb
    p.extend(inc(0));
    p.push(insn(LDX_W, 2, 6, SKB_VLAN_PRESENT, 0));
    p.push(insn(JEQ_K, 2, 0, 9, 0));
    p.extend(inc(1));
    // bpf_skb_load_bytes(skb, 12, fp - 8, 2): the outer ethertype.
    p.extend([
        insn(MOV64_X, 1, 6, 0, 0),
        insn(MOV64_K, 2, 0, 0, 12),
        insn(MOV64_X, 3, 10, 0, 0),
        insn(ADD64_K, 3, 0, 0, -8),
        insn(MOV64_K, 4, 0, 0, 2),
        insn(CALL, 0, 0, 0, FUNC_SKB_LOAD_BYTES),
        insn(JNE_K, 0, 0, 13, 0),
        insn(LDX_H, 2, 10, -8, 0),
        // Read little-endian from network order: 81 00 -> 0x0081, 88 a8 -> 0xa888.
        insn(JEQ_K, 2, 0, 2, 0x0081),
        insn(JEQ_K, 2, 0, 1, 0xa888),
        insn(JA, 0, 0, 9, 0),
    ]);
    p.extend(inc(2));
    p.extend([insn(MOV64_K, 0, 0, 0, -1), insn(EXIT, 0, 0, 0, 0)]); // TCX_NEXT
    p
}

fn map_create(entries: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_ARRAY)
        .u32(4, 4) // key_size
        .u32(8, 8) // value_size
        .u32(12, entries); // max_entries
    bpf_fd(BPF_MAP_CREATE, &mut a)
}

/// The counter in slot `key` of the probe's array map.
fn read_slot(map: &OwnedFd, key: u32) -> io::Result<u64> {
    let mut value = [0u8; 8];
    map_lookup(map.as_fd(), &key.to_ne_bytes(), &mut value)?;
    Ok(u64::from_ne_bytes(value))
}

fn prog_load(insns: &[u64]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut a = Attr::new();
    a.u32(0, BPF_PROG_TYPE_SCHED_CLS)
        .u32(4, insns.len() as u32) // insn_cnt
        .ptr(8, insns.as_ptr())
        .ptr(16, license.as_ptr())
        .u32(24, 1) // log_level
        .u32(28, log.len() as u32) // log_size
        .ptr(32, log.as_mut_ptr())
        .bytes(48, b"kat_vlan_probe\0\0"); // prog_name
    bpf_fd(BPF_PROG_LOAD, &mut a).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        io::Error::new(
            e.kind(),
            format!(
                "BPF_PROG_LOAD: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            ),
        )
    })
}

fn link_create(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, prog.as_raw_fd() as u32)
        .u32(4, ifindex) // target_ifindex
        .u32(8, attach_type); // flags 0: append after the programs already there
    bpf_fd(BPF_LINK_CREATE, &mut a)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jump offsets are hand-counted: every jump must land inside the program, and
    /// the skips must land exactly at the start of the next block.
    #[test]
    fn jumps_land_on_block_starts() {
        let p = program(3, 0);
        let block = increment(3, 0).len();
        assert_eq!(block, 9);
        let vlan_jump = 1 + block + 1;
        assert_eq!(vlan_jump as i64 + 1 + 9, (1 + block + 2 + block) as i64);
        let after_second = 1 + block + 2 + block;
        // load_bytes failure and "not a tag" both skip the third increment.
        let third = after_second + 11;
        assert_eq!(after_second + 6 + 1 + 13, third + block);
        assert_eq!(after_second + 10 + 1 + 9, third + block);
        assert_eq!(p.len(), third + block + 2);
        assert_eq!(p[third + block + 1] & 0xff, u64::from(EXIT));
    }
}
