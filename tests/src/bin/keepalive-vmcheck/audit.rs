//! The keepalive audit's kernel side on this kernel: the `iter/tcp` inventory must list
//! a namespace's established sockets with the keepalive settings the check set, and the
//! idle-death hook, with the mechanism the mode expects (fentry, kprobe, tracepoint:
//! the same BTF and --hooks.disable as the mode's daemon), must count one reset of an
//! idle connection, and not the other end's own abort. Loads the daemon's eBPF object
//! through the daemon library (audit::kernel), as the daemon does.
//!
//! Prints `VMCHECK count` lines (name, what the audit saw, the socket oracle, match),
//! which the matrix report shows with the daemon's counts.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use aya::maps::PerCpuArray;
use keepalive_common::{audit::EndingKind, counters};
use keepalive_daemon::{
    audit::kernel::{self, IdleDeathSetup, IdleDeaths, Inventory},
    cli::HookMechanism,
    kernel::btf::KernelBtf,
    sockhooks::{self, LateChoice},
};
use keepalive_tests::{
    Netns,
    sockets::{KeepaliveParams, enable_keepalive, set_linger_zero},
};

use super::yn;

const MIN_IDLE: Duration = Duration::from_secs(1);
/// Idle time before the peer's reset: MIN_IDLE with room for a slow (TCG) guest.
const IDLE: Duration = Duration::from_millis(2500);
const ENDING_WAIT: Duration = Duration::from_secs(20);

fn count(name: &str, seen: u64, oracle: u64, failures: &mut Vec<String>) {
    let ok = seen == oracle;
    // `daemon=`: the report reads the checked side under that key.
    println!(
        "VMCHECK count name={name} daemon={seen} sockets={oracle} match={}",
        yn(ok)
    );
    if !ok {
        failures.push(format!("{name}: audit {seen}, sockets {oracle}"));
    }
}

/// What the idle-death hook is attached with: the mode's BTF (the doctored copy in the
/// fallback mode) and disabled mechanisms, and the mechanism expect.rs predicted.
struct IdleDeathMode<'a> {
    disabled: &'a [HookMechanism],
    expected: &'a str,
}

/// Runs the audit checks; returns what failed.
pub fn check(btf_path: &Path, disabled: &[HookMechanism], expected: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let ns = Netns::new("vmaudit", "a");
    let inum = std::fs::metadata(ns.path()).expect("netns").ino() as u32;
    let btf = KernelBtf::load(btf_path).expect("kernel BTF");
    let resolved = sockhooks::resolve_or_disable(&btf, Some(inum));
    let mut ebpf = kernel::load_object(&resolved.config, &kernel::loader_config(&btf))
        .expect("loading the eBPF object");
    let inv = match Inventory::attach(&mut ebpf, &btf) {
        Ok(inv) => inv,
        Err(e) => {
            let why = keepalive_daemon::error_chain::Chain(&e).to_string();
            return vec![format!("audit iterator: {why}")];
        }
    };
    println!("VMCHECK fact audit_hz={}", inv.hz());
    let (client, server) = ns.run_in(|| {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let p = KeepaliveParams {
            idle_secs: 60,
            intvl_secs: 7,
            cnt: 4,
        };
        enable_keepalive(&c, p);
        (c, l.accept().unwrap().0)
    });
    let walk = inv
        .walk_in(&std::fs::File::open(ns.path()).unwrap())
        .expect("walking the namespace");
    count("audit_sockets", walk.records.len() as u64, 2, &mut failures);
    let port = client.local_addr().unwrap().port();
    let own = walk
        .records
        .iter()
        .find(|r| r.key.local_port == port)
        .map_or(0, |r| r.keepalive_time);
    count(
        "audit_keepidle_jiffies",
        own.into(),
        60 * u64::from(inv.hz()),
        &mut failures,
    );
    let mode = IdleDeathMode { disabled, expected };
    idle_reset(
        &mut ebpf,
        &btf,
        inv.hz(),
        &mode,
        (client, server),
        &mut failures,
    );
    failures
}

/// One idle connection reset by its peer: one ending, one counted idle death (the
/// peer's own abort, also ECONNRESET, is not one), by the expected mechanism.
fn idle_reset(
    ebpf: &mut aya::Ebpf,
    btf: &KernelBtf,
    hz: u32,
    mode: &IdleDeathMode<'_>,
    (client, server): (TcpStream, TcpStream),
    failures: &mut Vec<String>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let setup = IdleDeathSetup {
        min_idle: MIN_IDLE,
        hz,
    };
    let late = LateChoice {
        disabled: mode.disabled,
        hook_info: None,
    };
    let attached = rt.block_on(async { IdleDeaths::attach_with(ebpf, btf, setup, late) });
    let mut deaths = match attached {
        Ok(d) => d,
        Err(e) => {
            let why = keepalive_daemon::error_chain::Chain(&e).to_string();
            failures.push(format!("idle-death hook: {why}"));
            return;
        }
    };
    let got = deaths.mechanism().map_or("none", |m| m.label());
    let ok = got == mode.expected;
    // The report reads `hook` lines; this one is the audit's own attach, not the
    // daemon's (scenario.rs checks that one as `idle_deaths`).
    println!(
        "VMCHECK hook hook=idle_deaths_audit mechanism={got} expected={} ok={}",
        mode.expected,
        yn(ok)
    );
    if !ok {
        failures.push(format!(
            "audit idle-death hook attached {got}, expected {} (not taken: {})",
            mode.expected,
            deaths.rejections().join("; ")
        ));
    }
    let mut reader = deaths.take_endings().expect("endings reader");
    std::thread::sleep(IDLE);
    set_linger_zero(&server);
    drop(server);
    let endings = rt
        .block_on(async { tokio::time::timeout(ENDING_WAIT, reader.next_batch()).await })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let resets = endings
        .iter()
        .filter(|e| e.kind == EndingKind::IdleReset as u32)
        .count();
    count("audit_idle_reset_endings", resets as u64, 1, failures);
    // The server's own abort reports ECONNRESET too, without tcp_reset(); a keepalive
    // connection idle 2.5 s neither timed out nor gave up retransmitting.
    count(
        "audit_other_endings",
        (endings.len() - resets) as u64,
        0,
        failures,
    );
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("COUNTERS").expect("COUNTERS")).expect("COUNTERS");
    let slot = counters::idle_failures(EndingKind::IdleReset, true);
    let counted: u64 = counters.get(&slot, 0).map_or(0, |v| v.iter().sum());
    count("audit_idle_resets_counted", counted, 1, failures);
    let saw_reset = (&client)
        .read(&mut [0u8; 1])
        .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNRESET));
    count("audit_app_saw_reset", saw_reset.into(), 1, failures);
}
