//! The daemon end to end over its control socket and metrics endpoint, with
//! the recording fake in place of the kernel (no root, no IPVS needed).

use director::control::{self, Request, Response};
use director::kernel::fake::FakeIpvs;
use director::kernel::{IpvsKernel, KernelError};
use director::model::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The fake, shared between the daemon and the test.
#[derive(Clone, Default)]
struct SharedFake(Arc<Mutex<FakeIpvs>>);

impl IpvsKernel for SharedFake {
    fn info(&mut self) -> Result<IpvsInfo, KernelError> {
        self.0.lock().unwrap().info()
    }
    fn dump(&mut self) -> Result<KernelTable, KernelError> {
        self.0.lock().unwrap().dump()
    }
    fn apply(&mut self, ops: &[IpvsOp]) -> Vec<Result<(), KernelError>> {
        self.0.lock().unwrap().apply(ops)
    }
    fn flush(&mut self) -> Result<(), KernelError> {
        self.0.lock().unwrap().flush()
    }
    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        self.0.lock().unwrap().timeouts()
    }
    fn set_timeouts(&mut self, t: Timeouts) -> Result<(), KernelError> {
        self.0.lock().unwrap().set_timeouts(t)
    }
    fn sync_daemons(&mut self) -> Result<Vec<SyncDaemon>, KernelError> {
        self.0.lock().unwrap().sync_daemons()
    }
    fn start_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        self.0.lock().unwrap().start_sync_daemon(d)
    }
    fn stop_sync_daemon(&mut self, d: &SyncDaemon) -> Result<(), KernelError> {
        self.0.lock().unwrap().stop_sync_daemon(d)
    }
}

const BODY: &str = r#"
[[virtual_server]]
name = "web"
address = "192.0.2.100:80"
scheduler = "wlc"
  [[virtual_server.real_server]]
  address = "10.0.1.11:8080"
  [[virtual_server.real_server]]
  address = "10.0.1.12:8080"
  weight = 2
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
    metrics: String,
    fake: SharedFake,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

fn write_config(path: &Path, socket: &Path, metrics: &str, body: &str) {
    let text = format!(
        "[global]\nrouter_id = \"t\"\ncontrol_socket = \"{}\"\nmetrics_listen = \"{metrics}\"\nreconcile_interval = \"100ms\"\n{body}",
        socket.display()
    );
    std::fs::write(path, text).unwrap();
}

fn start(fake: SharedFake) -> Running {
    start_with(fake, BODY)
}

fn start_with(fake: SharedFake, body: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ctl.sock");
    let config = dir.path().join("director.toml");
    let metrics = format!("127.0.0.1:{}", free_port());
    write_config(&config, &socket, &metrics, body);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (cfg, f) = (config.clone(), fake.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(director::daemon::run(
            cfg,
            backends(move || Ok(f.clone())),
            async {
                let _ = stopped.await;
            },
            || {},
        ))
        .map_err(|e| e.to_string())
    });
    let r = Running {
        _dir: dir,
        socket,
        config,
        metrics,
        fake,
        stop: Some(stop),
        thread: Some(thread),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&r.socket).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    r
}

impl Running {
    fn ask(&self, req: Request) -> Response {
        control::request(&self.socket, &req, Duration::from_secs(20)).unwrap()
    }
    fn raw(&self, bytes: &[u8]) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
    fn table(&self) -> KernelTable {
        self.fake.0.lock().unwrap().table.clone()
    }
    fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap()
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn daemon_programs_serves_reloads_and_repairs() {
    let r = start(SharedFake::default());

    // Programmed at startup, and the socket is root-only.
    let mode = std::fs::metadata(&r.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let Response::Status(status) = r.ask(Request::Status) else {
        panic!("status")
    };
    assert_eq!(status.table.services.len(), 1);
    assert_eq!(status.table.services[0].dests.len(), 2);
    assert_eq!(status.owned[0].name, "web");
    assert_eq!(status.dataplane, "ipvs");
    assert_eq!(
        status.timeouts,
        Some(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        })
    );
    assert!(status.sync_daemons.is_empty());

    // Garbage, unknown commands and oversized lines get an error reply and
    // leave the daemon serving.
    assert!(r
        .raw(b"this is not json\n")
        .contains("\"result\":\"error\""));
    assert!(r
        .raw(b"{\"cmd\":\"rm -rf\"}\n")
        .contains("\"result\":\"error\""));
    let huge = vec![b'x'; control::MAX_REQUEST_BYTES + 10];
    assert!(r.raw(&huge).contains("longer than"));
    assert!(matches!(r.ask(Request::Status), Response::Status(_)));

    // An external flush is repaired by the periodic pass (100ms here).
    r.fake.0.lock().unwrap().flush().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || r.table().services.len() == 1),
        "flush not repaired"
    );

    // A bad config is rejected with positions and nothing changes.
    let good = std::fs::read_to_string(&r.config).unwrap();
    std::fs::write(&r.config, good.replace("weight = 2", "weight = 70000")).unwrap();
    let Response::Reload(rej) = r.ask(Request::Reload) else {
        panic!("reload")
    };
    assert_eq!(rej.rejected.len(), 1, "{:?}", rej.rejected);
    assert!(
        rej.rejected[0].contains("director.toml:") && rej.rejected[0].contains("70000"),
        "{:?}",
        rej.rejected
    );
    assert!(r.table().services[0]
        .dests
        .iter()
        .any(|d| d.dest.settings.weight == 2));

    // A good change applies only the difference.
    std::fs::write(&r.config, good.replace("weight = 2", "weight = 5")).unwrap();
    let Response::Reload(ok) = r.ask(Request::Reload) else {
        panic!("reload")
    };
    assert!(ok.rejected.is_empty());
    assert_eq!(ok.last_pass.unwrap().ops_applied, 1);
    assert!(r.table().services[0]
        .dests
        .iter()
        .any(|d| d.dest.settings.weight == 5));

    // Metrics are served and count what happened.
    let mut s = std::net::TcpStream::connect(&r.metrics).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"));
    assert!(
        text.contains("director_config_reloads_total{result=\"rejected\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("director_reconcile_ops_applied_total{kind=\"edit_dest\"} 1"),
        "{text}"
    );
    assert!(text.contains("director_services_owned 1"));

    // Shutdown leaves the table in place (the next daemon adopts it).
    let fake = r.fake.clone();
    r.stop().unwrap();
    assert_eq!(fake.0.lock().unwrap().table.services.len(), 1);
    let flushes = fake
        .0
        .lock()
        .unwrap()
        .calls
        .iter()
        .filter(|c| matches!(c, director::kernel::fake::Call::Flush))
        .count();
    assert_eq!(
        flushes, 1,
        "only the test's own external flush; the daemon never flushes"
    );
}

#[test]
fn vrrp_follow_without_instances_is_refused_and_the_one_line_vrrp_is_unchanged() {
    let r = start(SharedFake::default());
    // The stream, asked while the daemon may still be in its first pass:
    // it waits for VRRP to settle, then says there is nothing to follow
    // (one error line, then the end), so `directorctl vrrp --follow`
    // exits 1 with that message instead of waiting forever.
    let mut stream = control::open_stream(&r.socket, &Request::VrrpFollow { since: None }).unwrap();
    let first = stream.next_line().unwrap().expect("one line");
    match first.response {
        Response::Error { message } => assert!(message.contains("no vrrp_instance"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(
        first.raw.starts_with(r#"{"result":"error""#),
        "{}",
        first.raw
    );
    assert_eq!(stream.next_line().unwrap(), None);

    // The one-line request answers as before: an empty snapshot.
    let Response::Vrrp(snap) = r.ask(Request::Vrrp) else {
        panic!("vrrp")
    };
    assert!(snap.instances.is_empty());
    // Hostile follow requests get an error line; the daemon serves on.
    for bad in [
        &b"{\"cmd\":\"vrrp_follow\",\"since\":-1}\n"[..],
        b"{\"cmd\":\"vrrp_follow\",\"since\":\"x\"}\n",
        b"{\"cmd\":\"vrrp_follow\",\"since\":1e400}\n",
    ] {
        let reply = r.raw(bad);
        assert!(reply.starts_with(r#"{"result":"error""#), "{reply}");
        assert_eq!(reply.matches('\n').count(), 1, "{reply}");
    }
    assert!(matches!(r.ask(Request::Status), Response::Status(_)));
    r.stop().unwrap();
}

/// Fake IPVS, no nftables, and sysctls that are read but never written
/// (these daemons run in the host's own network namespace).
fn backends<K: IpvsKernel + Send + 'static, F>(open: F) -> director::daemon::Backends<F>
where
    F: FnMut() -> Result<K, KernelError> + Send + 'static,
{
    director::daemon::Backends {
        open_ipvs: open,
        open_nft: Box::new(|_| Err("no nftables in this test".to_string())),
        sysctls: Box::new(director::sysctl::ReadOnly(
            director::sysctl::ProcSys::default(),
        )),
    }
}

/// Runs a daemon that must fail to start; its error text.
fn start_error<K: IpvsKernel + Send + 'static>(
    config: PathBuf,
    open: impl FnMut() -> Result<K, KernelError> + Send + 'static,
) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(director::daemon::run(
        config,
        backends(open),
        async {},
        || {},
    ))
    .unwrap_err()
    .to_string()
}

#[test]
fn second_daemon_on_a_live_socket_refuses_and_stale_socket_is_reused() {
    let r = start(SharedFake::default());
    let fake = SharedFake::default();
    let cfg = r.config.clone();
    let err = start_error(cfg, move || Ok(fake.clone()));
    assert!(err.contains("already listening"), "{err}");
    let socket = r.socket.clone();
    r.stop().unwrap();
    // A stale socket file (as after kill -9) does not block a new start.
    std::os::unix::net::UnixListener::bind(&socket)
        .map(drop)
        .ok();
    let _again = start(SharedFake::default());
}

#[test]
fn no_ipvs_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("d.toml");
    let body = format!("dataplane = \"ipvs\"\n{BODY}");
    write_config(&config, &dir.path().join("s.sock"), "127.0.0.1:1", &body);
    let err = start_error(config, || Err::<FakeIpvs, _>(KernelError::Unavailable));
    assert!(
        err.contains("has no IPVS") && err.contains("\"nftables\" runs the services in nftables"),
        "{err}"
    );
}

#[test]
fn auto_without_ipvs_falls_back_to_nftables_and_says_why_it_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("d.toml");
    // BODY asks for wlc, which only IPVS has: refused at its position.
    write_config(&config, &dir.path().join("s.sock"), "127.0.0.1:1", BODY);
    let err = start_error(config.clone(), || {
        Err::<FakeIpvs, _>(KernelError::Unavailable)
    });
    assert!(
        err.ends_with(":10:13: scheduler \"wlc\" is not available on the nftables dataplane (it has rr, wrr, sh, mh); use dataplane = \"ipvs\" on a kernel with IPVS"),
        "{err}"
    );
    let rr = BODY.replace("\"wlc\"", "\"rr\"");
    write_config(&config, &dir.path().join("s.sock"), "127.0.0.1:1", &rr);
    let err = start_error(config, || Err::<FakeIpvs, _>(KernelError::Unavailable));
    assert_eq!(
        err,
        "the nftables dataplane cannot start: no nftables in this test"
    );
}

/// Health checks against local listeners drive the (fake) IPVS table: a
/// real server whose port closes is removed and comes back, a drain sets
/// weight 0 and survives a reload, a real server removed from the config
/// leaves (no active connections in the fake: at once), the pool series
/// are served.
#[test]
fn health_checks_drive_the_ipvs_table() {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (pa, pb) = (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    );
    let body = |servers: &[u16]| {
        let mut s = String::from(
            "[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.100:80\"\nscheduler = \"wlc\"\n\
             health = { kind = \"tcp\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 2 }\n",
        );
        for p in servers {
            s += &format!("[[virtual_server.real_server]]\naddress = \"127.0.0.1:{p}\"\n");
        }
        s
    };
    let r = start_with(SharedFake::default(), &body(&[pa, pb]));
    let dests = |r: &Running| -> Vec<(u16, i32)> {
        r.table()
            .services
            .first()
            .map(|s| {
                s.dests
                    .iter()
                    .map(|d| (d.dest.key.port, d.dest.settings.weight))
                    .collect()
            })
            .unwrap_or_default()
    };
    let has = |r: &Running, port: u16| dests(r).iter().any(|d| d.0 == port);
    assert!(has(&r, pa) && has(&r, pb));

    // B's port closes: refused twice, removed.
    drop(b);
    assert!(
        wait_until(Duration::from_secs(5), || !has(&r, pb)),
        "{:?}",
        dests(&r)
    );
    let Response::Health(h) = r.ask(Request::Health) else {
        panic!("health")
    };
    let vs = &h.virtual_servers[0];
    assert_eq!((vs.pool.up, vs.pool.total), (1, 2));
    let rb = vs
        .real_servers
        .iter()
        .find(|x| x.address.port() == pb)
        .unwrap();
    assert_eq!(rb.checks[0].last_failure_kind.as_deref(), Some("refused"));
    assert_eq!(rb.kernel_weight, None);
    let mut m = std::net::TcpStream::connect(&r.metrics).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut text = String::new();
    m.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("director_real_servers_up{virtual_server=\"web\"} 1"),
        "{text}"
    );
    assert!(text.contains("director_real_servers_total{virtual_server=\"web\"} 2"));
    assert!(text.contains("director_health_checks 2"));
    assert!(text.contains("director_health_check_results_total{kind=\"tcp\",outcome=\"refused\"}"));
    assert!(text.contains("director_dead_server_resets_total{virtual_server=\"web\"} 1"));

    // It listens again: back after rise.
    let b = std::net::TcpListener::bind(("127.0.0.1", pb)).unwrap();
    assert!(wait_until(Duration::from_secs(5), || has(&r, pb)));

    // Drain A: weight 0, kept across a reload, undrained.
    let Response::Drain(d) = r.ask(Request::Drain {
        virtual_server: "web".into(),
        real_server: format!("127.0.0.1:{pa}"),
    }) else {
        panic!("drain")
    };
    assert!(d.changed && d.last_pass.is_some(), "{d:?}");
    assert!(dests(&r).contains(&(pa, 0)));
    let Response::Reload(ok) = r.ask(Request::Reload) else {
        panic!("reload")
    };
    assert!(ok.rejected.is_empty());
    assert!(dests(&r).contains(&(pa, 0)), "drain survives reload");
    let Response::Error { message } = r.ask(Request::Undrain {
        virtual_server: "web".into(),
        real_server: "127.0.0.1".into(),
    }) else {
        panic!("two real servers on 127.0.0.1 must be named with a port")
    };
    assert!(
        message.contains("several real servers on 127.0.0.1"),
        "{message}"
    );
    let Response::Drain(d) = r.ask(Request::Undrain {
        virtual_server: "web".into(),
        real_server: format!("127.0.0.1:{pa}"),
    }) else {
        panic!("undrain")
    };
    assert!(d.message.contains("back at weight 1"), "{d:?}");
    assert!(dests(&r).contains(&(pa, 1)));

    // B removed from the config: it leaves; the fake has no connections,
    // so it is deleted at the first count.
    let path = r.config.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text.split("[[virtual_server]]").next().unwrap().to_string();
    std::fs::write(&path, head + &body(&[pa])).unwrap();
    let Response::Reload(ok) = r.ask(Request::Reload) else {
        panic!("reload")
    };
    assert!(ok.rejected.is_empty(), "{:?}", ok.rejected);
    assert!(
        wait_until(Duration::from_secs(5), || !has(&r, pb)),
        "{:?}",
        dests(&r)
    );
    let Response::Health(h) = r.ask(Request::Health) else {
        panic!("health")
    };
    assert_eq!(h.virtual_servers[0].real_servers.len(), 1);
    assert_eq!(h.checks_running, 1);
    drop(b);
    r.stop().unwrap();
}

#[test]
fn auto_on_ipvs_refuses_a_reset_ipvs_cannot_keep() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("director.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\nrouter_id = \"t\"\ncontrol_socket = \"{}\"\n\
             [[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.100:80\"\n\
             on_down = \"inhibit\"\non_down_connections = \"reset\"\n",
            dir.path().join("s.sock").display()
        ),
    )
    .unwrap();
    let e = start_error(config, || Ok(SharedFake::default()));
    assert!(
        e.contains("director.toml:8:23: on_down_connections = \"reset\" with on_down = \"inhibit\" is not possible on the IPVS dataplane"),
        "{e}"
    );
}
