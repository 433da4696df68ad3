//! Test support: a private network namespace per test (`PREFIX-<pid>-<n>`,
//! deleted on drop, also when the test panics) and a way to run code
//! inside it, for the unit tests that drive real kernel sockets.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    /// `None` (and a SKIPPED message naming `what`) when not root.
    pub fn new(prefix: &str, what: &str) -> Option<TestNetns> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: {what} netns tests need root");
            return None;
        }
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        // From here on, Drop deletes the namespace whatever fails.
        Some(TestNetns { name })
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match crate::netlink::in_netns(&self.name, || Ok::<T, std::convert::Infallible>(f())) {
            Ok(Ok(v)) => v,
            Ok(Err(never)) => match never {},
            Err(e) => panic!("{e}"),
        }
    }

    /// `ip -n NS args...`, its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec NS args...`, its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd`, panics with its stderr unless it succeeds; its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
