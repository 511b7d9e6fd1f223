//! Running helper commands with a time bound, and scratch directories.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::timing::{COMMAND_TIMEOUT, POLL_INTERVAL};

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let _ = write!(s, " {}", arg.to_string_lossy());
    }
    s
}

/// Waits for `child` for at most `timeout`. Returns `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Sends `signal` to `child` (if it has not been reaped yet).
pub fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet, so
    // it cannot have been recycled.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Kills `child` with SIGKILL and reaps it; never blocks for long.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.kill();
    let _ = wait_timeout(child, Duration::from_secs(5));
}

/// Runs `cmd` to completion (bounded by [`COMMAND_TIMEOUT`]) and returns its
/// output whatever the exit status. Panics if it cannot be run or hangs.
pub fn run_output(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    let what = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input)
            .unwrap_or_else(|e| panic!("writing stdin of `{what}`: {e}"));
    }
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_timeout(&mut child, COMMAND_TIMEOUT) else {
        kill_and_reap(&mut child);
        panic!("`{what}` did not finish within {COMMAND_TIMEOUT:?}");
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs `cmd`, panics unless it exits 0, returns its stdout.
pub fn run_checked(cmd: Command, stdin: Option<&[u8]>) -> String {
    let what = describe(&cmd);
    let out = run_output(cmd, stdin);
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds a [`Command`] from an argv slice.
pub fn command<S: AsRef<OsStr>>(argv: &[S]) -> Command {
    let (program, args) = argv.split_first().expect("non-empty argv");
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Runs `argv` in the current namespaces, panics unless it exits 0.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> String {
    run_checked(command(argv), None)
}

/// A scratch directory under the system temp dir (tempfile: unique name, mode 0700),
/// removed on drop; kept if `KEEPALIVE_TEST_KEEP_ARTIFACTS` is set, which helps
/// debugging captures.
#[derive(Debug)]
pub struct TempDir {
    /// Always `Some` until drop.
    dir: Option<tempfile::TempDir>,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kat-{tag}-"))
            .tempdir()
            .unwrap_or_else(|e| {
                panic!(
                    "creating a kat-{tag}-* directory in {}: {e}",
                    std::env::temp_dir().display()
                )
            });
        TempDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("live TempDir").path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        if std::env::var_os("KEEPALIVE_TEST_KEEP_ARTIFACTS").is_some() {
            eprintln!("keeping {}", dir.keep().display());
        }
        // Otherwise tempfile's own drop removes it.
    }
}

/// Reads a (log) file for a panic message; never fails.
pub fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}
