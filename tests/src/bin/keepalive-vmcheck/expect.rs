//! Which mechanism each socket hook should get, worked out from the running kernel's
//! own facts (its BTF, kallsyms, tracefs and a minimal fentry program), independently
//! of the daemon's resolver. Every fact is printed as a `VMCHECK fact` line.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::Path;

use keepalive_tests::bpf_syscall::{Attr, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN, bpf_fd};

use super::btf::{BtfFacts, read_btf};
use super::fact;

/// One socket hook and the kernel function, parameter and enumerator it relies on.
struct HookSpec {
    hook: &'static str,
    func: &'static str,
    /// Where the daemon's programs expect `param`.
    param_idx: usize,
    param: &'static str,
    enumerator: &'static str,
}

const HOOK_SPECS: [HookSpec; 2] = [
    HookSpec {
        hook: "timer_probes",
        func: "tcp_write_wakeup",
        param_idx: 1,
        param: "mib",
        enumerator: "LINUX_MIB_TCPKEEPALIVE",
    },
    HookSpec {
        hook: "timeouts",
        func: "tcp_send_active_reset",
        param_idx: 2,
        param: "reason",
        enumerator: "SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT",
    },
];

/// What the kernel offers besides BTF: its symbols, the kprobe PMU, and whether the
/// tcp_send_reset tracepoint carries a reason.
struct KernelFacts {
    kallsyms: String,
    kprobe_pmu: bool,
    send_reset_reason: bool,
}

impl KernelFacts {
    /// Reads (and prints) the facts.
    fn gather() -> KernelFacts {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
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
        KernelFacts {
            kallsyms,
            kprobe_pmu,
            send_reset_reason,
        }
    }

    /// Whether `f` is a text symbol of its own name (not a compiler clone).
    fn in_kallsyms(&self, f: &str) -> bool {
        self.kallsyms.lines().any(|l| {
            let mut it = l.split_whitespace();
            let _addr = it.next();
            matches!(it.next(), Some("t" | "T")) && it.next() == Some(f) && it.next().is_none()
        })
    }

    /// The address of symbol `n`.
    fn sym(&self, n: &str) -> Option<u64> {
        self.kallsyms.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let a = u64::from_str_radix(it.next()?, 16).ok()?;
            (it.nth(1)? == n).then_some(a)
        })
    }

    /// Prints where `func` is: its offset from _text (to find it in an unpacked
    /// vmlinux with objdump), and the compiler clones (.constprop, .isra, .part) the
    /// BTF may describe instead.
    fn print_location(&self, func: &str) {
        if let (Some(f), Some(t)) = (self.sym(func), self.sym("_text")) {
            fact(
                &format!("text_offset_{func}"),
                format!("{:#x}", f.wrapping_sub(t)),
            );
        }
        let clones: Vec<&str> = self
            .kallsyms
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
    }
}

/// hook -> expected mechanism, from the kernel's own facts.
pub fn expectations(btf_path: &Path, fentry_allowed: bool) -> BTreeMap<&'static str, &'static str> {
    let btf = match read_btf(btf_path) {
        Ok(b) => b,
        Err(e) => {
            fact("btf", format!("unreadable:{e}"));
            BtfFacts::default()
        }
    };
    for (m, offs) in &btf.members {
        fact(&format!("btf_offset_{m}"), format!("{offs:?}"));
    }
    let kernel = KernelFacts::gather();
    let mut expected = BTreeMap::new();
    for spec in &HOOK_SPECS {
        let mechanism = expect_hook(spec, &btf, &kernel, fentry_allowed);
        expected.insert(spec.hook, mechanism);
    }
    expected.insert(
        "idle_deaths",
        expect_idle_deaths(&btf, &kernel, fentry_allowed),
    );
    expected
}

/// The idle-death hook: fentry, else kprobes, on sk_error_report(sk) and
/// tcp_reset(sk, skb) (both with `sk` first in BTF, both attachable), else its raw
/// tracepoints (sock:inet_sk_error_report and tcp:tcp_receive_reset, on every kernel
/// of the matrix). Prints the facts and the `VMCHECK expect` line.
fn expect_idle_deaths(btf: &BtfFacts, kernel: &KernelFacts, fentry_allowed: bool) -> &'static str {
    let mut signature = true;
    let mut fentry = fentry_allowed;
    let mut kprobe = kernel.kprobe_pmu;
    for func in ["sk_error_report", "tcp_reset"] {
        let (btf_id, params) = btf.funcs.get(func).cloned().unwrap_or_default();
        fact(&format!("{func}_params"), format!("({})", params.join(",")));
        signature &= params.first().map(String::as_str) == Some("sk");
        let attached = if btf_id == 0 {
            Err("no BTF FUNC".to_owned())
        } else {
            try_fentry(btf_id)
        };
        fact(
            &format!("fentry_{func}"),
            attached
                .as_ref()
                .map_or_else(Clone::clone, |()| "ok".to_owned()),
        );
        fentry &= attached.is_ok();
        kprobe &= kernel.in_kallsyms(func);
        kernel.print_location(func);
    }
    let mechanism = if signature && fentry {
        "fentry"
    } else if signature && kprobe {
        "kprobe"
    } else {
        "tracepoint"
    };
    println!("VMCHECK expect hook=idle_deaths mechanism={mechanism} signature={signature}");
    mechanism
}

/// The mechanism `spec.hook` should get; prints the facts behind it and the
/// `VMCHECK expect` line.
fn expect_hook(
    spec: &HookSpec,
    btf: &BtfFacts,
    kernel: &KernelFacts,
    fentry_allowed: bool,
) -> &'static str {
    let (btf_id, signature) = signature(spec, btf);
    let fentry = if btf_id == 0 {
        Err("no BTF FUNC".to_owned())
    } else {
        try_fentry(btf_id)
    };
    fact(
        &format!("fentry_{}", spec.func),
        match &fentry {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.clone(),
        },
    );
    let kprobe = kernel.kprobe_pmu && kernel.in_kallsyms(spec.func);
    kernel.print_location(spec.func);
    let mechanism = if signature && fentry_allowed && fentry.is_ok() {
        "fentry"
    } else if signature && kprobe {
        "kprobe"
    } else if spec.hook == "timer_probes"
        || (btf.enumerators.contains_key(spec.enumerator) && kernel.send_reset_reason)
    {
        "tracepoint"
    } else {
        "tracepoint_timer_context"
    };
    println!(
        "VMCHECK expect hook={} mechanism={mechanism} signature={signature}",
        spec.hook
    );
    mechanism
}

/// (BTF id of the function, whether the kernel supports the hook's signature);
/// prints the parameters, the enumerator and a moved parameter.
fn signature(spec: &HookSpec, btf: &BtfFacts) -> (u32, bool) {
    let (func, param, param_idx) = (spec.func, spec.param, spec.param_idx);
    let (btf_id, params) = btf.funcs.get(func).cloned().unwrap_or_default();
    fact(&format!("{func}_params"), format!("({})", params.join(",")));
    let enum_value = btf.enumerators.get(spec.enumerator);
    fact(
        spec.enumerator,
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
    (btf_id, signature)
}

/// Loads `r0 = 0; exit` as an fentry program on BTF function `btf_id` and attaches it
/// (BPF_RAW_TRACEPOINT_OPEN), then closes both: whether fentry works on this kernel.
fn try_fentry(btf_id: u32) -> Result<(), String> {
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    let insns: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    let license = b"GPL\0";
    let mut attr = Attr::new();
    attr.u32(0, BPF_PROG_TYPE_TRACING)
        .u32(4, 2) // insn_cnt
        .ptr(8, insns.as_ptr())
        .ptr(16, license.as_ptr())
        .bytes(48, b"vmcheckfe")
        .u32(68, BPF_TRACE_FENTRY) // expected_attach_type
        .u32(108, btf_id); // attach_btf_id
    let prog = bpf_fd(BPF_PROG_LOAD, &mut attr).map_err(|e| format!("load: {e}"))?;
    let mut attr = Attr::new();
    attr.u32(8, prog.as_raw_fd() as u32); // raw_tracepoint.prog_fd (name = NULL)
    // Both descriptors close on return, detaching the program.
    bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
        .map(drop)
        .map_err(|e| format!("attach: {e}"))
}
