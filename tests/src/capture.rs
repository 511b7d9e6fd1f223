//! Packet captures with tshark inside a namespace, analysed afterwards.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::thread;
use std::time::Instant;

use crate::netns::Netns;
use crate::process::{TempDir, kill_and_reap, read_lossy, run_checked, send_signal, wait_timeout};
use crate::timing::{CAPTURE_START_TIMEOUT, CAPTURE_STOP_TIMEOUT, CAPTURE_WARMUP, POLL_INTERVAL};

/// A tshark capture of the TCP traffic of one interface into a temporary
/// pcapng file. Stop it with [`Capture::stop`], then query it with
/// [`Capture::count`]. Killed on drop if still running.
#[derive(Debug)]
pub struct Capture<'ns> {
    ns: &'ns Netns,
    iface: String,
    child: Option<Child>,
    pcap: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl<'ns> Capture<'ns> {
    /// Starts capturing on `iface` in `ns` and returns once tshark reports
    /// that it is capturing.
    pub fn start(ns: &'ns Netns, iface: &str) -> Capture<'ns> {
        let dir = TempDir::new("capture");
        let pcap = dir.join("capture.pcapng");
        let log = dir.join("tshark.log");
        let log_file = File::create(&log).expect("create tshark log");
        let stdout = log_file.try_clone().expect("clone tshark log");
        let child = ns
            .command("tshark")
            .args(["-n", "-i", iface, "-f", "tcp", "-w"])
            .arg(&pcap)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning tshark: {e}"));
        let mut capture = Capture {
            ns,
            iface: iface.to_owned(),
            child: Some(child),
            pcap,
            log,
            _dir: dir,
        };
        capture.wait_started();
        capture
    }

    fn wait_started(&mut self) {
        let deadline = Instant::now() + CAPTURE_START_TIMEOUT;
        loop {
            let log = read_lossy(&self.log);
            if log.contains("Capturing on") {
                thread::sleep(CAPTURE_WARMUP);
                return;
            }
            let child = self.child.as_mut().expect("tshark child");
            if let Some(status) = child.try_wait().expect("try_wait tshark") {
                panic!("tshark on {} exited early ({status}):\n{log}", self.iface);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                panic!(
                    "tshark on {} in {} not capturing after {CAPTURE_START_TIMEOUT:?}:\n{log}",
                    self.iface,
                    self.ns.name()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the capture cleanly (SIGINT, bounded wait) so the file is complete.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(&child, libc::SIGINT);
        let Some(status) = wait_timeout(&mut child, CAPTURE_STOP_TIMEOUT) else {
            kill_and_reap(&mut child);
            panic!(
                "tshark still running {CAPTURE_STOP_TIMEOUT:?} after SIGINT:\n{}",
                read_lossy(&self.log)
            );
        };
        assert!(
            status.success(),
            "tshark exited with {status}:\n{}",
            read_lossy(&self.log)
        );
    }

    /// Number of captured frames matching the display filter `filter`
    /// (e.g. `tcp.analysis.keep_alive_ack && ip.src == 192.0.2.2`).
    pub fn count(&self, filter: &str) -> u64 {
        let listing = self.fields(filter, &["frame.number"]);
        listing.lines().filter(|l| !l.trim().is_empty()).count() as u64
    }

    /// Tab-separated `fields` of the frames matching `filter`, one per line.
    pub fn fields(&self, filter: &str, fields: &[&str]) -> String {
        assert!(self.child.is_none(), "stop the capture before reading it");
        let mut cmd = std::process::Command::new("tshark");
        cmd.args(["-n", "-r"])
            .arg(&self.pcap)
            .args(["-Y", filter, "-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        run_checked(cmd, None)
    }

    /// Every TCP segment of the capture, decoded (see [`crate::answers::decode`]).
    pub fn segments(&self) -> Vec<crate::answers::Seg> {
        assert!(self.child.is_none(), "stop the capture before reading it");
        crate::answers::decode(&self.pcap)
    }

    /// Probes and their answers matched from the TCP rules ([`crate::answers`]).
    pub fn answers(&self) -> crate::answers::Answers {
        crate::answers::Answers::match_segments(&self.segments())
    }

    /// A human-readable summary of the frames matching `filter`, for messages.
    pub fn summary(&self, filter: &str) -> String {
        self.fields(
            filter,
            &[
                "frame.number",
                "frame.time_relative",
                "ip.src",
                "ipv6.src",
                "tcp.srcport",
                "tcp.dstport",
                "tcp.flags.str",
                "tcp.seq",
                "tcp.ack",
                "tcp.len",
                "tcp.window_size_value",
                "_ws.expert.message",
            ],
        )
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            send_signal(child, libc::SIGINT);
            if wait_timeout(child, CAPTURE_STOP_TIMEOUT).is_none() {
                kill_and_reap(child);
            }
        }
    }
}
