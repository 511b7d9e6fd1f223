//! Why a socket hook's mechanism was not used: a short form for the one-line summary
//! (the errno a refusal ended with, by name) and the whole error chain for debug level.

use aya::programs::{KProbeError, ProgramError};

use super::{AttachError, Mechanism};
use crate::error_chain::Chain;

/// Why one mechanism of a hook was not used.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub mechanism: Mechanism,
    /// For the summary line: "refused by the kernel: EPERM".
    pub short: String,
    /// The whole story (error chain, verifier output), for debug level.
    pub detail: String,
}

impl Rejection {
    pub(super) fn new(mechanism: Mechanism, short: String, detail: String) -> Rejection {
        Rejection {
            mechanism,
            short,
            detail,
        }
    }

    pub(super) fn attach_failed(mechanism: Mechanism, e: &AttachError) -> Rejection {
        let short = match (file_of(e), os_error(e)) {
            // aya reads a sysfs file first (the kprobe PMU's type): not the kernel's
            // refusal of the program, a missing facility.
            (Some(file), Some(errno)) => {
                format!("failed: {} on {}", errno_name(errno), file.display())
            }
            (None, Some(errno)) => format!("refused by the kernel: {}", errno_name(errno)),
            (_, None) => format!("failed: {e}"),
        };
        Rejection::new(mechanism, short, Chain(e).to_string())
    }
}

/// The errors of `e`'s chain of causes, `e` first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The file aya failed on, if the failure was a file operation (kprobe's sysfs files).
fn file_of(e: &(dyn std::error::Error + 'static)) -> Option<std::path::PathBuf> {
    chain(e).find_map(|e| match e.downcast_ref::<ProgramError>()? {
        ProgramError::KProbeError(KProbeError::FileError { filename, .. }) => {
            Some(filename.clone())
        }
        _ => None,
    })
}

/// The errno of the first OS error in `e`'s chain of causes.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    chain(e).find_map(|e| e.downcast_ref::<std::io::Error>()?.raw_os_error())
}

/// The symbolic name of the errors a load or attach returns, as operators search for
/// them (no crate in the tree names errnos; a dozen entries do not earn a dependency).
fn errno_name(code: i32) -> String {
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::E2BIG => "E2BIG",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // The kernel-internal ENOTSUPP that bpf(2) lets through.
        524 => "ENOTSUPP",
        _ => return format!("errno {code}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sysfs_file_is_not_called_a_refusal() {
        let e = AttachError::AttachKprobe {
            prog: "ka_wakeup_kp",
            func: "tcp_write_wakeup",
            source: ProgramError::KProbeError(KProbeError::FileError {
                filename: "/sys/bus/event_source/devices/kprobe/type".into(),
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            }),
        };
        assert_eq!(
            Rejection::attach_failed(Mechanism::Kprobe, &e).short,
            "failed: ENOENT on /sys/bus/event_source/devices/kprobe/type"
        );
    }

    #[test]
    fn errors_without_an_errno_keep_their_message() {
        let r = Rejection::attach_failed(
            Mechanism::Fentry,
            &AttachError::MissingProgram { name: "ka_x" },
        );
        assert_eq!(r.short, "failed: program ka_x missing from the eBPF object");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
