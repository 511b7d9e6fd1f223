//! Resolves the audit programs' kernel layout ([`AuditConfig`]) from the kernel's BTF.
//! Members that moved between kernels are looked up under each name they had.

use keepalive_common::audit_config::{AuditConfig, audit_flags};

use crate::kernel::btf::{BtfError, KernelBtf, MemberInfo};

/// The members the audit reads, in one place so a failure names the first missing one.
pub fn resolve(btf: &KernelBtf) -> Result<AuditConfig, BtfError> {
    let skc = |m: &str| btf.member("sock", &["__sk_common", m]).map(|i| i.offset);
    let tcp = |m: &str| btf.member("tcp_sock", &[m]).map(|i| i.offset);
    let ipv4 = |m: &str| btf.member("net", &["ipv4", m]);
    let probes = ipv4("sysctl_tcp_keepalive_probes")?;
    let mut c = AuditConfig {
        skc_state_off: skc("skc_state")?,
        skc_family_off: skc("skc_family")?,
        skc_daddr_off: skc("skc_daddr")?,
        skc_rcv_saddr_off: skc("skc_rcv_saddr")?,
        skc_dport_off: skc("skc_dport")?,
        skc_num_off: skc("skc_num")?,
        skc_v6_daddr_off: skc("skc_v6_daddr")?,
        skc_v6_rcv_saddr_off: skc("skc_v6_rcv_saddr")?,
        skc_net_off: skc("skc_net")?,
        // sk_flags became __sk_common.skc_flags in 6.x (a #define keeps the old name).
        sk_flags_off: first_of(btf, "sock", &[&["__sk_common", "skc_flags"], &["sk_flags"]])?
            .offset,
        net_inum_off: btf.member("net", &["ns", "inum"])?.offset,
        sysctl_time_off: ipv4("sysctl_tcp_keepalive_time")?.offset,
        sysctl_intvl_off: ipv4("sysctl_tcp_keepalive_intvl")?.offset,
        sysctl_probes_off: probes.offset,
        sysctl_probes_size: probes.size.unwrap_or(4),
        keepalive_time_off: tcp("keepalive_time")?,
        keepalive_intvl_off: tcp("keepalive_intvl")?,
        keepalive_probes_off: tcp("keepalive_probes")?,
        rcv_tstamp_off: tcp("rcv_tstamp")?,
        lrcvtime_off: btf
            .member("inet_connection_sock", &["icsk_ack", "lrcvtime"])?
            .offset,
        user_timeout_off: btf
            .member("inet_connection_sock", &["icsk_user_timeout"])?
            .offset,
        keepopen_bit: u32::try_from(btf.enumerator("SOCK_KEEPOPEN")?).unwrap_or(u32::MAX),
        flags: audit_flags::VALID,
        inet_sport_off: btf.member("inet_sock", &["inet_sport"])?.offset,
        ..Default::default()
    };
    // Optional: a kernel without them still gets the inventory, with 0 for these.
    if let Ok((cg, kn, id)) = cgroup_offsets(btf) {
        (c.cgroup_off, c.cgroup_kn_off, c.kn_id_off) = (cg, kn, id);
        c.flags |= audit_flags::HAVE_CGROUP;
    }
    if let Ok((sk_socket, ino)) = socket_inode_offsets(btf) {
        (c.sk_socket_off, c.socket_ino_off) = (sk_socket, ino);
        c.flags |= audit_flags::HAVE_SOCKET_INODE;
    }
    c.flags |= stretches(&c);
    check_sizes(&c, probes)?;
    Ok(c)
}

/// The `audit_flags` of the stretches the programs may read whole, from the offsets.
fn stretches(c: &AuditConfig) -> u32 {
    let d = c.skc_daddr_off;
    let head = c.skc_rcv_saddr_off == d + 4
        && c.skc_dport_off == d + 12
        && c.skc_family_off == d + 16
        && c.skc_state_off == d + 18;
    let mut flags = 0;
    if head {
        flags |= audit_flags::HEAD_STRETCH;
    }
    if c.keepalive_intvl_off == c.keepalive_time_off + 4 {
        flags |= audit_flags::KEEPALIVE_PAIR;
    }
    if c.skc_v6_rcv_saddr_off == c.skc_v6_daddr_off + 16 {
        flags |= audit_flags::V6_PAIR;
    }
    flags
}

/// sk_cgrp_data.cgroup exists since 5.15 (before, a tagged `val`).
fn cgroup_offsets(btf: &KernelBtf) -> Result<(u32, u32, u32), BtfError> {
    Ok((
        btf.member("sock", &["sk_cgrp_data", "cgroup"])?.offset,
        btf.member("cgroup", &["kn"])?.offset,
        btf.member("kernfs_node", &["id"])?.offset,
    ))
}

/// SOCK_INODE(): `struct socket_alloc { struct socket socket; struct inode vfs_inode; }`,
/// so the inode number is at (vfs_inode - socket) + i_ino from the `struct socket`.
fn socket_inode_offsets(btf: &KernelBtf) -> Result<(u32, u32), BtfError> {
    let socket = btf.member("socket_alloc", &["socket"])?.offset;
    let inode = btf.member("socket_alloc", &["vfs_inode"])?.offset;
    let ino = btf.member("inode", &["i_ino"])?.offset;
    Ok((
        btf.member("sock", &["sk_socket"])?.offset,
        inode - socket + ino,
    ))
}

fn first_of(btf: &KernelBtf, strukt: &str, paths: &[&[&str]]) -> Result<MemberInfo, BtfError> {
    let mut last = None;
    for p in paths {
        match btf.member(strukt, p) {
            Ok(m) => return Ok(m),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BtfError::NoStruct {
        name: strukt.to_owned(),
    }))
}

/// The programs read fixed widths; a kernel whose widths differ must not be read wrong.
fn check_sizes(c: &AuditConfig, probes: MemberInfo) -> Result<(), BtfError> {
    if !matches!(probes.size, Some(1 | 4)) || c.keepopen_bit >= 64 {
        return Err(BtfError::NoMember {
            strukt: "net".to_owned(),
            member: "ipv4.sysctl_tcp_keepalive_probes (as a u8 or int) or SOCK_KEEPOPEN < 64"
                .to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The build machines' kernel: its BTF must resolve, with the facts every kernel
    /// since 4.x shares (SOCK_KEEPOPEN is bit 3; skc_state follows skc_family).
    #[test]
    fn the_host_kernel_resolves() {
        let btf = KernelBtf::load(Path::new("/sys/kernel/btf/vmlinux"))
            .expect("this test needs the host's /sys/kernel/btf/vmlinux");
        let c = resolve(&btf).expect("resolving the audit layout");
        assert_eq!(c.keepopen_bit, 3);
        assert_eq!(c.skc_state_off, c.skc_family_off + 2);
        let all = audit_flags::VALID | audit_flags::HAVE_CGROUP | audit_flags::HAVE_SOCKET_INODE;
        assert_eq!(c.flags & all, all);
        // sock_common's head and the IPv6 pair have had this layout since 4.x.
        let stretches = audit_flags::HEAD_STRETCH | audit_flags::V6_PAIR;
        assert_eq!(c.flags & stretches, stretches);
        assert!(matches!(c.sysctl_probes_size, 1 | 4));
        assert_ne!(c.socket_ino_off, 0);
    }

    /// A stretch is read whole only when every field sits where the one read expects
    /// it; otherwise the programs read field by field.
    #[test]
    fn stretches_need_the_exact_layout() {
        let classic = AuditConfig {
            skc_daddr_off: 0,
            skc_rcv_saddr_off: 4,
            skc_dport_off: 12,
            skc_family_off: 16,
            skc_state_off: 18,
            skc_v6_daddr_off: 56,
            skc_v6_rcv_saddr_off: 72,
            keepalive_time_off: 2220,
            keepalive_intvl_off: 2224,
            ..Default::default()
        };
        let all = audit_flags::HEAD_STRETCH | audit_flags::V6_PAIR | audit_flags::KEEPALIVE_PAIR;
        assert_eq!(stretches(&classic), all);
        let moved = AuditConfig {
            skc_state_off: 19,
            skc_v6_rcv_saddr_off: 88,
            keepalive_intvl_off: 2228,
            ..classic
        };
        assert_eq!(stretches(&moved), 0);
    }
}
