//! systemd's notify protocol (sd_notify(3)) through the sd-notify crate: READY=1 with a
//! STATUS once everything is attached, WATCHDOG=1 pings, STOPPING=1 when shutting down.
//! Without $NOTIFY_SOCKET every call is a no-op, so the daemon runs the same outside
//! systemd.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends one notification; failures are logged, never fatal.
fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify {what} failed: {e}");
    }
}

/// READY=1 and a status line for `systemctl status`.
pub fn ready(status: &str) {
    send(
        "READY=1",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// One watchdog ping.
pub fn watchdog() {
    send("WATCHDOG=1", &[NotifyState::Watchdog]);
}

/// STOPPING=1: the daemon is detaching and will exit (systemd then waits for the exit
/// instead of treating the unit as running).
pub fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

/// Half the watchdog timeout systemd expects pings within ($WATCHDOG_USEC), if it
/// asked for any (and, when $WATCHDOG_PID is set, asked this process).
pub fn watchdog_interval() -> Option<Duration> {
    half_of(sd_notify::watchdog_enabled())
}

/// A zero timeout means no watchdog (and would make a zero-length interval).
fn half_of(timeout: Option<Duration>) -> Option<Duration> {
    timeout.filter(|t| !t.is_zero()).map(|t| t / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_come_at_half_the_timeout_and_never_for_zero() {
        assert_eq!(
            half_of(Some(Duration::from_secs(1))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(half_of(Some(Duration::ZERO)), None);
        assert_eq!(half_of(None), None);
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        // cargo test does not run under systemd: $NOTIFY_SOCKET is unset here.
        assert!(std::env::var_os("NOTIFY_SOCKET").is_none());
        assert!(sd_notify::notify(&[NotifyState::Ready]).is_ok());
        ready("watching 0 interface(s)");
        stopping();
    }
}
