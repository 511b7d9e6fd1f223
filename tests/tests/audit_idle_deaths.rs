//! The keepalive audit's idle-death hook, without the daemon binary: a connection that
//! dies after being idle at least the minimum is counted once, with the right cause,
//! keepalive flag and histogram bucket, and reported as one Ending; one that dies
//! sooner, the application's own abort and a connect() that times out are not.
//!
//! Oracles: the sockets the test made and the errors the application saw.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener},
    thread,
    time::Duration,
};

use keepalive_common::audit::{EndingKind, record_flags};
use keepalive_tests::{
    Netns, VethPair,
    audit_kernel::{IDLE, hook, inum, key_of, pair},
    netns::{A_V4, B_V4},
    require_root,
    sockets::{KeepaliveParams, enable_keepalive, set_linger_zero},
};
use socket2::{Domain, SockRef, Socket, Type};

#[test]
fn an_idle_connection_reset_by_its_peer_is_one_idle_death() {
    require_root();
    let ns = Netns::new("auditrst", "a");
    let mut h = hook(inum(&ns), false);
    let (client, server, early) = ns.run_in(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = l.local_addr().unwrap();
        // Reset at once: not idle long enough, not an idle death.
        let (early_c, early_s) = pair(&l, to);
        set_linger_zero(&early_s);
        drop(early_s);
        let (c, s) = pair(&l, to);
        enable_keepalive(
            &c,
            KeepaliveParams {
                idle_secs: 3600,
                intvl_secs: 60,
                cnt: 5,
            },
        );
        (c, s, early_c)
    });
    let key = key_of(&client);
    thread::sleep(IDLE);
    set_linger_zero(&server);
    drop(server);
    let e = h.one_ending();
    assert_eq!(e.kind, EndingKind::IdleReset as u32, "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.flags & record_flags::KEEPALIVE, record_flags::KEEPALIVE);
    assert_eq!(e.netns_inum, inum(&ns));
    let idle_ms = e.idle_jiffies as u64 * 1000 / h.hz as u64;
    assert!((2000..6000).contains(&idle_ms), "idle {idle_ms} ms: {e:#?}");
    h.assert_counted_once(&e, EndingKind::IdleReset);
    h.assert_no_more_endings();
    // The application saw the reset.
    let err = (&client).read(&mut [0u8; 1]).expect_err("read after RST");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNRESET));
    drop(early);
}

#[test]
fn an_idle_connection_whose_retransmissions_time_out_is_one_idle_death() {
    require_root();
    let a = Netns::new("auditrto", "a");
    let b = Netns::new("auditrto", "b");
    let _veth = VethPair::new(&a, &b);
    let mut h = hook(inum(&a), false);
    let listener = b.run_in(|| TcpListener::bind((B_V4, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let client = a.run_in(|| {
        let c = keepalive_tests::sockets::connect_with_retry(to);
        SockRef::from(&c)
            .set_tcp_user_timeout(Some(Duration::from_millis(2000)))
            .unwrap();
        c
    });
    let (_server, _) = listener.accept().unwrap();
    let key = key_of(&client);
    thread::sleep(IDLE);
    b.nft(&format!(
        "table inet audit_rto {{\n\tchain input {{\n\t\ttype filter hook input priority 0; \
         policy accept;\n\t\tip saddr {A_V4} drop\n\t}}\n}}\n"
    ));
    (&client).write_all(b"x").unwrap();
    // A connect() whose SYNs are dropped times out the same way, but never was idle.
    let refused = a.run_in(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_tcp_user_timeout(Some(Duration::from_millis(2000)))
            .unwrap();
        s.connect(&to.into())
            .expect_err("connect through the drop rule")
    });
    assert_eq!(refused.raw_os_error(), Some(libc::ETIMEDOUT));
    let e = h.one_ending();
    assert_eq!(e.kind, EndingKind::IdleRetransmitTimeout as u32, "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.flags & record_flags::KEEPALIVE, 0);
    h.assert_counted_once(&e, EndingKind::IdleRetransmitTimeout);
    h.assert_no_more_endings();
    let err = (&client)
        .read(&mut [0u8; 1])
        .expect_err("read after the timeout");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
}

#[test]
fn a_keepalive_timeout_is_reported_as_an_ending_and_is_no_idle_death() {
    require_root();
    let a = Netns::new("auditkat", "a");
    let b = Netns::new("auditkat", "b");
    let _veth = VethPair::new(&a, &b);
    let mut h = hook(inum(&a), true);
    let listener = b.run_in(|| TcpListener::bind((B_V4, 0)).unwrap());
    let to = listener.local_addr().unwrap();
    let client = a.run_in(|| keepalive_tests::sockets::connect_with_retry(to));
    let (_server, _) = listener.accept().unwrap();
    let key = key_of(&client);
    b.nft(&format!(
        "table inet audit_kat {{\n\tchain input {{\n\t\ttype filter hook input priority 0; \
         policy accept;\n\t\tip saddr {A_V4} drop\n\t}}\n}}\n"
    ));
    let p = KeepaliveParams {
        idle_secs: 1,
        intvl_secs: 1,
        cnt: 3,
    };
    enable_keepalive(&client, p);
    let e = h.one_ending();
    assert_eq!(e.kind, EndingKind::KeepaliveTimeout as u32, "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.flags & record_flags::KEEPALIVE, record_flags::KEEPALIVE);
    // Idle since the handshake: the first probe after 1 s, three unanswered 1 s apart.
    let idle_ms = u64::from(e.idle_jiffies) * 1000 / u64::from(h.hz);
    assert!(
        (3500..15000).contains(&idle_ms),
        "idle {idle_ms} ms: {e:#?}"
    );
    h.assert_no_idle_deaths();
    h.assert_no_more_endings();
    let err = (&client)
        .read(&mut [0u8; 1])
        .expect_err("read after the timeout");
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
}
