//! The idle-death hook (keepalive-ebpf/src/idle_death*.rs) and the ring buffer its
//! endings and the keepalive timeouts arrive on.
//!
//! The hook's mechanism is chosen like the other socket hooks' (sockhooks/choice.rs:
//! fentry on sk_error_report() and tcp_reset(), then kprobes on them, then the raw
//! tracepoints sock:inet_sk_error_report and tcp:tcp_receive_reset; --hooks.disable;
//! one summary line; keepalive_daemon_hook_info{hook="idle_deaths"}), but later, once
//! the inventory has measured HZ. To tell a retransmission give-up from a keepalive
//! timeout it needs the keepalive timer's context, so the timer_expire_entry/exit
//! programs are attached first, whatever the mechanism, when the timer-probes hook did
//! not already attach them.

use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
    programs::RawTracePoint,
};
use keepalive_common::{audit::Ending, audit_config::IdleDeathParams};
use tokio::io::{Interest, unix::AsyncFd};

use super::{AuditKernelError, IdleDeathSetup, offsets};
use crate::{
    cli::HookMechanism,
    kernel::btf::KernelBtf,
    sockhooks::{Hook, LateChoice, sockconfig},
};

const PARAMS_MAP: &str = "IDLE_DEATH_PARAMS";
const ENDINGS_MAP: &str = "ENDINGS";

/// The attached idle-death hook and the ring buffer its endings (and the keepalive
/// timeouts) arrive on.
pub struct IdleDeaths {
    endings: Option<EndingsReader>,
    mechanism: Option<HookMechanism>,
    /// Why the better mechanisms were not taken (each refusal in full).
    rejected: Vec<String>,
}

impl IdleDeaths {
    /// [`IdleDeaths::attach_with`] with every mechanism allowed and nothing exported
    /// (the choice is still logged).
    pub fn attach(
        ebpf: &mut Ebpf,
        btf: &KernelBtf,
        setup: IdleDeathSetup,
    ) -> Result<IdleDeaths, AuditKernelError> {
        Self::attach_with(ebpf, btf, setup, LateChoice::default())
    }

    /// Writes the HZ-dependent parameters, attaches the timer-context programs if
    /// needed, chooses and attaches the hook's mechanism (logged and exported through
    /// `late`), and opens the ring buffer. A hook that gets no mechanism is no error:
    /// the ring buffer still carries the keepalive timeouts' endings, and
    /// [`IdleDeaths::mechanism`] says `None`. Must run inside a tokio runtime (the
    /// reader registers with its reactor), and after sockhooks::attach: that one loads
    /// the timer programs itself when it chooses them, and fails on a program already
    /// loaded. `btf` must be the BTF the object's SOCK_CONFIG was resolved from.
    pub fn attach_with(
        ebpf: &mut Ebpf,
        btf: &KernelBtf,
        setup: IdleDeathSetup,
        late: LateChoice<'_>,
    ) -> Result<IdleDeaths, AuditKernelError> {
        offsets::resolve(btf).map_err(|source| AuditKernelError::Layout { source })?;
        let params = IdleDeathParams::new(setup.hz, setup.min_idle.as_millis() as u64);
        let map = ebpf
            .map_mut(PARAMS_MAP)
            .ok_or(AuditKernelError::MissingMap { name: PARAMS_MAP })?;
        let mut array: Array<_, IdleDeathParams> =
            Array::try_from(map).map_err(|source| AuditKernelError::Map {
                name: PARAMS_MAP,
                source,
            })?;
        array
            .set(0, &params, 0)
            .map_err(|source| AuditKernelError::Map {
                name: PARAMS_MAP,
                source,
            })?;
        // Every failure comes before the hook's choice, which is logged and exported
        // once: a caller that gets an error says itself that the hook is off.
        let endings = EndingsReader::open(ebpf)?;
        // Before the hook: an ETIMEDOUT it sees must already find the timer context.
        let mut ours = Vec::new();
        attach_raw(ebpf, "ka_timer_entry", "timer_expire_entry", &mut ours)?;
        // ka_timer_exit (which also counts probes) clears the slot just as well.
        if !loaded(ebpf, "ka_timer_exit") {
            attach_raw(ebpf, "ka_timer_exit_ctx", "timer_expire_exit", &mut ours)?;
        }
        let prereq = sockconfig::idle_death_prerequisites(btf);
        let choice = late.attach(ebpf, Hook::IdleDeaths, &prereq);
        if choice.chosen.is_none() {
            // The timer programs run for every kernel timer: not for nothing.
            for prog in ours {
                if let Some(aya::programs::Program::RawTracePoint(p)) = ebpf.program_mut(prog) {
                    let _ = p.unload();
                }
            }
        }
        let rejected = choice
            .rejected
            .iter()
            .map(|r| format!("{}: {}", r.mechanism.label(), r.detail))
            .collect();
        Ok(IdleDeaths {
            endings: Some(endings),
            mechanism: choice.chosen,
            rejected,
        })
    }

    /// The mechanism the hook attached with; `None`: idle deaths are not counted.
    pub fn mechanism(&self) -> Option<HookMechanism> {
        self.mechanism
    }

    /// Why each better mechanism was not taken, in full (the log has them at debug).
    pub fn rejections(&self) -> &[String] {
        &self.rejected
    }

    /// The reader of endings; `None` once taken.
    pub fn take_endings(&mut self) -> Option<EndingsReader> {
        self.endings.take()
    }
}

fn loaded(ebpf: &Ebpf, prog: &str) -> bool {
    ebpf.program(prog).is_some_and(|p| p.fd().is_ok())
}

/// Loads and attaches a raw tracepoint program unless it is already (sockhooks'
/// choice attaches the timer programs when they count probes); adds it to `ours` if
/// this call attached it.
fn attach_raw(
    ebpf: &mut Ebpf,
    prog: &'static str,
    tp: &str,
    ours: &mut Vec<&'static str>,
) -> Result<(), AuditKernelError> {
    if loaded(ebpf, prog) {
        return Ok(());
    }
    let what = prog;
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or(AuditKernelError::MissingProgram { name: prog })?
        .try_into()
        .map_err(|source| AuditKernelError::Program { what, source })?;
    p.load()
        .map_err(|source| AuditKernelError::Program { what, source })?;
    p.attach(tp)
        .map_err(|source| AuditKernelError::Program { what, source })?;
    ours.push(prog);
    Ok(())
}

/// Reads [`Ending`]s from the kernel's ring buffer.
pub struct EndingsReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EndingsReader {
    fn open(ebpf: &mut Ebpf) -> Result<EndingsReader, AuditKernelError> {
        let map = ebpf
            .take_map(ENDINGS_MAP)
            .ok_or(AuditKernelError::MissingMap { name: ENDINGS_MAP })?;
        let ring = RingBuf::try_from(map).map_err(|source| AuditKernelError::Map {
            name: ENDINGS_MAP,
            source,
        })?;
        // SAFETY: the AsyncFd owns the ring buffer from here on; its map fd stays the
        // same open descriptor until the RingBuf is dropped with it.
        let ring =
            unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| {
                AuditKernelError::Endings {
                    source: e.into_parts().1,
                }
            })?;
        Ok(EndingsReader { ring })
    }

    /// Waits for endings and returns those available (at least one).
    pub async fn next_batch(&mut self) -> Result<Vec<Ending>, AuditKernelError> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|source| AuditKernelError::Endings { source })?;
            let ring = guard.get_inner_mut();
            let mut out = Vec::new();
            while let Some(item) = ring.next() {
                if let Some(e) = parse(&item) {
                    out.push(e);
                }
            }
            guard.clear_ready();
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Ending> {
    if bytes.len() < std::mem::size_of::<Ending>() {
        return None;
    }
    // SAFETY: Ending is repr(C) plain integers (Pod); the length was checked and
    // read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
