//! What the demo creates on the host, and how it is all removed again:
//! network namespaces ([`Netns`]), child processes ([`Proc`]) and a
//! scratch directory ([`ScratchDir`]).
//!
//! Each of them is a Drop guard *and* an entry in one process-wide
//! registry. The guards clean up on every ordinary path (success, `?`,
//! panic unwinding); the registry exists for the paths that never unwind:
//! Ctrl-C or SIGTERM arrive while the main thread is blocked in a
//! `read(2)`, so [`install_signal_cleanup`] runs [`cleanup_all`] from a
//! signal-watching thread and exits.

use super::{DemoError, Result};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Registry {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: Vec::new(),
    pids: Vec::new(),
    dirs: Vec::new(),
});
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock must not stop the cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tag unique on this host for the life of this process:
/// `<pid>-<counter>` (tests build several topologies at once).
pub fn unique_tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Kills every registered process and every process in a registered
/// namespace, deletes the namespaces and the scratch directories. Safe to
/// call more than once and from any thread.
pub fn cleanup_all() {
    let (pids, namespaces, dirs) = {
        let mut r = registry();
        (
            std::mem::take(&mut r.pids),
            std::mem::take(&mut r.namespaces),
            std::mem::take(&mut r.dirs),
        )
    };
    for pid in pids {
        kill(pid, "KILL");
    }
    for ns in namespaces {
        remove_namespace(&ns);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// On SIGINT/SIGTERM/SIGHUP: [`cleanup_all`], then exit 130 (the shell's
/// code for "interrupted"). The main thread may be blocked anywhere, so the
/// cleanup cannot wait for it to unwind.
pub fn install_signal_cleanup() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DemoError::new(format!("cannot start the signal watcher: {e}")))?;
    // Registered here, before returning, so that a Ctrl-C right after
    // this call is already ours and not the default (die, leak).
    let (mut int, mut term, mut hup) = rt
        .block_on(async {
            Ok::<_, std::io::Error>((
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            ))
        })
        .map_err(|e| DemoError::new(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    std::thread::spawn(move || {
        let name = rt.block_on(async {
            tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            }
        });
        eprintln!("\ndirector demo: {name}: removing the namespaces and processes it created");
        cleanup_all();
        std::process::exit(130);
    });
    Ok(())
}

fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Pids of the processes in namespace `name` (`ip netns pids`).
pub fn namespace_pids(name: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_namespace(name: &str) {
    // Everything running in a namespace of ours was started by us.
    for _ in 0..5 {
        let pids = namespace_pids(name);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            kill(pid, "KILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match Command::new("ip").args(["netns", "del", name]).output() {
        Ok(o) if !o.status.success() => eprintln!(
            "director demo: cannot delete network namespace {name}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("director demo: cannot run `ip netns del {name}`: {e}"),
        Ok(_) => {}
    }
}

fn describe(program: &OsStr, args: &[&str]) -> String {
    let mut s = program.to_string_lossy().into_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Checks an [`Output`]; on failure the error names the command and
/// carries its stderr.
pub fn checked(what: &str, out: std::io::Result<Output>) -> Result<String> {
    let out = out.map_err(|e| DemoError::new(format!("cannot run `{what}`: {e}")))?;
    if !out.status.success() {
        return Err(DemoError::new(format!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program args`; it must succeed. Stdout.
pub fn run(program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
    let program = program.as_ref();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output();
    checked(&describe(program, args), out)
}

/// One network namespace, registered for cleanup; deleted (after killing
/// every process in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up. It must not exist:
    /// an existing one is someone else's.
    pub fn create(name: &str) -> Result<Netns> {
        run("ip", &["netns", "add", name])?;
        registry().namespaces.push(name.to_owned());
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`; must succeed. Stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `ip netns exec NAME program`, to add arguments to and run.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` inside the namespace; must succeed. Stdout.
    pub fn exec(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Result<String> {
        let program = program.as_ref();
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output();
        checked(
            &format!("ip netns exec {} {}", self.name, describe(program, args)),
            out,
        )
    }

    /// Sets sysctls inside the namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let kv: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-q", "-w"];
        args.extend(kv.iter().map(String::as_str));
        self.exec("sysctl", &args).map(|_| ())
    }

    /// Whether `addr` (`"192.0.2.100/32"`) is on `dev`.
    pub fn has_addr(&self, dev: &str, addr: &str) -> bool {
        let Ok(text) = self.ip(&["-o", "addr", "show", "dev", dev]) else {
            return false;
        };
        text.lines().any(|l| {
            let mut words = l.split_whitespace();
            words.any(|w| w == "inet" || w == "inet6") && words.next() == Some(addr)
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let registered = {
            let mut r = registry();
            let before = r.namespaces.len();
            r.namespaces.retain(|n| n != &self.name);
            before != r.namespaces.len()
        };
        // Not registered: the signal thread already removed it.
        if registered {
            remove_namespace(&self.name);
        }
    }
}

/// A child process, registered for cleanup; SIGKILLed and reaped on drop.
/// Its stdout is read line by line on a thread ([`Proc::line`]).
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    lines: Receiver<String>,
    label: String,
    log: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` with stdout piped to [`Proc::line`] and stderr
    /// appended to `log` (or discarded).
    pub fn spawn(mut cmd: Command, label: &str, log: Option<&Path>) -> Result<Proc> {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| DemoError::new(format!("cannot open {}: {e}", path.display())))?,
            ),
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| DemoError::new(format!("cannot start {label}: {e}")))?;
        registry().pids.push(child.id());
        let (tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Proc {
            child: Some(child),
            lines,
            label: label.to_owned(),
            log: log.map(Path::to_path_buf),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The next stdout line, or `None` after `timeout` or at EOF.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits until the process prints `want` on a line of its own.
    pub fn wait_for_line(&mut self, want: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(DemoError::new(format!(
                    "{} exited ({status}) before printing {want:?}{}",
                    self.label,
                    self.log_tail()
                )));
            }
            match self.line(Duration::from_millis(100)) {
                Some(l) if l.trim() == want => return Ok(()),
                _ if Instant::now() >= end => {
                    return Err(DemoError::new(format!(
                        "{} did not print {want:?} within {timeout:?}{}",
                        self.label,
                        self.log_tail()
                    )))
                }
                _ => {}
            }
        }
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of its log, as " (last log lines: ...)".
    pub fn log_tail(&self) -> String {
        let Some(text) = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
        else {
            return String::new();
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last log lines:\n  {tail}")
        }
    }

    fn unregister(&self, pid: u32) {
        registry().pids.retain(|p| *p != pid);
    }

    /// SIGKILL (what a crash looks like) and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.unregister(c.id());
        }
    }

    /// SIGTERM (a clean stop), wait up to `limit`, then SIGKILL. Whether
    /// it exited by itself.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        kill(c.id(), "TERM");
        let end = Instant::now() + limit;
        let mut clean = false;
        while Instant::now() < end {
            if c.try_wait().ok().flatten().is_some() {
                clean = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !clean {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unregister(c.id());
        clean
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh directory under the system temp dir, registered for cleanup;
/// removed with its contents on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn create(label: &str) -> Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("{label}-{}", unique_tag()));
        std::fs::create_dir(&path)
            .map_err(|e| DemoError::new(format!("cannot create {}: {e}", path.display())))?;
        registry().dirs.push(path.clone());
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        registry().dirs.retain(|d| d != &self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
