//! keepalive-vmcheck: the kernel-matrix check (`cargo xtask vm-test`). Runs as root on
//! the host and as the workload of a qemu guest booted from a Debian kernel.
//!
//! 1. Works out from the running kernel alone (its BTF, kallsyms, tracefs and a minimal
//!    fentry program) which mechanism each socket hook should get, independently of the
//!    daemon's own resolver.
//! 2. Starts the daemon in namespace A on the A end of a veth pair, makes keepalive
//!    connections (1 s / 1 s / 3) to namespace B, two healthy and two whose answers
//!    B drops (a source-address rule routes B's replies into a blackhole), so they die
//!    with ETIMEDOUT.
//! 3. Compares the daemon's counters with the kernel's (TcpExtTCPKeepAlive of A) and
//!    with what the sockets saw, and its keepalive_daemon_hook_info with step 1.
//!
//! Output: one `VMCHECK key=value ...` line per fact, hook and count, then
//! `VMCHECK RESULT PASS` or `VMCHECK RESULT FAIL <why>`. Exit status 0 only on PASS.
//!
//! Usage: keepalive-vmcheck --daemon PATH [--daemon-arg ARG]...

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use keepalive_tests::daemon::DAEMON_BIN_ENV;
use keepalive_tests::netns::{B_V4, B_V6};
use keepalive_tests::process::run;
use keepalive_tests::{
    Conn, Daemon, FAST_KEEPALIVE, Family, Netns, VethPair, disable_keepalive, enable_keepalive,
    names, spawn_readers, timer_probes::TimerProbes,
};

/// Addresses B listens on for the connections whose answers it drops.
const B_DOOMED_V4: &str = "192.0.2.12";
const B_DOOMED_V6: &str = "2001:db8::12";
/// How long a doomed connection may take to time out (3 probes 1 s apart, then the reset).
const DOOMED_READ_TIMEOUT: Duration = Duration::from_secs(20);
const HOOKS: [&str; 2] = ["timer_probes", "timeouts"];

fn main() {
    let mut args = std::env::args().skip(1);
    let mut fallback = false;
    let mut no_fentry = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fallback" => fallback = true,
            // The kprobe path: fentry refused by the operator flag, so every kernel that
            // supports kprobes on the hooked functions must attach them.
            "--no-fentry" => no_fentry = true,
            "--daemon-arg" => {
                extra_args().push(args.next().expect("--daemon-arg needs a value"));
            }
            "--daemon" => {
                let path = args.next().expect("--daemon needs a path");
                // SAFETY: single-threaded at this point.
                unsafe { std::env::set_var(DAEMON_BIN_ENV, path) };
            }
            other => {
                eprintln!("usage: keepalive-vmcheck --daemon PATH (unknown argument {other})");
                std::process::exit(2);
            }
        }
    }
    keepalive_tests::require_root();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mode = match (fallback, no_fentry) {
        (true, _) => "fallback",
        (false, true) => "no_fentry",
        (false, false) => "preferred",
    };
    println!("VMCHECK kernel release={release} mode={mode}");
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| {
        let btf_path = if fallback {
            let doctored = doctor_btf();
            extra_args().extend(["--kernel.btf-path".to_owned(), doctored.clone()]);
            doctored
        } else {
            "/sys/kernel/btf/vmlinux".to_owned()
        };
        if no_fentry {
            extra_args().extend(["--hooks.disable".to_owned(), "fentry".to_owned()]);
        }
        let expected = expectations(Path::new(&btf_path), !no_fentry);
        scenario(&expected)
    });
    println!(
        "VMCHECK elapsed seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    let failures = match outcome {
        Ok(f) => f,
        Err(_) => vec!["the check panicked (see the message above)".to_owned()],
    };
    let _ = std::io::stderr().flush();
    if failures.is_empty() {
        println!("VMCHECK RESULT PASS");
    } else {
        println!("VMCHECK RESULT FAIL {}", failures.join("; "));
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// What the kernel supports, from its own facts.

/// The few BTF facts the expectation needs.
#[derive(Default)]
struct BtfFacts {
    /// FUNC name -> (BTF type id, parameter names).
    funcs: BTreeMap<String, (u32, Vec<String>)>,
    /// Enumerator name -> value.
    enumerators: BTreeMap<String, i64>,
    /// "struct.member" -> byte offsets (top-level members of a few structs; every
    /// struct of that name, to see duplicates).
    members: BTreeMap<String, Vec<u32>>,
}

const STRUCTS_OF_INTEREST: [(&str, &str); 3] = [
    ("sock", "sk_timer"),
    ("inet_connection_sock", "icsk_keepalive_timer"),
    ("inet_connection_sock", "icsk_probes_out"),
];

const FUNCS_OF_INTEREST: [&str; 2] = ["tcp_write_wakeup", "tcp_send_active_reset"];

/// A minimal reader of the kernel's BTF blob: FUNC -> FUNC_PROTO parameter names and
/// enumerator values. Written from the format in Documentation/bpf/btf.rst.
fn read_btf(path: &Path) -> Result<BtfFacts, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let u32_at = |off: usize| -> Result<u32, String> {
        data.get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| format!("BTF truncated at {off}"))
    };
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
        return Err("not a little-endian BTF blob".into());
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or("BTF string section out of bounds")?;
    let name = |off: u32| -> String {
        let s = strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        String::from_utf8_lossy(&s[..end]).into_owned()
    };
    let mut pos = hdr_len + type_off;
    let end = pos + type_len;
    let mut id: u32 = 0;
    let mut func_protos: Vec<(String, u32, u32)> = Vec::new(); // (name, func id, proto id)
    let mut protos: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut facts = BtfFacts::default();
    while pos < end {
        id += 1;
        let name_off = u32_at(pos)?;
        let info = u32_at(pos + 4)?;
        let size_or_type = u32_at(pos + 8)?;
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let body = pos + 12;
        let extra = match kind {
            1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
            3 => 12,                      // ARRAY
            4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
            6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
            2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            k => return Err(format!("unknown BTF kind {k} at type {id}")),
        };
        match kind {
            12 => {
                let n = name(name_off);
                if FUNCS_OF_INTEREST.contains(&n.as_str()) {
                    func_protos.push((n, id, size_or_type));
                }
            }
            13 => {
                let params = (0..vlen)
                    .map(|i| u32_at(body + 8 * i).map(name))
                    .collect::<Result<Vec<_>, _>>()?;
                protos.insert(id, params);
            }
            4 => {
                let sname = name(name_off);
                let kind_flag = info >> 31;
                for (st, member) in STRUCTS_OF_INTEREST {
                    if sname != st {
                        continue;
                    }
                    for i in 0..vlen {
                        if name(u32_at(body + 12 * i)?) == member {
                            let raw = u32_at(body + 12 * i + 8)?;
                            let bits = if kind_flag == 1 { raw & 0xff_ffff } else { raw };
                            facts
                                .members
                                .entry(format!("{st}.{member}"))
                                .or_default()
                                .push(bits / 8);
                        }
                    }
                }
            }
            6 => {
                for i in 0..vlen {
                    let n = name(u32_at(body + 8 * i)?);
                    let v = u32_at(body + 8 * i + 4)? as i32;
                    facts.enumerators.insert(n, i64::from(v));
                }
            }
            19 => {
                for i in 0..vlen {
                    let n = name(u32_at(body + 12 * i)?);
                    let lo = u64::from(u32_at(body + 12 * i + 4)?);
                    let hi = u64::from(u32_at(body + 12 * i + 8)?);
                    facts.enumerators.insert(n, ((hi << 32) | lo) as i64);
                }
            }
            _ => {}
        }
        pos = body + extra;
    }
    for (n, func_id, proto) in func_protos {
        let params = protos.get(&proto).cloned().unwrap_or_default();
        facts.funcs.insert(n, (func_id, params));
    }
    Ok(facts)
}

/// Loads `r0 = 0; exit` as an fentry program on BTF function `btf_id` and attaches it
/// (BPF_RAW_TRACEPOINT_OPEN), then closes both: whether fentry works on this kernel.
fn try_fentry(btf_id: u32) -> Result<(), String> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut attr = [0u8; 128];
    let put32 =
        |a: &mut [u8; 128], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |a: &mut [u8; 128], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
    put32(&mut attr, 4, 2); // insn_cnt
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + 9].copy_from_slice(b"vmcheckfe");
    put32(&mut attr, 68, BPF_TRACE_FENTRY); // expected_attach_type
    put32(&mut attr, 108, btf_id); // attach_btf_id
    // SAFETY: bpf(2) with a zero-padded attribute block whose pointers outlive the call.
    let prog = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if prog < 0 {
        return Err(format!("load: {}", std::io::Error::last_os_error()));
    }
    let mut attr = [0u8; 128];
    put32(&mut attr, 8, prog as u32); // raw_tracepoint.prog_fd (name = NULL)
    // SAFETY: as above.
    let link = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_RAW_TRACEPOINT_OPEN,
            attr.as_ptr(),
            attr.len(),
        )
    };
    let result = if link < 0 {
        Err(format!("attach: {}", std::io::Error::last_os_error()))
    } else {
        Ok(())
    };
    // SAFETY: closing descriptors this function owns.
    unsafe {
        if link >= 0 {
            libc::close(link as i32);
        }
        libc::close(prog as i32);
    }
    result
}

fn fact(key: &str, value: impl std::fmt::Display) {
    println!("VMCHECK fact {key}={}", value.to_string().replace(' ', "_"));
}

/// The fallback mode: a copy of the kernel's BTF in which the names the fentry and
/// kprobe paths (and the reason-based tracepoint) need are misspelt, so the daemon has
/// to take its tracepoint fallbacks on a kernel that would give it fentry. Only names
/// change (same lengths), so every offset the daemon reads stays right.
fn doctor_btf() -> String {
    let mut data = std::fs::read("/sys/kernel/btf/vmlinux").expect("reading kernel BTF");
    for name in [
        "tcp_write_wakeup",
        "tcp_send_active_reset",
        "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT",
    ] {
        let needle = [name.as_bytes(), b"\0"].concat();
        // Every occurrence that starts a string (preceded by NUL) and is the whole string.
        let mut i = 0;
        let mut n = 0;
        while let Some(pos) = data[i..]
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            let at = i + pos;
            if at > 0 && data[at - 1] == 0 {
                data[at + name.len() - 1] = b'X';
                n += 1;
            }
            i = at + needle.len();
        }
        fact(&format!("doctored_{name}"), n);
    }
    let path = "/tmp/vmcheck-btf-fallback".to_owned();
    std::fs::write(&path, data).expect("writing doctored BTF");
    path
}

/// hook -> expected mechanism, from the kernel's own facts.
fn expectations(btf_path: &Path, fentry_allowed: bool) -> BTreeMap<&'static str, &'static str> {
    let btf = read_btf(btf_path);
    let btf = match btf {
        Ok(b) => b,
        Err(e) => {
            fact("btf", format!("unreadable:{e}"));
            BtfFacts::default()
        }
    };
    for (m, offs) in &btf.members {
        fact(&format!("btf_offset_{m}"), format!("{offs:?}"));
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let in_kallsyms = |f: &str| {
        kallsyms.lines().any(|l| {
            let mut it = l.split_whitespace();
            let _addr = it.next();
            matches!(it.next(), Some("t" | "T")) && it.next() == Some(f) && it.next().is_none()
        })
    };
    fact(
        "kptr_restrict",
        std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
            .unwrap_or_default()
            .trim(),
    );
    fact(
        "kallsyms_tcp_keepalive_timer",
        kallsyms
            .lines()
            .find(|l| l.ends_with(" tcp_keepalive_timer"))
            .unwrap_or("absent"),
    );
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    fact("kprobe_pmu", kprobe_pmu);
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|p| Path::new(p).join("events").is_dir());
    let send_reset_reason = tracefs.is_some_and(|t| {
        std::fs::read_to_string(Path::new(t).join("events/tcp/tcp_send_reset/format"))
            .is_ok_and(|f| f.contains(" reason;"))
    });
    fact("tp_tcp_send_reset_reason", send_reset_reason);

    let mut expected = BTreeMap::new();
    for (hook, func, param_idx, param, enumerator) in [
        (
            "timer_probes",
            "tcp_write_wakeup",
            1,
            "mib",
            "LINUX_MIB_TCPKEEPALIVE",
        ),
        (
            "timeouts",
            "tcp_send_active_reset",
            2,
            "reason",
            "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT",
        ),
    ] {
        let (btf_id, params) = btf.funcs.get(func).cloned().unwrap_or_default();
        fact(&format!("{func}_params"), format!("({})", params.join(",")));
        let enum_value = btf.enumerators.get(enumerator);
        fact(
            enumerator,
            enum_value.map_or("absent".to_owned(), |v| v.to_string()),
        );
        // The kernel supports the hook when the parameter exists at all: its position
        // moves (Debian's 6.12.117 has tcp_send_active_reset(sk, reason), mainline
        // 6.10+ has (sk, priority, reason)); the daemon's programs must follow it.
        let position = params.iter().position(|p| p == param);
        let signature = position.is_some() && enum_value.is_some();
        if position.is_some() && position != Some(param_idx) {
            fact(
                &format!("{func}_{param}_position"),
                format!("{position:?}_not_{param_idx}"),
            );
        }
        let fentry = if btf_id == 0 {
            Err("no BTF FUNC".to_owned())
        } else {
            try_fentry(btf_id)
        };
        fact(
            &format!("fentry_{func}"),
            match &fentry {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.clone(),
            },
        );
        let kprobe = kprobe_pmu && in_kallsyms(func);
        // Offset from _text, to find the function in an unpacked vmlinux (objdump).
        let sym = |n: &str| {
            kallsyms.lines().find_map(|l| {
                let mut it = l.split_whitespace();
                let a = u64::from_str_radix(it.next()?, 16).ok()?;
                (it.nth(1)? == n).then_some(a)
            })
        };
        if let (Some(f), Some(t)) = (sym(func), sym("_text")) {
            fact(
                &format!("text_offset_{func}"),
                format!("{:#x}", f.wrapping_sub(t)),
            );
        }
        // Compiler clones (.constprop, .isra, .part) the BTF may describe instead.
        let clones: Vec<&str> = kallsyms
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|n| n.strip_prefix(func).is_some_and(|r| r.starts_with('.')))
            .collect();
        fact(
            &format!("kallsyms_{func}_clones"),
            if clones.is_empty() {
                "none".to_owned()
            } else {
                clones.join(",")
            },
        );
        let mechanism = if signature && fentry_allowed && fentry.is_ok() {
            "fentry"
        } else if signature && kprobe {
            "kprobe"
        } else if hook == "timer_probes"
            || (btf.enumerators.contains_key(enumerator) && send_reset_reason)
        {
            "tracepoint"
        } else {
            "tracepoint_timer_context"
        };
        println!("VMCHECK expect hook={hook} mechanism={mechanism} signature={signature}");
        expected.insert(hook, mechanism);
    }
    expected
}

// ---------------------------------------------------------------------------------------
// The workload.

/// Absolute TcpExt counter of the namespace the calling thread is in.
fn tcpext(counter: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").expect("netstat");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert!(lines.len() >= 2, "no TcpExt in /proc/net/netstat");
    let names = lines[0].split_whitespace().skip(1);
    let values = lines[1].split_whitespace().skip(1);
    names
        .zip(values)
        .find(|(n, _)| *n == counter)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {counter}"))
}

fn connect_pair(a: &Netns, listener: &TcpListener, family: Family) -> Conn {
    let addr: SocketAddr = listener.local_addr().expect("listener address");
    let client = a.run_in(|| {
        TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    });
    let (server, _) = listener.accept().expect("accept");
    // One byte each way: both sides' sequence numbers are known to the classifier.
    let (mut c, mut s) = (&client, &server);
    let mut byte = [0u8; 1];
    c.write_all(b"?").expect("client write");
    s.read_exact(&mut byte).expect("server read");
    s.write_all(b"!").expect("server write");
    c.read_exact(&mut byte).expect("client read");
    Conn {
        family,
        client,
        server: Some(server),
    }
}

fn scenario(expected: &BTreeMap<&'static str, &'static str>) -> Vec<String> {
    let mut failures = Vec::new();
    let a = Netns::new("vm", "a");
    let b = Netns::new("vm", "b");
    let pair = VethPair::new(&a, &b);
    run(&[
        "ip",
        "-n",
        b.name(),
        "addr",
        "add",
        &format!("{B_DOOMED_V4}/24"),
        "dev",
        &pair.b_if,
    ]);
    run(&[
        "ip",
        "-n",
        b.name(),
        "-6",
        "addr",
        "add",
        &format!("{B_DOOMED_V6}/64"),
        "dev",
        &pair.b_if,
        "nodad",
    ]);

    // Per-program run counts in fdinfo (diagnostics only).
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let extra = extra_args().clone();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let daemon = Daemon::spawn_with(&a, &[&pair.a_if], &extra);
    let before = daemon.scrape();
    for hook in HOOKS {
        let chosen: Vec<String> = before
            .matching("keepalive_daemon_hook_info", &[("hook", hook)])
            .filter(|s| s.value == 1.0)
            .filter_map(|s| s.labels.get("mechanism").cloned())
            .collect();
        let got = if chosen.is_empty() {
            "none".to_owned()
        } else {
            chosen.join("+")
        };
        let want = expected.get(hook).copied().unwrap_or("?");
        let ok = got == want;
        println!(
            "VMCHECK hook hook={hook} mechanism={got} expected={want} ok={}",
            yn(ok)
        );
        if !ok {
            failures.push(format!("hook {hook} attached {got}, expected {want}"));
        }
    }

    let listeners: Vec<(Family, bool, TcpListener)> = b.run_in(|| {
        [
            (Family::Ipv4, false, B_V4.to_string()),
            (Family::Ipv6, false, B_V6.to_string()),
            (Family::Ipv4, true, B_DOOMED_V4.to_owned()),
            (Family::Ipv6, true, B_DOOMED_V6.to_owned()),
        ]
        .into_iter()
        .map(|(f, doomed, ip)| {
            let addr = SocketAddr::new(ip.parse().expect("address"), 0);
            let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            (f, doomed, l)
        })
        .collect()
    });
    let mut healthy = Vec::new();
    let mut doomed = Vec::new();
    for (family, is_doomed, l) in &listeners {
        let conn = connect_pair(&a, l, *family);
        if *is_doomed {
            doomed.push(conn)
        } else {
            healthy.push(conn)
        }
    }
    // From now on B's answers from the doomed addresses go nowhere.
    for (v, from) in [("-4", B_DOOMED_V4), ("-6", B_DOOMED_V6)] {
        run(&[
            "ip",
            "-n",
            b.name(),
            v,
            "rule",
            "add",
            "from",
            from,
            "lookup",
            "100",
        ]);
        run(&[
            "ip",
            "-n",
            b.name(),
            v,
            "route",
            "add",
            "blackhole",
            "default",
            "table",
            "100",
        ]);
    }

    let trace = TraceEvents::start();
    let ka_before = a.run_in(|| tcpext("TCPKeepAlive"));
    let t0 = Instant::now();
    for c in healthy.iter().chain(&doomed) {
        enable_keepalive(&c.client, FAST_KEEPALIVE);
    }
    let readers = spawn_readers(&doomed, DOOMED_READ_TIMEOUT);
    let outcomes = readers.join();
    let etimedout = outcomes.iter().filter(|(_, o)| o.is_etimedout()).count() as u64;
    for (family, o) in &outcomes {
        println!(
            "VMCHECK doomed family={family} outcome={}",
            format!("{o:?}").replace(' ', "_")
        );
    }
    // Healthy connections probed meanwhile; stop them, let the last probe settle.
    for c in &healthy {
        disable_keepalive(&c.client);
    }
    std::thread::sleep(Duration::from_millis(500));
    let ka = a.run_in(|| tcpext("TCPKeepAlive")) - ka_before;
    trace.dump();
    let after = daemon.scrape();
    println!("VMCHECK phase seconds={:.1}", t0.elapsed().as_secs_f64());

    let wire_sent = after.delta(&before, names::PROBES, &[("direction", "sent")]);
    let timer = TimerProbes::new(&before, &after, ka);
    let resets = after.delta(&before, names::RESETS, &[("reason", "timeout")]);
    let mut compare = |name: &str, daemon_value: u64, kernel_value: u64, oracle: &str| {
        let ok = daemon_value == kernel_value;
        println!(
            "VMCHECK count name={name} daemon={daemon_value} {oracle}={kernel_value} match={}",
            yn(ok)
        );
        if !ok {
            failures.push(format!(
                "{name}: daemon {daemon_value}, {oracle} {kernel_value}"
            ));
        }
    };
    compare("probes_sent", wire_sent, ka, "TcpExtTCPKeepAlive");
    compare("timeout_resets", resets, etimedout, "ETIMEDOUT");
    // On the tracepoint path the kernel may skip the timer programs for a whole
    // softirq; the daemon accounts for it (docs/timer-burst-loss.md): daemon=timer+lost.
    let timer_failure = timer.failure();
    println!(
        "VMCHECK count name=timer_probes daemon={}+{} TcpExtTCPKeepAlive={ka} match={}",
        timer.timer,
        timer.lost,
        yn(timer_failure.is_none())
    );
    failures.extend(timer_failure);
    if etimedout != doomed.len() as u64 {
        failures.push(format!(
            "only {etimedout} of {} doomed connections timed out",
            doomed.len()
        ));
    }
    if ka == 0 {
        failures.push("the kernel sent no keepalive probes".into());
    }
    for s in after.matching("keepalive_daemon_kernel_errors_total", &[]) {
        if s.value != 0.0 {
            println!(
                "VMCHECK kernel_error kind={} count={}",
                s.labels.get("kind").map_or("?", |v| v),
                s.value
            );
        }
    }
    sockconfig_dump(daemon.pid());
    for (name, run_cnt) in prog_run_counts(daemon.pid()) {
        println!("VMCHECK prog name={name} run_cnt={run_cnt}");
    }
    drop(healthy);
    drop(doomed);
    let stderr = daemon.terminate();
    // All of it: a rejected program's verifier log spans many lines.
    for line in stderr.lines() {
        println!("VMCHECK-DAEMON {line}");
    }
    // The address of tcp_keepalive_timer learned in-kernel (what runs without
    // CAP_SYSLOG) must equal kallsyms', which this root check can read.
    if !stderr.contains("learned tcp_keepalive_timer's address in-kernel (matches /proc/kallsyms)")
    {
        failures.push(
            "the daemon did not learn tcp_keepalive_timer's address matching kallsyms".into(),
        );
    }
    failures
}

/// Diagnostics: finds the daemon's SockConfig in its .rodata map (by the address of
/// tcp_keepalive_timer, its first field) and prints the offsets it handed the programs.
fn sockconfig_dump(pid: u32) {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const FIELDS: [&str; 12] = [
        "keepalive_timer_off",
        "probes_out_off",
        "skc_family_off",
        "skc_net_off",
        "net_inum_off",
        "netns_inum",
        "timer_function_off",
        "sk_err_off",
        "keepalive_timeout_reason",
        "keepalive_mib",
        "flags",
        "skc_num_off",
    ];
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let Some(addr) = kallsyms
        .lines()
        .find(|l| l.ends_with(" tcp_keepalive_timer"))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
    else {
        return;
    };
    // SAFETY: pidfd_open(2) on a child we started.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return;
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten();
    for entry in fds.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.contains("map_type:") {
            continue;
        }
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: pidfd_getfd(2) duplicates the daemon's descriptor into ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, target, 0) };
        if fd < 0 {
            continue;
        }
        let mut info = [0u8; 128];
        let mut attr = [0u8; 16];
        attr[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
        attr[4..8].copy_from_slice(&(info.len() as u32).to_le_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
        // SAFETY: bpf(2) writes at most info.len() bytes into `info`.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_ptr(), 16) };
        let value_size = u32::from_le_bytes(info[12..16].try_into().expect("4 bytes")) as usize;
        if rc == 0 && info[24..40].windows(7).any(|w| w == b".rodata") && value_size < (1 << 20) {
            let key = 0u32;
            let mut value = vec![0u8; value_size];
            let mut attr = [0u8; 32];
            attr[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
            attr[8..16].copy_from_slice(&(&raw const key as u64).to_le_bytes());
            attr[16..24].copy_from_slice(&(value.as_mut_ptr() as u64).to_le_bytes());
            // SAFETY: bpf(2) writes value_size bytes into `value`.
            let rc =
                unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_ELEM, attr.as_ptr(), 32) };
            let needle = addr.to_le_bytes();
            if let Some(at) = (rc == 0)
                .then(|| value.windows(8).position(|w| w == needle))
                .flatten()
            {
                let fields: Vec<String> = FIELDS
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| {
                        let o = at + 8 + 4 * i;
                        let v = u32::from_le_bytes(value.get(o..o + 4)?.try_into().ok()?);
                        Some(format!("{f}={v}"))
                    })
                    .collect();
                println!(
                    "VMCHECK sockconfig keepalive_timer_fn={addr:#x} {}",
                    fields.join(" ")
                );
            }
        }
        // SAFETY: closing our duplicate.
        unsafe { libc::close(fd as i32) };
    }
    // SAFETY: closing our pidfd.
    unsafe { libc::close(pidfd as i32) };
}

/// (program name, run_cnt) of every BPF program `pid` holds, via pidfd_getfd and
/// BPF_OBJ_GET_INFO_BY_FD (the name) and fdinfo (the count; needs bpf_stats_enabled).
fn prog_run_counts(pid: u32) -> Vec<(String, u64)> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut out = Vec::new();
    // SAFETY: pidfd_open(2) on a child we started.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return out;
    }
    let Ok(fdinfo) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for entry in fdinfo.filter_map(Result::ok) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
        };
        if field("prog_type:").is_none() {
            continue;
        }
        let run_cnt = field("run_cnt:").and_then(|v| v.parse().ok()).unwrap_or(0);
        let Ok(target) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: pidfd_getfd(2) duplicates the daemon's descriptor into ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, target, 0) };
        let mut name = format!("fd{target}");
        if fd >= 0 {
            let mut info = [0u8; 256];
            let mut attr = [0u8; 16];
            attr[0..4].copy_from_slice(&(fd as u32).to_le_bytes());
            attr[4..8].copy_from_slice(&(info.len() as u32).to_le_bytes());
            attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_le_bytes());
            // SAFETY: bpf(2) writes at most info.len() bytes into `info`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_OBJ_GET_INFO_BY_FD,
                    attr.as_ptr(),
                    attr.len(),
                )
            };
            if rc == 0 {
                let raw = &info[64..80];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                name = String::from_utf8_lossy(&raw[..end]).into_owned();
            }
            // SAFETY: closing our duplicate.
            unsafe { libc::close(fd as i32) };
        }
        out.push((name, run_cnt));
    }
    // SAFETY: closing our pidfd.
    unsafe { libc::close(pidfd as i32) };
    out.sort();
    out
}

/// tracefs events recorded during the keepalive phase, printed as `VMCHECK-TRACE` lines
/// (diagnostics: the keepalive timer's entries and the ETIMEDOUT error reports).
struct TraceEvents {
    root: Option<&'static Path>,
}

impl TraceEvents {
    const EVENTS: [&'static str; 2] = ["timer/timer_expire_entry", "sock/inet_sk_error_report"];

    fn start() -> TraceEvents {
        let root = Path::new("/sys/kernel/tracing");
        if !root.join("events").is_dir() {
            return TraceEvents { root: None };
        }
        let _ = std::fs::write(root.join("trace"), "");
        let _ = std::fs::write(
            root.join("events/timer/timer_expire_entry/filter"),
            "function == tcp_keepalive_timer",
        );
        for e in Self::EVENTS {
            let _ = std::fs::write(root.join("events").join(e).join("enable"), "1");
        }
        TraceEvents { root: Some(root) }
    }

    fn dump(&self) {
        let Some(root) = self.root else { return };
        for e in Self::EVENTS {
            let _ = std::fs::write(root.join("events").join(e).join("enable"), "0");
        }
        let _ = std::fs::write(root.join("events/timer/timer_expire_entry/filter"), "0");
        for e in ["timer/timer_expire_entry", "timer/timer_expire_exit"] {
            let f = std::fs::read_to_string(root.join("events").join(e).join("format"));
            for l in f
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("field:") && !l.contains("common_"))
            {
                println!("VMCHECK-FORMAT {e} {}", l.trim());
            }
        }
        let text = std::fs::read_to_string(root.join("trace")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        println!("VMCHECK trace events={}", lines.len());
        // Each ETIMEDOUT report with the two events before it on the same CPU.
        for (i, l) in lines.iter().enumerate() {
            if !(l.contains("inet_sk_error_report") && l.contains("error=110")) {
                continue;
            }
            let cpu = l.split_whitespace().nth(1).unwrap_or("");
            let before: Vec<&&str> = lines[..i]
                .iter()
                .filter(|p| p.split_whitespace().nth(1) == Some(cpu))
                .collect();
            for p in before.iter().rev().take(2).rev() {
                println!("VMCHECK-TRACE   {}", p.trim());
            }
            println!("VMCHECK-TRACE {}", l.trim());
        }
    }
}

/// Extra daemon arguments (`--daemon-arg`, repeatable; e.g. `--kernel.btf-path`).
fn extra_args() -> std::sync::MutexGuard<'static, Vec<String>> {
    static EXTRA: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    EXTRA.lock().expect("extra args lock")
}

fn yn(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
