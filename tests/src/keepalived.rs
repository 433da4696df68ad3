//! keepalived (the Debian package) as a peer or a yardstick: started inside
//! one of our namespaces with its own config, pid files and log in a temp
//! dir, so several can run side by side without touching the host's
//! `/run/keepalived*.pid`.
//!
//! keepalived forks: a parent that only watches, and a VRRP child (`-P`
//! runs no checker child) that owns the sockets and the VIPs. A crash is
//! therefore modelled as `SIGKILL` to every keepalived process of the
//! instance, the VRRP child first ([`Keepalived::kill9`]); killing the
//! parent alone would let the child see its parent die and stop cleanly
//! with priority 0, which is not what a dead box does.

use crate::netns::Netns;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of the keepalived binary (`$KEEPALIVED`, else `/usr/sbin/keepalived`).
pub fn binary() -> PathBuf {
    std::env::var_os("KEEPALIVED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/keepalived"))
}

/// One keepalived instance running in a namespace; stopped on drop
/// (SIGTERM, then SIGKILL after 5 s).
#[derive(Debug)]
pub struct Keepalived {
    child: Option<Child>,
    dir: tempfile::TempDir,
    netns: String,
}

impl Keepalived {
    /// Writes `conf` and starts `keepalived -n -l -D -P` in `ns`. Does not
    /// wait for any state; poll the namespace's addresses for that.
    pub fn start_in(ns: &Netns, conf: &str) -> Keepalived {
        let dir = tempfile::Builder::new()
            .prefix("dt-keepalived-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("keepalived.conf"), conf).expect("write keepalived.conf");
        let mut k = Keepalived {
            child: None,
            dir,
            netns: ns.name().to_owned(),
        };
        k.spawn();
        k
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)starts keepalived on the same config (after [`Keepalived::kill9`]
    /// or [`Keepalived::terminate`]).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("keepalived.log"))
            .expect("keepalived.log");
        let err = log.try_clone().expect("log fd");
        // Stale pid files from a killed run would make keepalived refuse
        // to start ("daemon is already running").
        for f in ["keepalived.pid", "vrrp.pid", "checkers.pid"] {
            let _ = std::fs::remove_file(self.file(f));
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(binary())
            // No fork to background, log to stderr, detailed, VRRP only,
            // and not to syslog as well: without /dev/log (these hosts
            // have none) glibc's syslog falls back to /dev/console, here
            // a serial console, which costs ~1.5 ms per line and blocks
            // keepalived outright when the console's buffer is full.
            .args(["-n", "-l", "-D", "-P", "-G", "-f"])
            .arg(self.file("keepalived.conf"))
            .arg("-p")
            .arg(self.file("keepalived.pid"))
            .arg("-r")
            .arg(self.file("vrrp.pid"))
            .arg("-c")
            .arg(self.file("checkers.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
    }

    /// Everything keepalived logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("keepalived.log")).unwrap_or_default()
    }

    /// Directory with the config, pid files and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pid of the VRRP child, once it has written its pid file.
    pub fn vrrp_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.file("vrrp.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILL to the VRRP child and the parent: a crash, nothing released.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.vrrp_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs keepalived: the child is its parent.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM as systemd stops it (masters send priority 0); waits at
    /// most 5 s, then SIGKILL. Returns whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let exited =
            crate::wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_some();
        if !exited {
            self.kill9_pid_file();
            let _ = c.kill();
            let _ = c.wait();
        }
        exited
    }

    fn kill9_pid_file(&self) {
        if let Some(pid) = self.vrrp_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.terminate();
    }
}
