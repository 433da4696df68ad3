//! The two side effects of the nftables dataplane, each behind a trait:
//! running `nft` ([`NftExec`]) and reading conntrack ([`FlowSource`]).
//!
//! [`NftCli`] is the real executor: one `nft -f -` process per transaction
//! (nft sends the whole script as one netlink batch, so the kernel applies
//! all of it or none of it: `nf_tables_api.c`, `nfnetlink_rcv_batch` aborts
//! the batch on the first error) and `nft -j list table inet director` for
//! the dump.

use super::nfnl::{self, FastCmd, NfnlError};
use crate::model::{DestKey, ServiceKey};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The table every nft command of the director addresses.
pub const FAMILY: &str = "inet";
/// See [`FAMILY`].
pub const TABLE: &str = "director";

/// Why `nft` could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started (not installed, not executable).
    #[error("cannot run nft: {0}")]
    Spawn(String),
    /// nft refused the script or the kernel refused the batch. `stderr` is
    /// nft's own message, `/dev/stdin:LINE:COL: Error: ...` lines included.
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    /// `nft -j` printed something that is not the JSON we can read.
    #[error("cannot parse nft output: {0}")]
    Parse(String),
}

impl NftError {
    /// The 1-based script lines nft blamed (`/dev/stdin:LINE:COL-COL: Error:`).
    pub fn lines(&self) -> Vec<usize> {
        let NftError::Failed { stderr, .. } = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in stderr.lines() {
            let Some(rest) = line.strip_prefix("/dev/stdin:") else {
                continue;
            };
            let Some(num) = rest.split(':').next() else {
                continue;
            };
            if let Ok(n) = num.parse::<usize>() {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }
}

/// Runs nft scripts and lists the director's table.
pub trait NftExec: Send {
    /// Applies `script` as one transaction (all or nothing).
    fn apply(&mut self, script: &str) -> Result<(), NftError>;
    /// `nft -j list table inet director`; `None` when the table does not exist.
    fn list(&mut self) -> Result<Option<String>, NftError>;
    /// `nft -j list map inet director NAME` (one map, elements
    /// included); `None` when it does not exist.
    fn list_map(&mut self, name: &str) -> Result<Option<String>, NftError>;
    /// The nf_tables ruleset generation, when this executor can read it
    /// (`None`: unknown, every pass must dump).
    fn generation(&mut self) -> Option<u32> {
        None
    }
    /// Applies `cmds` as one netlink batch if the generation is still
    /// `generation` (see [`nfnl::Nfnl::apply`]).
    fn apply_fast(
        &mut self,
        cmds: &[FastCmd],
        generation: u32,
    ) -> Result<nfnl::Applied, NfnlError> {
        let _ = (cmds, generation);
        Err(NfnlError::Io(
            "this executor has no nf_tables socket".to_string(),
        ))
    }
}

/// The real executor: the `nft` binary, optionally inside a named network
/// namespace (`ip netns exec NAME nft ...`, for tests and benchmarks), plus
/// an nf_tables netlink socket in the same namespace for the generation
/// and the fast batches ([`nfnl`]).
#[derive(Default)]
pub struct NftCli {
    netns: Option<String>,
    binary: Option<String>,
    nfnl: FastSocket,
}

/// The netlink side of [`NftCli`], opened on first use.
#[derive(Default)]
enum FastSocket {
    #[default]
    NotOpened,
    Open(nfnl::Nfnl),
    /// Opening failed (no permission, no nf_tables): CLI only, reason kept.
    Unavailable(String),
}

impl std::fmt::Debug for NftCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftCli")
            .field("netns", &self.netns)
            .field("binary", &self.binary)
            .finish_non_exhaustive()
    }
}

/// A clone drives the same namespace with a socket of its own.
impl Clone for NftCli {
    fn clone(&self) -> Self {
        NftCli {
            netns: self.netns.clone(),
            binary: self.binary.clone(),
            nfnl: FastSocket::NotOpened,
        }
    }
}

impl NftCli {
    /// `nft` from `$PATH`, in the daemon's own network namespace.
    pub fn new() -> Self {
        NftCli::default()
    }

    /// `nft` run through `ip netns exec NAME`.
    pub fn in_netns(name: &str) -> Self {
        NftCli {
            netns: Some(name.to_string()),
            ..NftCli::default()
        }
    }

    fn socket(&mut self) -> Option<&mut nfnl::Nfnl> {
        if let FastSocket::NotOpened = self.nfnl {
            let opened = match &self.netns {
                Some(ns) => nfnl::Nfnl::open_in_netns(ns),
                None => nfnl::Nfnl::open(),
            };
            self.nfnl = match opened {
                Ok(s) => FastSocket::Open(s),
                Err(e) => FastSocket::Unavailable(e.to_string()),
            };
        }
        match &mut self.nfnl {
            FastSocket::Open(s) => Some(s),
            _ => None,
        }
    }

    /// Why the netlink side is not in use, if it is not.
    pub fn fast_unavailable(&self) -> Option<&str> {
        match &self.nfnl {
            FastSocket::Unavailable(why) => Some(why),
            _ => None,
        }
    }

    /// A specific `nft` binary (absolute path).
    pub fn with_binary(mut self, path: &str) -> Self {
        self.binary = Some(path.to_string());
        self
    }

    /// Whether nftables can be driven at all (`nft list tables`: the
    /// binary runs and the kernel has nf_tables), without reading any
    /// table's content (the first pass does that).
    pub fn probe(&self) -> Result<(), NftError> {
        let out = self
            .command()
            .args(["list", "tables"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NftError::Spawn(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
            })
        }
    }

    fn command(&self) -> Command {
        let nft = self.binary.clone().unwrap_or_else(|| "nft".to_string());
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &nft]);
                c
            }
            None => Command::new(nft),
        }
    }
}

impl NftExec for NftCli {
    fn apply(&mut self, script: &str) -> Result<(), NftError> {
        let mut child = self
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NftError::Spawn(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr
            // below say why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NftError::Spawn(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NftError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
            })
        }
    }

    fn list(&mut self) -> Result<Option<String>, NftError> {
        self.list_args(&["-j", "list", "table", FAMILY, TABLE])
    }

    fn list_map(&mut self, name: &str) -> Result<Option<String>, NftError> {
        self.list_args(&["-j", "list", "map", FAMILY, TABLE, name])
    }

    fn generation(&mut self) -> Option<u32> {
        let gen = self.socket()?.generation();
        match gen {
            Ok(g) => Some(g),
            Err(e) => {
                // A broken socket is reopened next time.
                self.nfnl = FastSocket::NotOpened;
                tracing::debug!(event = "nft_generation_failed", error = %e);
                None
            }
        }
    }

    fn apply_fast(
        &mut self,
        cmds: &[FastCmd],
        generation: u32,
    ) -> Result<nfnl::Applied, NfnlError> {
        let Some(sock) = self.socket() else {
            return Err(NfnlError::Io(
                self.fast_unavailable().unwrap_or("no socket").to_string(),
            ));
        };
        let r = sock.apply(cmds, generation);
        if let Err(NfnlError::Io(_)) = r {
            self.nfnl = FastSocket::NotOpened;
        }
        r
    }
}

impl NftCli {
    fn list_args(&mut self, args: &[&str]) -> Result<Option<String>, NftError> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NftError::Spawn(e.to_string()))?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        // nft reports a missing table as ENOENT ("No such file or directory").
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NftError::Failed {
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// One connection-tracking entry, reduced to what `ActiveConn`/`InActConn`
/// need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IANA protocol number.
    pub protocol: u8,
    /// Original direction destination: the VIP and service port.
    pub orig_dst: SocketAddr,
    /// Reply direction source: the real server the flow was DNATed to.
    pub reply_src: SocketAddr,
    /// TCP in state ESTABLISHED (IPVS counts these as active).
    pub tcp_established: bool,
}

impl Flow {
    /// Whether this flow is a connection of `service` that was DNATed to
    /// real server `dest`: what the nftables dataplane counts as that
    /// destination's connections and what cleaning up a dead destination
    /// deletes. The answer must come from `dest` (port 0: any port) for a
    /// client that addressed the service (its protocol, VIP and port; port
    /// 0: any). A fwmark service has no address to compare and conntrack
    /// does not keep the packet mark it was chosen by, so for it the real
    /// server alone decides.
    pub fn served_by(&self, service: &ServiceKey, dest: &DestKey) -> bool {
        let dnat = self.reply_src != self.orig_dst;
        let from_dest = self.reply_src.ip() == dest.addr
            && (dest.port == 0 || self.reply_src.port() == dest.port);
        let to_service = match service {
            ServiceKey::Inet { protocol, addr } => {
                u16::from(self.protocol) == protocol.number()
                    && self.orig_dst.ip() == addr.ip()
                    && (addr.port() == 0 || self.orig_dst.port() == addr.port())
            }
            ServiceKey::Fwmark { .. } => true,
        };
        dnat && from_dest && to_service
    }
}

/// Where the dataplane reads connection-tracking entries from, and deletes
/// those of a dead real server.
pub trait FlowSource: Send {
    fn flows(&mut self) -> Result<Vec<Flow>, String>;
    /// Deletes the flows [`Flow::served_by`] each of `targets`; returns how
    /// many were deleted per target. Entries that vanish meanwhile (closed,
    /// timed out) are not errors.
    fn delete_flows(&mut self, targets: &[(ServiceKey, DestKey)]) -> Result<Vec<usize>, String>;
}

/// A fixed list of flows (tests, benchmarks, hosts without conntrack).
#[derive(Debug, Clone, Default)]
pub struct FixedFlows(pub Vec<Flow>);

impl FlowSource for FixedFlows {
    fn flows(&mut self) -> Result<Vec<Flow>, String> {
        Ok(self.0.clone())
    }

    fn delete_flows(&mut self, targets: &[(ServiceKey, DestKey)]) -> Result<Vec<usize>, String> {
        let mut deleted = vec![0; targets.len()];
        self.0.retain(
            |f| match targets.iter().position(|(s, d)| f.served_by(s, d)) {
                Some(i) => {
                    deleted[i] += 1;
                    false
                }
                None => true,
            },
        );
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_of_a_service_and_destination() {
        let tcp80 = ServiceKey::Inet {
            protocol: crate::model::Protocol::Tcp,
            addr: "192.0.2.1:80".parse().unwrap(),
        };
        let any_port = ServiceKey::Inet {
            protocol: crate::model::Protocol::Tcp,
            addr: "192.0.2.1:0".parse().unwrap(),
        };
        let fwm = ServiceKey::Fwmark {
            family: crate::model::Family::V4,
            mark: 7,
        };
        let dest = DestKey {
            addr: "10.0.0.1".parse().unwrap(),
            port: 8080,
        };
        let flow = |proto: u8, dst: &str, src: &str| Flow {
            protocol: proto,
            orig_dst: dst.parse().unwrap(),
            reply_src: src.parse().unwrap(),
            tcp_established: true,
        };
        let f = flow(6, "192.0.2.1:80", "10.0.0.1:8080");
        assert!(f.served_by(&tcp80, &dest));
        assert!(f.served_by(&any_port, &dest));
        assert!(f.served_by(&fwm, &dest));
        assert!(f.served_by(&tcp80, &DestKey { port: 0, ..dest }));
        // Another real server, port, protocol, VIP or service port: not it.
        assert!(!flow(6, "192.0.2.1:80", "10.0.0.2:8080").served_by(&tcp80, &dest));
        assert!(!flow(6, "192.0.2.1:80", "10.0.0.1:8081").served_by(&tcp80, &dest));
        assert!(!flow(17, "192.0.2.1:80", "10.0.0.1:8080").served_by(&tcp80, &dest));
        assert!(!flow(6, "192.0.2.2:80", "10.0.0.1:8080").served_by(&tcp80, &dest));
        assert!(!flow(6, "192.0.2.1:81", "10.0.0.1:8080").served_by(&tcp80, &dest));
        // Not translated: a client talking to the real server directly.
        let direct = flow(6, "10.0.0.1:8080", "10.0.0.1:8080");
        assert!(!direct.served_by(&fwm, &dest));

        let mut fixed = FixedFlows(vec![f, flow(6, "192.0.2.1:80", "10.0.0.2:8080"), f]);
        assert_eq!(fixed.delete_flows(&[(tcp80, dest)]), Ok(vec![2]));
        assert_eq!(fixed.0.len(), 1);
    }

    #[test]
    fn error_lines_are_read_from_nft_stderr() {
        let e = NftError::Failed {
            status: "exit status: 1".into(),
            stderr: "/dev/stdin:4:24-30: Error: Could not process rule: File exists\n\
                     add element inet x m { 1.1.1.1 : 2.2.2.3 }\n\
                     ^^^^^^^\n/dev/stdin:9:1-2: Error: x\n/dev/stdin:4:1-1: Error: y"
                .into(),
        };
        assert_eq!(e.lines(), vec![4, 9]);
        assert!(NftError::Spawn("x".into()).lines().is_empty());
    }
}
