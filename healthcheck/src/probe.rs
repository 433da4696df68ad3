//! The probes themselves: one async function per kind, each bounded by the
//! check's `timeout` as a whole, each failing with a [`Failure`] that says
//! what went wrong and at which stage, so `directorctl health` can show an
//! operator "timed out reading the response after 1s" rather than "down".
//!
//! A [`Prepared`] check holds what is built once from its [`CheckSpec`]: the
//! compiled body regex, the TLS client config, the server name. Building it
//! is where bad check config is caught ([`SpecError`]), so `director check`
//! can reject it before anything runs.

use crate::http1::{self, BodyDecoder, HttpError};
use crate::spec::{BodyMatch, CheckSpec, HttpProbe, Probe, ScriptProbe};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where in a probe it was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    Handshake,
    Request,
    Response,
    Script,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connecting",
            Stage::Handshake => "in the TLS handshake",
            Stage::Request => "sending the request",
            Stage::Response => "reading the response",
            Stage::Script => "waiting for the script",
        })
    }
}

/// The stage a running probe is in, readable after its future was dropped
/// by the timeout (an atomic, because probe futures must be `Send`).
struct StageCell(AtomicU8);

impl StageCell {
    const ORDER: [Stage; 5] = [
        Stage::Connect,
        Stage::Handshake,
        Stage::Request,
        Stage::Response,
        Stage::Script,
    ];

    fn new() -> StageCell {
        StageCell(AtomicU8::new(0))
    }

    fn set(&self, stage: Stage) {
        let i = Self::ORDER.iter().position(|s| *s == stage).unwrap_or(0);
        self.0.store(i as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Stage {
        Self::ORDER[usize::from(self.0.load(Ordering::Relaxed)) % Self::ORDER.len()]
    }
}

/// Why a probe failed. `Display` is the reason an operator reads.
///
/// Serialized adjacently tagged (`{"failure":"tls","detail":"..."}`,
/// `{"failure":"refused"}`): an internally tagged form cannot carry the
/// variants that hold a plain string or number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "failure", content = "detail", rename_all = "snake_case")]
pub enum Failure {
    #[error("timed out after {after:?} {stage}")]
    Timeout { after: Duration, stage: Stage },
    #[error("connection refused")]
    Refused,
    #[error("{stage}: {error}")]
    Io { stage: Stage, error: String },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("bad HTTP response: {0}")]
    Http(String),
    #[error("HTTP status {got}, expected {expected}")]
    Status { got: u16, expected: String },
    #[error("body check failed: {0}")]
    Body(String),
    #[error("script exited with status {0}")]
    ScriptExit(i32),
    #[error("script killed by signal {0}")]
    ScriptSignal(i32),
    #[error("cannot run script: {0}")]
    ScriptSpawn(String),
}

impl Failure {
    /// Short label for the metrics `outcome`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout { .. } => "timeout",
            Failure::Refused => "refused",
            Failure::Io { .. } => "io_error",
            Failure::Tls(_) => "tls_error",
            Failure::Http(_) => "bad_response",
            Failure::Status { .. } => "bad_status",
            Failure::Body(_) => "body_mismatch",
            Failure::ScriptExit(_) | Failure::ScriptSignal(_) => "script_failed",
            Failure::ScriptSpawn(_) => "script_error",
        }
    }
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Failure {
        Failure::Http(e.to_string())
    }
}

/// Check config that cannot work, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("body regex {pattern:?} does not compile: {error}")]
    Regex { pattern: String, error: String },
    #[error("ca_file {path}: {error}")]
    CaFile { path: String, error: String },
    #[error("TLS server name {0:?} is neither a DNS name nor an IP address")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("script has an empty command")]
    EmptyArgv,
    #[error("HTTP method {0:?} is not a token")]
    Method(String),
    #[error("HTTP path {0:?} must start with / and contain no spaces or control characters")]
    Path(String),
    #[error("Host {0:?} contains spaces or control characters")]
    Host(String),
    #[error("timeout {timeout:?} must be shorter than interval {interval:?}")]
    Timeout {
        timeout: Duration,
        interval: Duration,
    },
}

/// A check ready to run: its spec plus what was built from it once.
#[derive(Debug)]
pub struct Prepared {
    spec: CheckSpec,
    regex: Option<regex::Regex>,
    tls: Option<TlsPrepared>,
    request: Vec<u8>,
}

struct TlsPrepared {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsPrepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPrepared")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    pub fn new(spec: CheckSpec) -> Result<Prepared, SpecError> {
        if spec.timeout > spec.interval {
            return Err(SpecError::Timeout {
                timeout: spec.timeout,
                interval: spec.interval,
            });
        }
        let mut regex = None;
        let mut tls = None;
        let mut request = Vec::new();
        match &spec.probe {
            Probe::Tcp => {}
            Probe::Script(ScriptProbe { argv }) => {
                if argv.first().is_none_or(|p| p.is_empty()) {
                    return Err(SpecError::EmptyArgv);
                }
            }
            Probe::Http(http) | Probe::Https { http, .. } => {
                request = build_request(http, spec.target)?;
                if let Some(BodyMatch::Regex(pattern)) = &http.body {
                    regex = Some(regex::Regex::new(pattern).map_err(|e| SpecError::Regex {
                        pattern: pattern.clone(),
                        error: e.to_string(),
                    })?);
                }
                if let Probe::Https { tls: t, .. } = &spec.probe {
                    let name = t
                        .sni
                        .clone()
                        .or_else(|| http.host.as_deref().map(strip_port).map(str::to_owned));
                    let server_name = match name {
                        Some(n) => {
                            ServerName::try_from(n.clone()).map_err(|_| SpecError::ServerName(n))?
                        }
                        None => ServerName::IpAddress(spec.target.ip().into()),
                    };
                    let config = tls_config(t.verify, t.ca_file.as_deref())?;
                    tls = Some(TlsPrepared {
                        connector: tokio_rustls::TlsConnector::from(config),
                        server_name,
                    });
                }
            }
        }
        Ok(Prepared {
            spec,
            regex,
            tls,
            request,
        })
    }

    pub fn spec(&self) -> &CheckSpec {
        &self.spec
    }

    /// Runs one probe, bounded by the spec's timeout.
    pub async fn run(&self) -> Result<(), Failure> {
        let stage = StageCell::new();
        let timeout = self.spec.timeout;
        let outcome = tokio::time::timeout(timeout, self.run_unbounded(&stage)).await;
        match outcome {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout {
                after: timeout,
                stage: stage.get(),
            }),
        }
    }

    async fn run_unbounded(&self, stage: &StageCell) -> Result<(), Failure> {
        match &self.spec.probe {
            Probe::Tcp => tcp(self.spec.target).await,
            Probe::Script(s) => {
                stage.set(Stage::Script);
                script(s, self.spec.target).await
            }
            Probe::Http(http) => {
                let stream = connect_nodelay(self.spec.target).await?;
                self.exchange(http, stream, stage).await
            }
            Probe::Https { http, .. } => {
                let stream = connect_nodelay(self.spec.target).await?;
                let Some(tls) = &self.tls else {
                    return Err(Failure::Tls("no TLS configuration".into()));
                };
                stage.set(Stage::Handshake);
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| Failure::Tls(tls_reason(&e)))?;
                self.exchange(http, stream, stage).await
            }
        }
    }

    /// Sends the request, reads and checks the response.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        http: &HttpProbe,
        mut stream: S,
        stage: &StageCell,
    ) -> Result<(), Failure> {
        stage.set(Stage::Request);
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| io(Stage::Request, &e))?;
        stream.flush().await.map_err(|e| io(Stage::Request, &e))?;
        stage.set(Stage::Response);
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        let (head, head_len) = loop {
            if let Some(parsed) = http1::parse_head(&buf)? {
                break parsed;
            }
            let n = read_some(&mut stream, &mut chunk).await?;
            if n == 0 {
                return Err(HttpError::TruncatedHead(buf.len()).into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if !http.expect_status.iter().any(|r| r.contains(head.status)) {
            let expected: Vec<String> = http.expect_status.iter().map(|r| r.to_string()).collect();
            return Err(Failure::Status {
                got: head.status,
                expected: expected.join(","),
            });
        }
        let Some(body_match) = &http.body else {
            // Status is all that was asked: do not read an enormous body.
            return Ok(());
        };
        let mut body = BodyDecoder::new(head.framing);
        body.feed(&buf[head_len..])?;
        while !body.is_complete() {
            let n = read_some(&mut stream, &mut chunk).await?;
            if n == 0 {
                break;
            }
            body.feed(&chunk[..n])?;
        }
        let body = body.finish()?;
        self.check_body(body_match, &body)
    }

    fn check_body(&self, m: &BodyMatch, body: &[u8]) -> Result<(), Failure> {
        use md5::Digest as _;
        match m {
            BodyMatch::Regex(pattern) => {
                let text = String::from_utf8_lossy(body);
                match &self.regex {
                    Some(re) if re.is_match(&text) => Ok(()),
                    _ => Err(Failure::Body(format!(
                        "no match for {pattern:?} in {} bytes",
                        body.len()
                    ))),
                }
            }
            BodyMatch::Md5(want) => {
                let got: [u8; 16] = md5::Md5::digest(body).into();
                digest_result("md5", &got, want)
            }
            BodyMatch::Sha256(want) => {
                let got: [u8; 32] = sha2::Sha256::digest(body).into();
                digest_result("sha256", &got, want)
            }
        }
    }
}

fn digest_result(name: &str, got: &[u8], want: &[u8]) -> Result<(), Failure> {
    if got == want {
        return Ok(());
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Err(Failure::Body(format!(
        "{name} {} is not the expected {}",
        hex(got),
        hex(want)
    )))
}

async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> Result<usize, Failure> {
    match stream.read(buf).await {
        Ok(n) => Ok(n),
        // A TLS server that closes without close_notify: the data read so
        // far is all there is (RFC 8446 6.1 makes this the server's fault,
        // but most HTTPS servers do it with Connection: close).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(io(Stage::Response, &e)),
    }
}

fn io(stage: Stage, e: &std::io::Error) -> Failure {
    Failure::Io {
        stage,
        error: e.to_string(),
    }
}

/// `host` without a trailing `:port` (and without IPv6 brackets).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn build_request(http: &HttpProbe, target: SocketAddr) -> Result<Vec<u8>, SpecError> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !is_token(&http.method) {
        return Err(SpecError::Method(http.method.clone()));
    }
    let clean = |s: &str| !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if !http.path.starts_with('/') || !clean(&http.path) {
        return Err(SpecError::Path(http.path.clone()));
    }
    // RFC 9110 7.2: Host = uri-host [ ":" port ].
    let host = match &http.host {
        Some(h) if clean(h) && !h.is_empty() => h.clone(),
        Some(h) => return Err(SpecError::Host(h.clone())),
        None => target.to_string(),
    };
    Ok(format!(
        "{} {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: director-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        http.method, http.path
    )
    .into_bytes())
}

async fn connect(target: SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(target)
        .await
        .map_err(crate::tcp::connect_failure)
}

/// [`connect`] for the probes that send a request: the request goes out
/// at once instead of waiting on Nagle.
async fn connect_nodelay(target: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = connect(target).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Connect, then close with a reset (zero linger), as HAProxy's TCP checks
/// do: a graceful close would leave one TIME_WAIT socket per probe on the
/// director (60 s each, so 600,000 at 10,000 checks per second), and the
/// server learns nothing more from a FIN than from a RST. When the kernel
/// knows the outcome as soon as `connect()` returns (a nearby server) the
/// probe is done without the reactor, on a reused socket (see
/// [`crate::tcp`]); otherwise it waits for the handshake like
/// `TcpStream::connect`.
async fn tcp(target: SocketAddr) -> Result<(), Failure> {
    let fd = match crate::tcp::start(target) {
        crate::tcp::Started::Done(result) => return result,
        crate::tcp::Started::Pending(fd) => fd,
    };
    let stream =
        TcpStream::from_std(std::net::TcpStream::from(fd)).map_err(|e| io(Stage::Connect, &e))?;
    // Writable once the handshake is over, either way; SO_ERROR says
    // which (what `TcpStream::connect` does). Dropping the stream closes
    // it with a RST (the socket has zero linger).
    stream
        .writable()
        .await
        .map_err(crate::tcp::connect_failure)?;
    match stream.take_error() {
        Ok(None) => Ok(()),
        Ok(Some(e)) | Err(e) => Err(crate::tcp::connect_failure(e)),
    }
}

/// Runs the script with the target in its environment; exit status 0 is
/// success.
async fn script(s: &ScriptProbe, target: SocketAddr) -> Result<(), Failure> {
    let env = [
        ("DIRECTOR_CHECK_ADDRESS", target.ip().to_string()),
        ("DIRECTOR_CHECK_PORT", target.port().to_string()),
    ];
    run_command(&s.argv, &env).await
}

/// Runs `argv` (no shell, no stdio) with `env` added; exit status 0 is
/// success. The program runs in a process group of its own, and dropping
/// the future (a caller's timeout) kills the whole group: `kill_on_drop`
/// alone reaches only the direct child, so a `sleep` started by a shell
/// script would outlive it. The director's VRRP track scripts and notify
/// hooks run through this too.
pub async fn run_command(argv: &[String], env: &[(&str, String)]) -> Result<(), Failure> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Failure::ScriptSpawn("empty command".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::ScriptSpawn(format!("{program}: {e}")))?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let _guard = GroupKiller(group);
    let status = child
        .wait()
        .await
        .map_err(|e| Failure::ScriptSpawn(e.to_string()))?;
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(Failure::ScriptExit(code)),
        (None, Some(sig)) => Err(Failure::ScriptSignal(sig)),
        (None, None) => Err(Failure::ScriptSpawn(status.to_string())),
    }
}

/// Kills a process group when dropped (a finished script's group is
/// usually empty; ESRCH is fine).
struct GroupKiller(Option<rustix::process::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(
    verify: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, SpecError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SpecError::Tls(e.to_string()))?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let ca_err = |error: String| SpecError::CaFile {
                    path: path.display().to_string(),
                    error,
                };
                use rustls::pki_types::pem::PemObject as _;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca_err(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| ca_err(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca_err("no PEM certificates in it".into()));
                }
                for c in certs {
                    roots.add(c).map_err(|e| ca_err(e.to_string()))?;
                }
            }
            None => {
                // The system store; unreadable entries are skipped, as
                // every other TLS client on the box does.
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `verify = false`: any certificate is accepted, but the handshake
/// signatures are still checked, so the peer must hold the key of the
/// certificate it sent (what keepalived's SSL_GET does without a CA).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
