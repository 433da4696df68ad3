//! Host network-namespace harness: throw-away namespaces and a load-balancer
//! topology built from veth pairs and bridges, all inside namespaces this
//! module creates (nothing is added to the root namespace).
//!
//! Every namespace has a unique name `dt-<role>-<pid>-<counter>`; it is
//! deleted, and every process still running in it is killed, when its
//! [`Netns`] is dropped — also while a panicking test unwinds.
//!
//! Layout of [`LbTopology`] (default: 1 director, 3 real servers):
//!
//! ```text
//!                 hub namespace: bridges brc (client LAN), brs (server LAN)
//!   client  eth0 --brc-- eth0 director i eth1 --brs-- eth0 real server j
//!   198.51.100.2         198.51.100.(10+i)  203.0.113.(10+i)  203.0.113.(21+j)
//!   2001:db8:c::2        2001:db8:c::(10+i) 2001:db8:5::(10+i) 2001:db8:5::(21+j)
//!   default routes       forwarding on      + gateway          default routes via
//!   via director v       (v4 + v6)          203.0.113.1        the gateway
//!                                           2001:db8:5::1
//! ```
//!
//! (`10+i` and `21+j` are written in decimal digits in IPv6 too: director 0
//! has `2001:db8:c::10`.) The client's default routes — hence the VIPs and the
//! server LAN — go via director [`LbTopology::vip_director`]; the gateway
//! address sits on director [`LbTopology::gateway_director`]. Both start at 0.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Prefix of every namespace name this module creates.
pub const PREFIX: &str = "dt-";

/// A fresh name `dt-<role>-<pid>-<counter>`, unique on this host for the
/// life of this process.
pub fn unique_name(role: &str) -> String {
    format!(
        "{PREFIX}{role}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Names of all network namespaces on the host (`ip netns list`).
pub fn list_namespaces() -> Vec<String> {
    let out = crate::ok("ip", &["netns", "list"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Path of a helper binary of this crate (`echo-server`, `lb-client`):
/// `$CARGO_BIN_EXE_<name>` if set at run time, else next to the running
/// test executable's `deps/` directory (where cargo puts the package's
/// binaries), else [`crate::bin_dir`]. Integration tests can also use
/// `env!("CARGO_BIN_EXE_<name>")` directly.
pub fn tool(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(PathBuf::from);
        if dir.as_ref().and_then(|d| d.file_name()) == Some(OsStr::new("deps")) {
            dir = dir.and_then(|d| d.parent().map(PathBuf::from));
        }
        if let Some(d) = dir {
            let p = d.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    crate::bin(name)
}

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One network namespace, deleted on drop after killing every process in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `dt-<role>-<pid>-<n>` with its loopback up. Panics if it
    /// cannot (needs root).
    pub fn new(role: &str) -> Netns {
        let name = unique_name(role);
        crate::ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program` — add arguments, stdio and spawn/run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` inside the namespace; its output, whatever the
    /// exit status.
    pub fn output(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref();
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program:?} {args:?} in {}: {e}", self.name))
    }

    /// Runs `program args` inside the namespace; it must succeed. Stdout.
    pub fn exec(&self, program: impl AsRef<OsStr>, args: &[&str]) -> String {
        let program = program.as_ref();
        let out = self.output(program, args);
        check(&format!("{program:?} {args:?} in {}", self.name), out)
    }

    /// `ip -n NAME ARGS`, must succeed. Stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        let out = crate::run("ip", &all);
        check(&format!("ip {all:?}"), out)
    }

    /// Sets sysctls (`net.ipv4.ip_forward`, ...) inside the namespace.
    pub fn sysctl(&self, settings: &[(&str, &str)]) {
        let kv: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["-q", "-w"];
        args.extend(kv.iter().map(String::as_str));
        self.exec("sysctl", &args);
    }

    /// Reads one sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> String {
        self.exec("sysctl", &["-n", key]).trim().to_owned()
    }

    /// Starts `program args` inside the namespace with piped stdin, stdout
    /// (line by line, see [`NsChild::line`]) and stderr (collected, see
    /// [`NsChild::stderr_text`]). Killed when the `NsChild` or this
    /// namespace is dropped.
    pub fn spawn(&self, program: impl AsRef<OsStr>, args: &[&str]) -> NsChild {
        let program = program.as_ref();
        let label = format!("{program:?} {args:?} in {}", self.name);
        let mut cmd = self.command(program);
        cmd.args(args);
        NsChild::spawn(cmd, label)
    }

    /// Pids of the processes in this namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        crate::run("ip", &["netns", "pids", &self.name])
            .stdout
            .split(|b| b.is_ascii_whitespace())
            .filter_map(|w| std::str::from_utf8(w).ok()?.parse().ok())
            .collect()
    }

    /// MAC address of `dev` inside the namespace.
    pub fn mac(&self, dev: &str) -> String {
        let path = format!("/sys/class/net/{dev}/address");
        self.exec("cat", &[&path]).trim().to_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Everything in a namespace of ours was started by this harness.
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if let Ok(o) = out {
            if !o.status.success() {
                eprintln!(
                    "netns: cannot delete {}: {}",
                    self.name,
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// A child process started by [`Netns::spawn`]; killed on drop.
#[derive(Debug)]
pub struct NsChild {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    label: String,
}

impl NsChild {
    fn spawn(mut cmd: Command, label: String) -> NsChild {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {label}: {e}"));
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
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        NsChild {
            child,
            stdin,
            lines,
            stderr,
            label,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` after `timeout` or at EOF.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next stdout line; panics (with the child's stderr) if none comes
    /// within `timeout`.
    pub fn expect_line(&self, timeout: Duration) -> String {
        self.line(timeout).unwrap_or_else(|| {
            panic!(
                "no output line from {} within {timeout:?}; stderr:\n{}",
                self.label,
                self.stderr_text()
            )
        })
    }

    /// Skips stdout lines until one equals `want`; panics after `timeout`.
    pub fn wait_for_line(&self, want: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.line(left) {
                Some(l) if l.trim() == want => return,
                Some(_) => {}
                None => panic!(
                    "{} did not print {want:?} within {timeout:?}; stderr:\n{}",
                    self.label,
                    self.stderr_text()
                ),
            }
        }
    }

    /// Writes `line` plus a newline to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()
    }

    /// Sends `line` and returns the next stdout line (panics on timeout).
    pub fn request(&mut self, line: &str, timeout: Duration) -> String {
        self.send_line(line)
            .unwrap_or_else(|e| panic!("cannot write to {}: {e}", self.label));
        self.expect_line(timeout)
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Client LAN (v4, v6) and prefix lengths.
pub const CLIENT_NET4: &str = "198.51.100.0/24";
pub const CLIENT_NET6: &str = "2001:db8:c::/64";
/// Server LAN.
pub const SERVER_NET4: &str = "203.0.113.0/24";
pub const SERVER_NET6: &str = "2001:db8:5::/64";
/// Interface of the client and the real servers; of a director on the
/// client LAN.
pub const LAN_IF: &str = "eth0";
/// Interface of a director on the server LAN.
pub const SERVER_IF: &str = "eth1";

/// Builder for [`LbTopology`].
#[derive(Debug, Clone)]
pub struct LbTopologyBuilder {
    directors: usize,
    real_servers: usize,
    vips: Vec<IpAddr>,
}

impl Default for LbTopologyBuilder {
    fn default() -> Self {
        LbTopologyBuilder {
            directors: 1,
            real_servers: 3,
            vips: vec![
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100)),
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x100)),
            ],
        }
    }
}

impl LbTopologyBuilder {
    /// Number of director namespaces (1..=50).
    pub fn directors(mut self, n: usize) -> Self {
        self.directors = n;
        self
    }

    /// Number of real-server namespaces (1..=50; default 3).
    pub fn real_servers(mut self, n: usize) -> Self {
        self.real_servers = n;
        self
    }

    /// The VIPs the test will use (default 192.0.2.100, 2001:db8:f::100).
    /// The topology only records them (the client's default routes already
    /// lead to the chosen director); the load balancer under test owns them.
    pub fn vips(mut self, vips: &[&str]) -> Self {
        self.vips = vips
            .iter()
            .map(|v| v.parse().unwrap_or_else(|e| panic!("VIP {v:?}: {e}")))
            .collect();
        self
    }

    pub fn build(self) -> LbTopology {
        assert!((1..=50).contains(&self.directors), "1..=50 directors");
        assert!((1..=50).contains(&self.real_servers), "1..=50 real servers");
        // Each namespace is owned as soon as it exists, so a failure below
        // unwinds through their Drops.
        let hub = Netns::new("hub");
        hub.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ]);
        for br in ["brc", "brs"] {
            hub.ip(&[
                "link",
                "add",
                br,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ]);
            hub.ip(&["link", "set", br, "up"]);
        }
        let client = Netns::new("cl");
        prepare_host(&client, false);
        attach(&hub, "brc", "cl", &client, LAN_IF);
        add_addrs(&client, LAN_IF, client_v4().into(), client_v6().into());

        let mut directors = Vec::with_capacity(self.directors);
        for i in 0..self.directors {
            let d = Netns::new(&format!("d{i}"));
            prepare_host(&d, true);
            attach(&hub, "brc", &format!("d{i}c"), &d, LAN_IF);
            attach(&hub, "brs", &format!("d{i}s"), &d, SERVER_IF);
            add_addrs(
                &d,
                LAN_IF,
                director_client_v4(i).into(),
                director_client_v6(i).into(),
            );
            add_addrs(
                &d,
                SERVER_IF,
                director_server_v4(i).into(),
                director_server_v6(i).into(),
            );
            directors.push(d);
        }

        let mut real_servers = Vec::with_capacity(self.real_servers);
        for j in 0..self.real_servers {
            let r = Netns::new(&format!("rs{j}"));
            prepare_host(&r, false);
            attach(&hub, "brs", &format!("r{j}"), &r, LAN_IF);
            add_addrs(
                &r,
                LAN_IF,
                real_server_v4(j).into(),
                real_server_v6(j).into(),
            );
            real_servers.push(r);
        }

        let topo = LbTopology {
            client,
            directors,
            real_servers,
            hub,
            vips: self.vips,
            vip_director: AtomicUsize::new(0),
            gateway_director: AtomicUsize::new(0),
        };
        // Gateway on director 0, then the routes that use it.
        let d0 = &topo.directors[0];
        add_gateway(d0);
        for r in &topo.real_servers {
            r.ip(&["-4", "route", "add", "default", "via", GATEWAY_V4]);
            r.ip(&["-6", "route", "add", "default", "via", GATEWAY_V6]);
        }
        topo.route_vips_via(0);
        topo
    }
}

const GATEWAY_V4: &str = "203.0.113.1";
const GATEWAY_V6: &str = "2001:db8:5::1";

fn client_v4() -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 2)
}
fn client_v6() -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2)
}
/// `n` as decimal digits read as hex (10 -> 0x10), for readable v6 hosts.
fn dec_hex(n: usize) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).unwrap_or(0)
}
fn director_client_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, (10 + i) as u8)
}
fn director_client_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, dec_hex(10 + i))
}
fn director_server_v4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (10 + i) as u8)
}
fn director_server_v6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, dec_hex(10 + i))
}
fn real_server_v4(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, (21 + j) as u8)
}
fn real_server_v6(j: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, dec_hex(21 + j))
}

fn prepare_host(ns: &Netns, router: bool) {
    let mut s = vec![
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.conf.all.accept_ra", "0"),
        ("net.ipv6.conf.default.accept_ra", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ];
    if router {
        s.push(("net.ipv4.ip_forward", "1"));
        s.push(("net.ipv6.conf.all.forwarding", "1"));
    }
    ns.sysctl(&s);
}

/// A veth pair: `hub_end` in the hub on `bridge`, `dev` in `ns`; both up.
fn attach(hub: &Netns, bridge: &str, hub_end: &str, ns: &Netns, dev: &str) {
    hub.ip(&[
        "link",
        "add",
        hub_end,
        "type",
        "veth",
        "peer",
        "name",
        dev,
        "netns",
        ns.name(),
    ]);
    hub.ip(&["link", "set", hub_end, "master", bridge, "up"]);
    ns.ip(&["link", "set", dev, "up"]);
}

fn add_addrs(ns: &Netns, dev: &str, v4: IpAddr, v6: IpAddr) {
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
}

fn add_gateway(d: &Netns) {
    d.ip(&["addr", "add", &format!("{GATEWAY_V4}/24"), "dev", SERVER_IF]);
    d.ip(&[
        "addr",
        "add",
        &format!("{GATEWAY_V6}/64"),
        "dev",
        SERVER_IF,
        "nodad",
    ]);
}

/// The load-balancer test topology; see the module docs. Dropping it kills
/// every process in its namespaces and deletes them.
#[derive(Debug)]
pub struct LbTopology {
    client: Netns,
    directors: Vec<Netns>,
    real_servers: Vec<Netns>,
    hub: Netns,
    vips: Vec<IpAddr>,
    vip_director: AtomicUsize,
    gateway_director: AtomicUsize,
}

impl LbTopology {
    /// Defaults: 1 director, 3 real servers, VIPs 192.0.2.100 and
    /// 2001:db8:f::100.
    pub fn builder() -> LbTopologyBuilder {
        LbTopologyBuilder::default()
    }

    pub fn client(&self) -> &Netns {
        &self.client
    }
    pub fn director(&self, i: usize) -> &Netns {
        &self.directors[i]
    }
    pub fn directors(&self) -> &[Netns] {
        &self.directors
    }
    pub fn real_server(&self, j: usize) -> &Netns {
        &self.real_servers[j]
    }
    pub fn real_servers(&self) -> &[Netns] {
        &self.real_servers
    }
    /// The namespace holding the two bridges (`brc`, `brs`).
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// Every namespace name of this topology.
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(&self.hub)
            .chain(std::iter::once(&self.client))
            .chain(&self.directors)
            .chain(&self.real_servers)
            .map(|n| n.name().to_owned())
            .collect()
    }

    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }
    /// The first IPv4 VIP. Panics if there is none.
    pub fn vip4(&self) -> IpAddr {
        *self.vips.iter().find(|v| v.is_ipv4()).expect("an IPv4 VIP")
    }
    /// The first IPv6 VIP. Panics if there is none.
    pub fn vip6(&self) -> IpAddr {
        *self.vips.iter().find(|v| v.is_ipv6()).expect("an IPv6 VIP")
    }

    pub fn client_v4(&self) -> IpAddr {
        client_v4().into()
    }
    pub fn client_v6(&self) -> IpAddr {
        client_v6().into()
    }
    /// Director `i` on the client LAN (eth0).
    pub fn director_client_v4(&self, i: usize) -> IpAddr {
        director_client_v4(i).into()
    }
    pub fn director_client_v6(&self, i: usize) -> IpAddr {
        director_client_v6(i).into()
    }
    /// Director `i` on the server LAN (eth1), its own address (not the gateway).
    pub fn director_server_v4(&self, i: usize) -> IpAddr {
        director_server_v4(i).into()
    }
    pub fn director_server_v6(&self, i: usize) -> IpAddr {
        director_server_v6(i).into()
    }
    pub fn real_server_v4(&self, j: usize) -> IpAddr {
        real_server_v4(j).into()
    }
    pub fn real_server_v6(&self, j: usize) -> IpAddr {
        real_server_v6(j).into()
    }
    /// The real servers' default gateway (on director [`Self::gateway_director`]).
    pub fn gateway_v4(&self) -> IpAddr {
        GATEWAY_V4.parse().expect("gateway v4")
    }
    pub fn gateway_v6(&self) -> IpAddr {
        GATEWAY_V6.parse().expect("gateway v6")
    }

    /// Runs a command in director `i`; must succeed; stdout.
    pub fn exec_in_director(&self, i: usize, program: impl AsRef<OsStr>, args: &[&str]) -> String {
        self.directors[i].exec(program, args)
    }
    pub fn exec_in_client(&self, program: impl AsRef<OsStr>, args: &[&str]) -> String {
        self.client.exec(program, args)
    }
    pub fn exec_in_real_server(
        &self,
        j: usize,
        program: impl AsRef<OsStr>,
        args: &[&str],
    ) -> String {
        self.real_servers[j].exec(program, args)
    }

    /// The director the client's routes (VIPs, server LAN) go through.
    pub fn vip_director(&self) -> usize {
        self.vip_director.load(Ordering::SeqCst)
    }
    /// The director holding the real servers' gateway address.
    pub fn gateway_director(&self) -> usize {
        self.gateway_director.load(Ordering::SeqCst)
    }

    /// Points the client's default routes (v4 and v6; so the VIPs and the
    /// server LAN) at director `i`. Takes effect for the next packet.
    pub fn route_vips_via(&self, i: usize) {
        assert!(i < self.directors.len(), "no director {i}");
        let v4 = director_client_v4(i).to_string();
        let v6 = director_client_v6(i).to_string();
        self.client.ip(&[
            "-4", "route", "replace", "default", "via", &v4, "dev", LAN_IF,
        ]);
        self.client.ip(&[
            "-6", "route", "replace", "default", "via", &v6, "dev", LAN_IF,
        ]);
        self.vip_director.store(i, Ordering::SeqCst);
    }

    /// Moves the gateway addresses (203.0.113.1, 2001:db8:5::1) from the
    /// director holding them to director `i`, then flushes the real
    /// servers' neighbour caches so their next packet resolves the new
    /// owner (no gratuitous ARP needed; there is no arping on the host).
    pub fn move_gateway_to(&self, i: usize) {
        assert!(i < self.directors.len(), "no director {i}");
        let from = self.gateway_director();
        if from != i {
            let old = &self.directors[from];
            old.ip(&["addr", "del", &format!("{GATEWAY_V4}/24"), "dev", SERVER_IF]);
            old.ip(&["addr", "del", &format!("{GATEWAY_V6}/64"), "dev", SERVER_IF]);
            add_gateway(&self.directors[i]);
            self.gateway_director.store(i, Ordering::SeqCst);
        }
        for r in &self.real_servers {
            r.ip(&["-4", "neigh", "flush", "dev", LAN_IF]);
            r.ip(&["-6", "neigh", "flush", "dev", LAN_IF]);
        }
    }

    /// Flushes the client's neighbour cache (e.g. after a VIP moved between
    /// directors by VRRP, to not wait for a stale entry).
    pub fn flush_client_neighbours(&self) {
        self.client.ip(&["-4", "neigh", "flush", "dev", LAN_IF]);
        self.client.ip(&["-6", "neigh", "flush", "dev", LAN_IF]);
    }
}
