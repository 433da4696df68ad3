//! The control socket protocol: one JSON object per line each way.
//!
//! A client writes one [`Request`] line and reads one [`Response`] line. The
//! daemon side is defensive: a line longer than [`MAX_REQUEST_BYTES`], bytes
//! that are not UTF-8 JSON, or an unknown command get an `error` response
//! naming what was wrong, and the daemon carries on. The socket is created
//! 0600 (root only): it can reprogram the load balancer.
//!
//! One request is a stream: `{"cmd":"vrrp_follow"}` (`directorctl vrrp
//! --follow`). Its answer is many lines, still one JSON object each:
//!
//! ```text
//! {"result":"vrrp", ...}                 the snapshot: every instance as of
//!                                        its "last_event_seq" N
//! {"result":"vrrp_event","seq":N+1,...}  each event once the daemon has
//! {"result":"vrrp_event","seq":N+2,...}  executed it, in seq order
//! {"result":"vrrp_lost","first_seq":..,"last_seq":..,"missed":..}
//!                                        events this follower will never get
//!                                        (it read too slowly, or asked for
//!                                        more history than is kept)
//! ```
//!
//! until the client disconnects (or the daemon stops: the stream then ends
//! after the shutdown transitions). `"since": S` starts after event S
//! instead of N (the daemon keeps the last
//! [`crate::vrrp_host::follow::JOURNAL_EVENTS`]); S above N is refused,
//! it comes from an earlier daemon run. A daemon without VRRP instances
//! answers `error`. The client must keep its side open: closing it (EOF)
//! ends the stream.

use crate::model::KernelTable;
use crate::reconcile::OpFailure;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest request line the daemon reads before answering with an error.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
/// Extra fields in a request are ignored, so a newer `directorctl` can add
/// options that an older daemon simply does not act on.
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The whole kernel table, freshly dumped (`ipvsadm -Ln`).
    Status,
    /// The raw text of /proc/net/ip_vs_conn (`ipvsadm -Lnc`).
    Conns,
    /// Re-read the config file and apply only the difference.
    Reload,
    /// Every VRRP instance (`directorctl vrrp`).
    Vrrp,
    /// The snapshot, then every VRRP event as it is executed (`directorctl
    /// vrrp --follow`; a stream, see the module docs).
    VrrpFollow {
        /// Start after this event instead of after the snapshot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Pools, real servers and every health check (`directorctl health`).
    Health,
    /// Connection-state replication (`directorctl sync`, like
    /// `conntrackd -s`).
    Sync,
    /// Weight 0 for one real server, its connections kept (`directorctl
    /// drain VS RS`). `real_server` is `IP:PORT` (or an IP that is unique
    /// in the virtual server).
    Drain {
        virtual_server: String,
        real_server: String,
    },
    /// Ends a drain (`directorctl undrain VS RS`).
    Undrain {
        virtual_server: String,
        real_server: String,
    },
}

/// A service the director owns, as named in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedService {
    pub name: String,
    pub key: crate::model::ServiceKey,
}

/// What the last reconcile pass did, for humans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastPass {
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
    pub trigger: String,
    pub duration_seconds: f64,
    pub ops_applied: usize,
    pub errors: Vec<String>,
    pub conflicts: usize,
}

impl LastPass {
    pub fn errors_from(failures: &[OpFailure], dump_error: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = failures
            .iter()
            .map(|f| match &f.service_name {
                Some(n) => format!("virtual server \"{n}\": {}", f.error),
                None => f.error.clone(),
            })
            .collect();
        if let Some(e) = dump_error {
            v.push(e.to_string());
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The dataplane running: "ipvs" or "nftables".
    pub dataplane: String,
    /// What the config asked for ("auto" picks IPVS when the kernel has it).
    pub dataplane_configured: crate::config::DataplaneChoice,
    /// The kernel settings the dataplane depends on, as of the last pass.
    pub sysctls: Vec<crate::sysctl::SysctlState>,
    /// The `[[snat]]` rules the director keeps installed.
    pub snat: Vec<crate::config::Snat>,
    pub config_file: String,
    pub router_id: String,
    pub table: KernelTable,
    /// `ipvsadm -L --timeout`; `None` if the kernel would not say.
    pub timeouts: Option<crate::model::Timeouts>,
    /// `ipvsadm -L --daemon`: the kernel's connection-sync daemons.
    pub sync_daemons: Vec<crate::model::SyncDaemon>,
    pub owned: Vec<OwnedService>,
    pub exclusive: bool,
    pub reconcile_interval_seconds: f64,
    pub last_pass: Option<LastPass>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// `FILE:LINE:COL: message` lines when the new config was rejected; the
    /// running config is kept in that case.
    pub rejected: Vec<String>,
    pub last_pass: Option<LastPass>,
}

/// What `drain` / `undrain` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainReply {
    pub virtual_server: String,
    pub real_server: std::net::SocketAddr,
    /// Whether the request changed anything (draining a drained server
    /// does not).
    pub changed: bool,
    /// For humans: what happens now.
    pub message: String,
    /// The pass that applied it (`None` when nothing changed).
    pub last_pass: Option<LastPass>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReply>),
    Conns {
        proc_ip_vs_conn: String,
    },
    Reload(ReloadReply),
    Vrrp(Box<vrrp::driver::Snapshot>),
    /// One line of a `vrrp_follow` stream.
    VrrpEvent(Box<FollowedEvent>),
    /// Events `first_seq..=last_seq` of a `vrrp_follow` stream are lost to
    /// this follower (`missed` of them); the next line carries
    /// `last_seq + 1`.
    VrrpLost {
        first_seq: u64,
        last_seq: u64,
        missed: u64,
    },
    Health(Box<crate::health::view::HealthReply>),
    Sync(Box<SyncReply>),
    Drain(DrainReply),
    Error {
        message: String,
    },
}

impl Response {
    /// The loss line for events `first_seq..=last_seq`.
    pub fn vrrp_lost(first_seq: u64, last_seq: u64) -> Response {
        Response::VrrpLost {
            first_seq,
            last_seq,
            missed: last_seq.saturating_sub(first_seq).saturating_add(1),
        }
    }
}

/// A VRRP event as a follower receives it: the driver's event plus its
/// wall-clock time (the event's `at` is milliseconds since the driver
/// started, which means nothing to a reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowedEvent {
    /// Seconds since the Unix epoch.
    pub unix_time: f64,
    #[serde(flatten)]
    pub event: vrrp::driver::HostEvent,
}

/// `directorctl sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// Whether the config has a `[ctsync]` section.
    pub configured: bool,
    /// The driver's status, while it runs.
    pub running: Option<crate::ctsync_host::driver::SyncStatus>,
    /// Why it does not run although configured.
    pub error: Option<String>,
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("request is not UTF-8: {e}"))?;
    serde_json::from_str(text.trim()).map_err(|e| format!("bad request: {e}"))
}

/// Client-side errors of `directorctl`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source} (is `director run` up, and are you root?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("daemon sent an unreadable reply: {0}")]
    Reply(String),
}

/// Longest line `directorctl` accepts from the daemon (a snapshot of many
/// instances is the longest; a status reply of a large table is read by
/// [`request`] under its own larger cap).
pub const MAX_STREAM_LINE_BYTES: usize = 16 * 1024 * 1024;

/// An open streaming request (`vrrp_follow`), read line by line.
pub struct Stream {
    /// Both directions stay open while this lives: the daemon ends the
    /// stream when our side closes.
    reader: BufReader<UnixStream>,
}

/// A line of a stream: as received (for `--json`, passed through
/// untouched) and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamLine {
    pub raw: String,
    pub response: Response,
}

/// Sends a streaming request. Blocking, no read timeout: events may be
/// hours apart.
pub fn open_stream(socket: &Path, req: &Request) -> Result<Stream, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Reply(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(Stream {
        reader: BufReader::new(stream),
    })
}

impl Stream {
    /// The next line; `None` when the daemon closed the stream.
    pub fn next_line(&mut self) -> Result<Option<StreamLine>, ClientError> {
        let Some(bytes) = read_line_capped(&mut self.reader, MAX_STREAM_LINE_BYTES)? else {
            return Ok(None);
        };
        let raw = String::from_utf8(bytes)
            .map_err(|e| ClientError::Reply(format!("line is not UTF-8: {e}")))?;
        let response = serde_json::from_str(&raw).map_err(|e| ClientError::Reply(e.to_string()))?;
        Ok(Some(StreamLine { raw, response }))
    }
}

/// One line without its newline, at most `cap` bytes; `None` at EOF before
/// any byte. A line cut by EOF is returned as it is (the JSON decode then
/// names the problem).
pub fn read_line_capped(reader: &mut impl BufRead, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > cap {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line from the daemon is longer than {cap} bytes"),
            ));
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(line));
        }
    }
}

/// Sends one request and waits for its reply (blocking; for `directorctl`).
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Reply(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream.take(256 * 1024 * 1024));
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply)?;
    if reply.is_empty() {
        return Err(ClientError::Reply(
            "connection closed without a reply".into(),
        ));
    }
    serde_json::from_slice(&reply).map_err(|e| ClientError::Reply(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_named() {
        for r in [Request::Status, Request::Conns, Request::Reload] {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line).unwrap(), r);
        }
        assert_eq!(
            parse_request(br#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
        assert!(parse_request(b"\xff\xfe")
            .unwrap_err()
            .contains("not UTF-8"));
        assert!(parse_request(b"hello")
            .unwrap_err()
            .starts_with("bad request"));
        let e = parse_request(br#"{"cmd":"format_disk"}"#).unwrap_err();
        assert!(e.contains("format_disk"), "{e}");
        assert_eq!(
            parse_request(br#"{"cmd":"status","x":1}"#).unwrap(),
            Request::Status
        );
        assert!(parse_request(br#"{"nocmd":1}"#)
            .unwrap_err()
            .contains("cmd"));
    }

    #[test]
    fn health_and_drain_requests_have_a_plain_wire_form() {
        let drain = Request::Drain {
            virtual_server: "web".into(),
            real_server: "10.0.0.1:80".into(),
        };
        assert_eq!(
            serde_json::to_string(&drain).unwrap(),
            r#"{"cmd":"drain","virtual_server":"web","real_server":"10.0.0.1:80"}"#
        );
        for r in [
            Request::Health,
            drain,
            Request::Undrain {
                virtual_server: "web".into(),
                real_server: "10.0.0.1".into(),
            },
        ] {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line).unwrap(), r);
        }
        let e = parse_request(br#"{"cmd":"drain","virtual_server":"web"}"#).unwrap_err();
        assert!(e.contains("real_server"), "{e}");
    }

    #[test]
    fn vrrp_follow_requests_round_trip_and_bad_since_is_refused() {
        for r in [
            Request::Vrrp,
            Request::VrrpFollow { since: None },
            Request::VrrpFollow { since: Some(0) },
            Request::VrrpFollow {
                since: Some(u64::MAX),
            },
        ] {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line).unwrap(), r);
        }
        // The wire form a script writes by hand.
        assert_eq!(
            serde_json::to_string(&Request::VrrpFollow { since: None }).unwrap(),
            r#"{"cmd":"vrrp_follow"}"#
        );
        assert_eq!(
            parse_request(br#"{"cmd":"vrrp_follow","since":12}"#).unwrap(),
            Request::VrrpFollow { since: Some(12) }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"vrrp_follow","since":null}"#).unwrap(),
            Request::VrrpFollow { since: None }
        );
        for bad in [
            &br#"{"cmd":"vrrp_follow","since":-1}"#[..],
            br#"{"cmd":"vrrp_follow","since":"12"}"#,
            br#"{"cmd":"vrrp_follow","since":1.5}"#,
            br#"{"cmd":"vrrp_follow","since":18446744073709551616}"#,
        ] {
            let e = parse_request(bad).unwrap_err();
            assert!(e.starts_with("bad request"), "{e}");
        }
    }

    fn event(seq: u64, action: vrrp::machine::Action) -> FollowedEvent {
        FollowedEvent {
            unix_time: 1_700_000_000.25,
            event: vrrp::driver::HostEvent {
                seq,
                at: vrrp::Time::from_millis(1500),
                instance: "VI_1".into(),
                interface: "eth0".into(),
                action,
            },
        }
    }

    #[test]
    fn stream_lines_are_flat_json_objects_that_round_trip() {
        use vrrp::machine::{Action, Reason, State};
        let ev = event(
            7,
            Action::StateChange {
                old: State::Backup,
                new: State::Master,
                reason: Reason::MasterDownTimer,
            },
        );
        let line = serde_json::to_string(&Response::VrrpEvent(Box::new(ev.clone()))).unwrap();
        assert_eq!(
            line,
            r#"{"result":"vrrp_event","unix_time":1700000000.25,"seq":7,"at":1500,"instance":"VI_1","interface":"eth0","action":{"action":"state_change","old":"backup","new":"master","reason":"master_down_timer"}}"#
        );
        assert_eq!(
            serde_json::from_str::<Response>(&line).unwrap(),
            Response::VrrpEvent(Box::new(ev))
        );
        let vips = event(
            8,
            Action::AddVips {
                addresses: vec!["192.0.2.100".parse().unwrap()],
                accept: false,
            },
        );
        let line = serde_json::to_string(&Response::VrrpEvent(Box::new(vips.clone()))).unwrap();
        assert_eq!(
            serde_json::from_str::<Response>(&line).unwrap(),
            Response::VrrpEvent(Box::new(vips))
        );
        let lost = Response::vrrp_lost(9, 15);
        let line = serde_json::to_string(&lost).unwrap();
        assert_eq!(
            line,
            r#"{"result":"vrrp_lost","first_seq":9,"last_seq":15,"missed":7}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), lost);
        // Every line of a stream is one line: no newline inside.
        assert!(!line.contains('\n'));
    }

    #[test]
    fn stream_lines_are_read_whole_capped_and_without_newline() {
        let mut r = std::io::BufReader::with_capacity(4, &b"{\"a\":1}\n\nlast"[..]);
        assert_eq!(
            read_line_capped(&mut r, 100).unwrap(),
            Some(b"{\"a\":1}".to_vec())
        );
        assert_eq!(read_line_capped(&mut r, 100).unwrap(), Some(Vec::new()));
        assert_eq!(
            read_line_capped(&mut r, 100).unwrap(),
            Some(b"last".to_vec())
        );
        assert_eq!(read_line_capped(&mut r, 100).unwrap(), None);
        let mut r = std::io::BufReader::with_capacity(4, &b"0123456789\n"[..]);
        let e = read_line_capped(&mut r, 9).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let mut r = std::io::BufReader::new(&b"0123456789\n"[..]);
        assert_eq!(
            read_line_capped(&mut r, 10).unwrap(),
            Some(b"0123456789".to_vec())
        );
    }
}
