#![forbid(unsafe_code)]
//! # director-tests — cross-crate integration tests (map of the crate)
//!
//! - `tests/lab/run`: boots Debian's stock kernel (IPVS as modules) in qemu
//!   and runs one command in a chroot of the host (see tests/lab/README.md).
//! - `tests/lab/suite`: builds the binaries and runs `tests/lab_ipvs.rs`
//!   inside one VM boot; `tests/lab/bench` runs the IPVS benchmark there.
//! - `tests/lab_ipvs.rs`: the IPVS integration tests (need root + IPVS; they
//!   are `#[ignore]`d on the host and fail, not skip, without IPVS).
//! - `src/bin/lab-bench.rs`: the 5,000 x 4 benchmark driver.
//! - `src/bin/health-bench.rs`: the health-check benchmark (10,000 TCP
//!   checks a second against local listeners: CPU and start spread).
//! - `src/netns.rs`: host network-namespace harness (`Netns`, `LbTopology`)
//!   for the VRRP / nftables / ctsync tests; `src/bin/echo-server.rs` and
//!   `src/bin/lb-client.rs` are the real servers and the client there;
//!   `tests/netns_harness.rs` tests the harness itself.
//! - `src/keepalived.rs`: keepalived in one of those namespaces, the peer of
//!   the VRRP interop tests and the yardstick of the takeover benchmark.
//! - `src/vrrp.rs`: helpers of the VRRP tests (`tests/vrrp_*.rs`): instance
//!   state from `directorctl vrrp --json`, addresses in a namespace,
//!   tcpdump captures.
//! - `src/bin/vrrp-bench.rs`: that benchmark (issue 4): takeover after
//!   `kill -9` and stability under CPU saturation, director and keepalived
//!   side by side, observed from outside (rtnetlink, AF_PACKET); not part
//!   of any test run (README "VRRP takeover").
//! - this file: helpers to run the real `director`/`directorctl`/`ipvsadm`
//!   binaries as a user would.

pub mod keepalived;
pub mod netns;
pub mod vrrp;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Directory with the `director` and `directorctl` binaries under test:
/// `$DIRECTOR_BIN_DIR`, else the profile directory of the running test
/// (`target/debug` for `cargo test --workspace`, which builds director's
/// binaries for its own integration tests; `target/release` in the lab),
/// else `target/release` next to this crate.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DIRECTOR_BIN_DIR") {
        return PathBuf::from(d);
    }
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
    match profile_dir {
        Some(d) if d.join("director").is_file() => d,
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"),
    }
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Runs a command, returns its output; panics with the command line and
/// both streams if it cannot be started.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd} {args:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout as text.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ipvsadm(args: &[&str]) -> String {
    ok("ipvsadm", args)
}

/// Polls `f` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `director run` child process with its own config and socket.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// `[global] router_id` written into the config.
    pub router_id: String,
    /// Network namespace the daemon runs in (`ip netns exec`); `None`: the
    /// test's own namespace.
    pub netns: Option<String>,
}

impl Daemon {
    /// Writes `config_body` (without `[global]`) plus a `[global]` table
    /// pointing the control socket into a temp dir, and starts the daemon.
    pub fn start(global_extra: &str, config_body: &str) -> Daemon {
        Daemon::start_with(None, "lab", global_extra, config_body)
    }

    /// Like [`Daemon::start`], but the daemon runs inside network namespace
    /// `ns` (the control socket is a path, so `ctl` works from anywhere)
    /// with `router_id`.
    pub fn start_in(
        ns: &netns::Netns,
        router_id: &str,
        global_extra: &str,
        config_body: &str,
    ) -> Daemon {
        Daemon::start_with(Some(ns.name()), router_id, global_extra, config_body)
    }

    fn start_with(
        netns: Option<&str>,
        router_id: &str,
        global_extra: &str,
        config_body: &str,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("director.sock");
        let config = dir.path().join("director.toml");
        let log = dir.path().join("director.log");
        let mut d = Daemon {
            child: None,
            dir,
            config,
            socket,
            log,
            router_id: router_id.to_owned(),
            netns: netns.map(str::to_owned),
        };
        d.rewrite_config(global_extra, config_body);
        d.spawn();
        d
    }

    /// (Re)starts the daemon process on the same config and waits until
    /// its control socket answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("director"));
                c
            }
            None => Command::new(bin("director")),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn director");
        self.child = Some(child);
        // Up (Ok) or exited (Err): no point waiting for a dead daemon.
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(Err(status));
            }
            let out = self.ctl(&["status", "--json"]);
            out.status.success().then_some(Ok(()))
        });
        match up {
            Some(Ok(())) => {}
            Some(Err(status)) => panic!(
                "director exited ({status}) before coming up; log:\n{}",
                self.log_text()
            ),
            None => panic!("director did not come up; log:\n{}", self.log_text()),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut all = vec!["--socket", self.socket.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        run(bin("directorctl").to_str().unwrap_or_default(), &all)
    }

    /// `directorctl ARGS` that must succeed; stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "directorctl {args:?} failed:\n{}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ctl_ok(&["status", "--json"])).expect("status --json is JSON")
    }

    pub fn rewrite_config(&self, global_extra: &str, config_body: &str) {
        let text = format!(
            "[global]\nrouter_id = \"{}\"\ncontrol_socket = \"{}\"\n{global_extra}\n{config_body}",
            self.router_id,
            self.socket.display()
        );
        let mut f = std::fs::File::create(&self.config).expect("config");
        f.write_all(text.as_bytes()).expect("write");
    }

    /// SIGTERM, as systemd stops it, and wait (at most 10 s) for it to
    /// exit; returns whether it exited.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let exited = wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten()).is_some();
        if !exited {
            let _ = c.kill();
            let _ = c.wait();
        }
        exited
    }

    /// SIGKILL, no cleanup: what a crash looks like.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first: the daemon leaves the table in place either way.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            if wait_for(Duration::from_secs(5), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
