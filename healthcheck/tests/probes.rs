//! Every probe against real local servers on loopback: healthy ones, and
//! the bad ones the issue names (unreachable, slow-loris, garbage HTTP,
//! enormous body, failing TLS handshake, hanging script). Each must give a
//! clear reason within its timeout.

use healthcheck::{
    BodyMatch, CheckSpec, Failure, HttpProbe, Prepared, Probe, ScriptProbe, Stage, StatusRange,
    TlsProbe,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_millis(500);

fn spec(target: SocketAddr, probe: Probe) -> CheckSpec {
    CheckSpec {
        target,
        probe,
        interval: Duration::from_secs(1),
        timeout: TIMEOUT,
        rise: 2,
        fall: 3,
    }
}

fn http(path: &str, body: Option<BodyMatch>) -> HttpProbe {
    HttpProbe {
        method: "GET".into(),
        path: path.into(),
        host: None,
        expect_status: vec![StatusRange {
            low: 200,
            high: 299,
        }],
        body,
    }
}

async fn run(spec: CheckSpec) -> Result<(), Failure> {
    let p = Prepared::new(spec).expect("valid spec");
    let start = Instant::now();
    let r = p.run().await;
    assert!(
        start.elapsed() < TIMEOUT + Duration::from_millis(300),
        "probe overran its timeout: {:?} ({r:?})",
        start.elapsed()
    );
    r
}

/// A server that reads the request head and answers every connection with
/// `response` (then closes); returns its address and the requests seen.
async fn http_server(response: Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let response = response.clone();
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&req).into_owned());
                let _ = s.write_all(&response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn tcp_up_and_refused() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    assert_eq!(run(spec(addr, Probe::Tcp)).await, Ok(()));
    drop(l);
    assert_eq!(run(spec(addr, Probe::Tcp)).await, Err(Failure::Refused));
    assert_eq!(
        run(spec(closed_port().await, Probe::Tcp)).await,
        Err(Failure::Refused)
    );
}

/// A listener whose accept queue (backlog 0: one entry) and SYN queue
/// are full, with the connections that fill them: a SYN to it gets no
/// answer until room is made.
async fn full_backlog() -> (
    std::net::SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = sock.local_addr().unwrap();
    let listener = sock.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    (addr, listener, fillers)
}

#[tokio::test]
async fn tcp_to_a_silent_address_times_out_connecting() {
    // A listener whose backlog is full never completes a handshake: the
    // probe must time out in the connect stage, not hang.
    let (addr, _listener, _fillers) = full_backlog().await;
    match run(spec(addr, Probe::Tcp)).await {
        Err(Failure::Timeout {
            stage: Stage::Connect,
            ..
        }) => {}
        other => panic!("expected a connect timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn tcp_waits_for_a_handshake_that_is_not_done_at_once() {
    // A probe whose SYN finds the accept queue full gets no answer until
    // the SYN is retransmitted (1 s later): the outcome is not known when
    // connect() returns, so the probe waits for it in the reactor. Room is
    // made meanwhile, and the retransmitted SYN completes the handshake.
    let (addr, listener, fillers) = full_backlog().await;
    let mut slow = spec(addr, Probe::Tcp);
    slow.interval = Duration::from_secs(5);
    slow.timeout = Duration::from_secs(4);
    let p = Prepared::new(slow).unwrap();
    let probe = tokio::spawn(async move {
        let start = Instant::now();
        (p.run().await, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(fillers);
    // Drain the accept queue, so the retransmitted SYN finds room.
    let drain = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let (result, took) = probe.await.unwrap();
    drain.abort();
    assert_eq!(result, Ok(()));
    assert!(took > Duration::from_millis(500), "done at once: {took:?}");
}

#[tokio::test]
async fn http_status_host_and_request_line() {
    let (addr, seen) =
        http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    assert_eq!(
        run(spec(addr, Probe::Http(http("/health", None)))).await,
        Ok(())
    );
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /health HTTP/1.0\r\n"), "{req}");
    assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req}");

    let (addr, _) = http_server(b"HTTP/1.1 503 Busy\r\n\r\n".to_vec()).await;
    assert_eq!(
        run(spec(addr, Probe::Http(http("/", None)))).await,
        Err(Failure::Status {
            got: 503,
            expected: "200-299".into()
        })
    );
    let mut p = http("/", None);
    p.expect_status = vec![
        StatusRange::parse("200").unwrap(),
        StatusRange::parse("500-503").unwrap(),
    ];
    p.host = Some("www.example.test".into());
    assert_eq!(run(spec(addr, Probe::Http(p))).await, Ok(()));
}

#[tokio::test]
async fn http_body_regex_and_digests() {
    let body = "<html>status: green</html>";
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (addr, _) = http_server(resp.into_bytes()).await;
    let ok = Some(BodyMatch::Regex("status: (green|yellow)".into()));
    assert_eq!(run(spec(addr, Probe::Http(http("/", ok)))).await, Ok(()));
    let bad = Some(BodyMatch::Regex("status: red".into()));
    match run(spec(addr, Probe::Http(http("/", bad)))).await {
        Err(Failure::Body(reason)) => assert!(reason.contains("status: red"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // md5 of the body, as `genhash` / `md5sum` print it.
    let md5 = BodyMatch::digest_from_hex("3bd8b05e31d2a8d29b2e7a1e0d1c4a5b").unwrap();
    match run(spec(addr, Probe::Http(http("/", Some(md5))))).await {
        Err(Failure::Body(reason)) => assert!(reason.starts_with("md5 "), "{reason}"),
        other => panic!("{other:?}"),
    }
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(body.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)[..32].to_owned();
    let md5 = BodyMatch::digest_from_hex(&hex).unwrap();
    assert_eq!(
        run(spec(addr, Probe::Http(http("/", Some(md5))))).await,
        Ok(())
    );

    // Chunked, although we asked as HTTP/1.0.
    let (addr, _) = http_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nstatus\r\n7\r\n: green\r\n0\r\n\r\n".to_vec(),
    )
    .await;
    let ok = Some(BodyMatch::Regex("^status: green$".into()));
    assert_eq!(run(spec(addr, Probe::Http(http("/", ok)))).await, Ok(()));
}

#[tokio::test]
async fn garbage_truncated_and_enormous_responses_fail_with_a_reason() {
    let (addr, _) = http_server(b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec()).await;
    match run(spec(addr, Probe::Http(http("/", None)))).await {
        Err(Failure::Http(reason)) => assert!(reason.contains("SSH-2.0"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (addr, _) = http_server(b"HTTP/1.1 200 OK\r\nContent-".to_vec()).await;
    match run(spec(addr, Probe::Http(http("/", None)))).await {
        Err(Failure::Http(reason)) => assert!(reason.contains("closed before"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let (addr, _) =
        http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec()).await;
    let any = Some(BodyMatch::Regex(".".into()));
    match run(spec(addr, Probe::Http(http("/", any.clone())))).await {
        Err(Failure::Http(reason)) => assert!(reason.contains("5 of 100"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // 4 MiB body: cut at 1 MiB when the body is checked...
    let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    big.resize(big.len() + 4 * 1024 * 1024, b'x');
    let (addr, _) = http_server(big).await;
    match run(spec(addr, Probe::Http(http("/", any)))).await {
        Err(Failure::Http(reason)) => assert!(reason.contains("body longer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // ...and not read at all when only the status matters.
    assert_eq!(run(spec(addr, Probe::Http(http("/", None)))).await, Ok(()));
}

#[tokio::test]
async fn slow_loris_times_out_in_the_response_stage() {
    // Accepts, reads the request, then trickles one header byte every 100 ms.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                for b in b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .iter()
                    .cycle()
                {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    match run(spec(addr, Probe::Http(http("/", None)))).await {
        Err(Failure::Timeout {
            stage: Stage::Response,
            after,
        }) => assert_eq!(after, TIMEOUT),
        other => panic!("{other:?}"),
    }
}

fn self_signed() -> (Vec<u8>, Vec<u8>, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (
        ck.cert.der().to_vec(),
        ck.key_pair.serialize_der(),
        ck.cert.pem(),
    )
}

async fn https_server(cert: Vec<u8>, key: Vec<u8>, response: &'static [u8]) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn https(verify: bool, sni: Option<&str>, ca_file: Option<std::path::PathBuf>) -> Probe {
    Probe::Https {
        http: http("/", Some(BodyMatch::Regex("secure".into()))),
        tls: TlsProbe {
            sni: sni.map(str::to_owned),
            verify,
            ca_file,
        },
    }
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let (cert, key, pem) = self_signed();
    let addr = https_server(
        cert,
        key,
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure",
    )
    .await;
    // verify off: the handshake completes, the body is checked.
    assert_eq!(run(spec(addr, https(false, None, None))).await, Ok(()));
    // verify on against the system store: unknown issuer, said so.
    match run(spec(addr, https(true, Some("localhost"), None))).await {
        Err(Failure::Tls(reason)) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // verify on with the certificate as CA, by name and by IP.
    let dir = tempfile_dir();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    assert_eq!(
        run(spec(addr, https(true, Some("localhost"), Some(ca.clone())))).await,
        Ok(())
    );
    assert_eq!(
        run(spec(addr, https(true, None, Some(ca.clone())))).await,
        Ok(())
    );
    match run(spec(addr, https(true, Some("other.example"), Some(ca)))).await {
        Err(Failure::Tls(reason)) => assert!(reason.contains("not valid for name"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hc-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn a_plain_http_server_fails_the_tls_handshake_with_a_reason() {
    // Answers whatever arrives with a plain-text HTTP error, as a web server
    // on a TLS port by mistake does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            let _ = s.shutdown().await;
        }
    });
    match run(spec(addr, https(false, None, None))).await {
        Err(Failure::Tls(reason)) => assert!(!reason.is_empty()),
        other => panic!("{other:?}"),
    }
}

fn script(argv: &[&str]) -> Probe {
    Probe::Script(ScriptProbe {
        argv: argv.iter().map(|s| s.to_string()).collect(),
    })
}

#[tokio::test]
async fn scripts_exit_codes_environment_and_no_shell() {
    let target: SocketAddr = "10.0.1.11:8080".parse().unwrap();
    assert_eq!(run(spec(target, script(&["true"]))).await, Ok(()));
    assert_eq!(
        run(spec(target, script(&["sh", "-c", "exit 3"]))).await,
        Err(Failure::ScriptExit(3))
    );
    let env_check = r#"test "$DIRECTOR_CHECK_ADDRESS:$DIRECTOR_CHECK_PORT" = 10.0.1.11:8080"#;
    assert_eq!(
        run(spec(target, script(&["sh", "-c", env_check]))).await,
        Ok(())
    );
    // argv, not a shell: the `;` reaches `test` as an argument.
    assert_eq!(
        run(spec(target, script(&["test", "a", "=", "a;", "false"]))).await,
        Err(Failure::ScriptExit(2))
    );
    match run(spec(target, script(&["/nonexistent/check"]))).await {
        Err(Failure::ScriptSpawn(reason)) => {
            assert!(reason.contains("/nonexistent/check"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_hanging_script_is_killed_with_everything_it_started() {
    let dir = tempfile_dir();
    let pidfile = dir.join("pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
    match run(spec(target, script(&["sh", "-c", &cmd]))).await {
        Err(Failure::Timeout {
            stage: Stage::Script,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
    let gone = (0..50).any(|_| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for its new parent to reap it.
        if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(
        gone,
        "the script's background sleep {pid} survived its timeout"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_specs_are_rejected_before_running() {
    let t: SocketAddr = "127.0.0.1:80".parse().unwrap();
    let cases: Vec<(Probe, &str)> = vec![
        (
            Probe::Http(http("/", Some(BodyMatch::Regex("(".into())))),
            "does not compile",
        ),
        (Probe::Http(http("no-slash", None)), "must start with /"),
        (Probe::Http(http("/a b", None)), "must start with /"),
        (
            Probe::Http(HttpProbe {
                method: "GE T".into(),
                ..http("/", None)
            }),
            "not a token",
        ),
        (
            Probe::Http(HttpProbe {
                host: Some("a\r\nX-Injected: 1".into()),
                ..http("/", None)
            }),
            "control characters",
        ),
        (script(&[]), "empty command"),
        (
            https(true, None, Some("/nonexistent/ca.pem".into())),
            "/nonexistent/ca.pem",
        ),
        (https(false, Some("bad name!"), None), "neither a DNS name"),
    ];
    for (probe, want) in cases {
        let err = Prepared::new(spec(t, probe.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{probe:?}: {err}");
    }
    let mut s = spec(t, Probe::Tcp);
    s.timeout = Duration::from_secs(5);
    let err = Prepared::new(s).unwrap_err().to_string();
    assert!(err.contains("shorter than interval"), "{err}");
}

#[test]
fn every_failure_serializes_and_reads_back() {
    use healthcheck::Stage;
    let all = [
        Failure::Timeout {
            after: Duration::from_millis(300),
            stage: Stage::Connect,
        },
        Failure::Refused,
        Failure::Io {
            stage: Stage::Response,
            error: "reset".into(),
        },
        Failure::Tls("invalid peer certificate: UnknownIssuer".into()),
        Failure::Http("no status line".into()),
        Failure::Status {
            got: 503,
            expected: "200-299".into(),
        },
        Failure::Body("regex \"ok\" not found".into()),
        Failure::ScriptExit(3),
        Failure::ScriptSignal(9),
        Failure::ScriptSpawn("not found".into()),
    ];
    for f in all {
        let json = serde_json::to_string(&f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        let back: Failure = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(back, f);
    }
    assert_eq!(
        serde_json::to_string(&Failure::Tls("x".into())).unwrap(),
        r#"{"failure":"tls","detail":"x"}"#
    );
    assert_eq!(
        serde_json::to_string(&Failure::Refused).unwrap(),
        r#"{"failure":"refused"}"#
    );
}
