//! The pair of directors on a [`Topology`]: their config files (written
//! from [`PairOptions`]), the shared ctsync key, and one `director run`
//! process per director inside its namespace, driven as an operator
//! would: `directorctl` against its control socket, SIGKILL for a crash.

use super::sys::{Proc, ScratchDir};
use super::topology::{self, Topology, BACK_IF, FRONT_IF, SYNC_PORT};
use super::{DemoError, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the two configs say. The two boxes differ only in router id,
/// priority and which end of the sync link is theirs.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// `"auto"` (IPVS where the kernel has it, else nftables), `"ipvs"`
    /// or `"nftables"`.
    pub dataplane: String,
    /// VRRP advert interval (VRRPv3: 10 ms steps). A takeover after a
    /// crash takes about 3 of them.
    pub advert_interval: Duration,
    /// Priorities of d0 and d1: d0 is the preferred master.
    pub priorities: [u8; 2],
    pub preempt: bool,
    /// With preempt: how long a returning higher-priority box waits
    /// before taking the VIPs back. It gives ctsync time to copy the
    /// connection table to it first.
    pub preempt_delay: Duration,
    /// Write the `[ctsync]` section (and the key file).
    pub ctsync: bool,
    /// With `ctsync`: also run the kernel's IPVS sync daemons on the sync
    /// link (`ipvs_sync_interface`, `ipvs_syncid`); IPVS dataplane only.
    pub ipvs_sync: bool,
    /// Number of real servers in the `[[virtual_server]]`s (the first n
    /// of the topology).
    pub real_servers: usize,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            dataplane: "auto".into(),
            advert_interval: Duration::from_millis(200),
            priorities: [150, 100],
            preempt: true,
            preempt_delay: Duration::from_secs(3),
            ctsync: true,
            ipvs_sync: false,
            real_servers: 3,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The config of director `i` (0 or 1).
pub fn config_text(i: usize, o: &PairOptions, socket: &Path, key_file: &Path) -> String {
    let mut s = format!(
        r#"# director demo: director d{i} of the pair (written by `director demo`).
[global]
router_id = "demo-d{i}"
control_socket = "{socket}"
dataplane = "{dataplane}"
reconcile_interval = "1s"

# The service VIP on the client side ...
[[vrrp_instance]]
name = "VI_FRONT"
interface = "{FRONT_IF}"
vrid = 51
priority = {prio}
advert_interval = "{adv}"
preempt = {preempt}
preempt_delay = "{delay}"
virtual_ipaddresses = ["{vip}/32"]
# A pulled cable faults the instance (weight 0), and with it the group.
track_interfaces = [{{ name = "{FRONT_IF}" }}]
garp_master_delay = "1s"

# ... and the floating address on the server side (SNAT source and the
# real servers' gateway), kept on the same box by the sync group, so
# replies come back to whichever director is master.
[[vrrp_instance]]
name = "VI_BACK"
interface = "{BACK_IF}"
vrid = 52
priority = {prio}
advert_interval = "{adv}"
preempt = {preempt}
preempt_delay = "{delay}"
virtual_ipaddresses = ["{back_vip}/32"]
track_interfaces = [{{ name = "{BACK_IF}" }}]
garp_master_delay = "1s"

[[sync_group]]
name = "DEMO"
instances = ["VI_FRONT", "VI_BACK"]

[[snat]]
match_vip = "{vip}"
to_source = "{back_vip}"
"#,
        socket = socket.display(),
        dataplane = o.dataplane,
        prio = o.priorities[i],
        adv = ms(o.advert_interval),
        preempt = o.preempt,
        delay = ms(o.preempt_delay),
        vip = topology::VIP,
        back_vip = topology::BACK_VIP,
    );
    for (name, vport, rport, health) in [
        (
            "echo",
            topology::ECHO_PORT,
            topology::ECHO_PORT,
            r#"{ kind = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }"#,
        ),
        (
            "web",
            topology::HTTP_PORT,
            topology::HTTP_RS_PORT,
            r#"{ kind = "http", path = "/", interval = "1s", timeout = "500ms", rise = 1, fall = 2 }"#,
        ),
    ] {
        // rr, not mh: with a stateless Maglev pick the backup would send
        // a connection it never saw to the same server anyway, and the
        // demo would not show what the replicated state does.
        s += &format!(
            "\n[[virtual_server]]\nname = \"{name}\"\naddress = \"{}:{vport}\"\nprotocol = \"tcp\"\nscheduler = \"rr\"\nforwarding = \"nat\"\nhealth = {health}\n",
            topology::VIP
        );
        for j in 0..o.real_servers {
            s += &format!(
                "[[virtual_server.real_server]]\naddress = \"{}:{rport}\"\n",
                topology::real_server(j)
            );
        }
    }
    if o.ctsync {
        s += &format!(
            "\n# Connection-state replication over the private sync link.\n[ctsync]\nlocal = \"{}:{SYNC_PORT}\"\npeer = \"{}:{SYNC_PORT}\"\nkey_file = \"{}\"\n",
            topology::director_sync(i),
            topology::director_sync(1 - i),
            key_file.display()
        );
        if o.ipvs_sync {
            s += &format!(
                "# IPVS connection entries too (the kernel's sync daemons, master/backup following VRRP).\nipvs_sync_interface = \"{}\"\nipvs_syncid = 51\n",
                topology::SYNC_IF
            );
        }
    }
    s
}

/// A fresh 32-byte key, hex-encoded (ctsync trims whitespace and needs at
/// least 16 bytes), readable by root only.
pub fn write_key_file(path: &Path) -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| DemoError::new(format!("cannot read /dev/urandom for the ctsync key: {e}")))?;
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{hex}\n").as_bytes()))
        .map_err(|e| DemoError::new(format!("cannot write {}: {e}", path.display())))
}

/// One director: its files and, while running, its `director run`.
#[derive(Debug)]
pub struct Director {
    pub index: usize,
    netns: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    bin_dir: PathBuf,
    proc: Option<Proc>,
}

impl Director {
    pub fn name(&self) -> String {
        format!("d{}", self.index)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Pid of its `director run` while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Starts `director run` in its namespace and waits until its control
    /// socket answers.
    pub fn start(&mut self) -> Result<()> {
        if self.proc.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(self.bin_dir.join("director"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let label = format!(
            "director d{} (`director run` in {})",
            self.index, self.netns
        );
        self.proc = Some(Proc::spawn(cmd, &label, Some(&self.log))?);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.proc.as_mut().and_then(Proc::exited) {
                let tail = self.proc.as_ref().map(Proc::log_tail).unwrap_or_default();
                self.proc = None;
                return Err(DemoError::new(format!("{label} exited ({status}){tail}")));
            }
            if self.ctl(&["status", "--json"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > end {
                let tail = self.proc.as_ref().map(Proc::log_tail).unwrap_or_default();
                return Err(DemoError::new(format!(
                    "{label}: control socket {} did not answer within 30 s{tail}",
                    self.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash, nothing released (VIPs stay configured, no
    /// priority-0 advert).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGTERM, as systemd stops it; whether it exited within 10 s.
    pub fn stop(&mut self) -> bool {
        match self.proc.take() {
            Some(mut p) => p.terminate(Duration::from_secs(10)),
            None => true,
        }
    }

    /// `directorctl --socket S ARGS`: stdout, or an error with its output.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let ctl = self.bin_dir.join("directorctl");
        let out = Command::new(&ctl)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output();
        super::sys::checked(
            &format!(
                "directorctl --socket {} {}",
                self.socket.display(),
                args.join(" ")
            ),
            out,
        )
    }

    /// `directorctl ARGS --json`, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ctl(&all)?;
        serde_json::from_str(&text).map_err(|e| {
            DemoError::new(format!(
                "directorctl {} --json: not JSON ({e}): {text}",
                args.join(" ")
            ))
        })
    }

    /// VRRP state of `instance` ("master", "backup", "fault", ...).
    pub fn vrrp_state(&self, instance: &str) -> Result<String> {
        let v = self.ctl_json(&["vrrp"])?;
        v["instances"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["name"] == instance))
            .and_then(|i| i["status"]["state"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| DemoError::new(format!("no VRRP instance {instance} in {v}")))
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Two directors, d0 (preferred master) and d1, with their scratch
/// directory (configs, sockets, logs, key).
#[derive(Debug)]
pub struct Pair {
    pub directors: [Director; 2],
    pub key_file: PathBuf,
    pub options: PairOptions,
    // Last: removed after the daemons are gone.
    dir: ScratchDir,
}

impl Pair {
    /// Writes both configs and the key; starts nothing. `bin_dir` holds
    /// `director` and `directorctl`.
    pub fn prepare(t: &Topology, options: PairOptions, bin_dir: &Path) -> Result<Pair> {
        for b in ["director", "directorctl"] {
            let p = bin_dir.join(b);
            if !p.is_file() {
                return Err(DemoError::new(format!(
                    "{} not found (build it: cargo build -p director)",
                    p.display()
                )));
            }
        }
        let dir = ScratchDir::create("director-demo")?;
        let key_file = dir.path().join("ctsync.key");
        write_key_file(&key_file)?;
        let make = |i: usize| -> Result<Director> {
            let d = Director {
                index: i,
                netns: t.director(i).name().to_owned(),
                config: dir.path().join(format!("d{i}.toml")),
                socket: dir.path().join(format!("d{i}.sock")),
                log: dir.path().join(format!("d{i}.log")),
                bin_dir: bin_dir.to_path_buf(),
                proc: None,
            };
            d.write_config(&options, &key_file)?;
            Ok(d)
        };
        let directors = [make(0)?, make(1)?];
        Ok(Pair {
            directors,
            key_file,
            options,
            dir,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites both configs from new options (takes effect at the next
    /// start, or `directorctl reload`).
    pub fn rewrite(&mut self, options: PairOptions) -> Result<()> {
        for d in &self.directors {
            d.write_config(&options, &self.key_file)?;
        }
        self.options = options;
        Ok(())
    }

    /// Which director holds the VIP, if exactly one does.
    pub fn vip_holder(&self, t: &Topology) -> Option<usize> {
        match (t.holds_vip(0), t.holds_vip(1)) {
            (true, false) => Some(0),
            (false, true) => Some(1),
            _ => None,
        }
    }

    /// Waits until director `i` is the only VIP holder and its VRRP
    /// instances are both master; how long that took.
    pub fn wait_master(&self, t: &Topology, i: usize, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let d = &self.directors[i];
            if self.vip_holder(t) == Some(i)
                && d.vrrp_state("VI_FRONT").ok().as_deref() == Some("master")
                && d.vrrp_state("VI_BACK").ok().as_deref() == Some("master")
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(DemoError::new(format!(
                    "d{i} did not become the only master within {limit:?} (VIP on d0: {}, on d1: {}; states: {})",
                    t.holds_vip(0),
                    t.holds_vip(1),
                    self.states()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until both VRRP instances of director `i` are in `state`
    /// (whatever the other box holds: a killed one keeps its addresses).
    pub fn wait_state(&self, i: usize, state: &str, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        let d = &self.directors[i];
        loop {
            if d.vrrp_state("VI_FRONT").ok().as_deref() == Some(state)
                && d.vrrp_state("VI_BACK").ok().as_deref() == Some(state)
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(DemoError::new(format!(
                    "d{i} did not reach {state} within {limit:?} ({})",
                    self.states()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// "d0 VI_FRONT=master VI_BACK=master, d1 ..." for error messages.
    pub fn states(&self) -> String {
        self.directors
            .iter()
            .map(|d| {
                if !d.is_running() {
                    return format!("{} not running", d.name());
                }
                let st = |i| d.vrrp_state(i).unwrap_or_else(|e| format!("? ({e})"));
                format!(
                    "{} VI_FRONT={} VI_BACK={}",
                    d.name(),
                    st("VI_FRONT"),
                    st("VI_BACK")
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Director {
    fn write_config(&self, o: &PairOptions, key_file: &Path) -> Result<()> {
        std::fs::write(
            &self.config,
            config_text(self.index, o, &self.socket, key_file),
        )
        .map_err(|e| DemoError::new(format!("cannot write {}: {e}", self.config.display())))
    }
}
