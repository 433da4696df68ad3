//! The control socket protocol: one JSON object per line each way.
//!
//! A client writes one [`Request`] line and reads one [`Response`] line. The
//! daemon side is defensive: a line longer than [`MAX_REQUEST_BYTES`], bytes
//! that are not UTF-8 JSON, or an unknown command get an `error` response
//! naming what was wrong, and the daemon carries on. The socket is created
//! 0600 (root only): it can reprogram the load balancer.

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(Box<StatusReply>),
    Conns { proc_ip_vs_conn: String },
    Reload(ReloadReply),
    Vrrp(Box<vrrp::driver::Snapshot>),
    Error { message: String },
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
}
