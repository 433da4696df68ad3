//! What `directorctl status` shows per real server on the nftables
//! dataplane, where there is no IPVS connection table to count: the
//! conntrack table, grouped like IPVS groups connections.
//!
//! IPVS counts a connection as active (`ActiveConn`) while it is TCP
//! ESTABLISHED and as inactive (`InActConn`) otherwise, UDP included
//! (ip_vs_conn.c, ip_vs_set_state). Here a virtual service is the
//! original destination, a real server the reply source (after DNAT).

use super::codec::Conntrack;
use std::net::SocketAddr;

/// One conntrack entry reduced to what the status display counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowSummary {
    /// IPPROTO_*.
    pub protocol: u8,
    /// The virtual service the client addressed.
    pub orig_dst: SocketAddr,
    /// The real server that answers.
    pub reply_src: SocketAddr,
    /// TCP ESTABLISHED: an IPVS "ActiveConn"; anything else "InActConn".
    pub tcp_established: bool,
}

/// Active and inactive connection counts of one (service, real server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowCount {
    pub protocol: u8,
    pub orig_dst: SocketAddr,
    pub reply_src: SocketAddr,
    pub active: u64,
    pub inactive: u64,
}

/// One summary per port-based entry (ICMP and other portless entries are
/// skipped: no IPVS service can match them), in table order.
pub fn flow_summary(entries: &[Conntrack]) -> Vec<FlowSummary> {
    entries
        .iter()
        .filter_map(|ct| {
            let orig_dst = SocketAddr::new(ct.orig.dst, ct.orig.dst_port?);
            let reply_src = SocketAddr::new(ct.reply.src, ct.reply.src_port?);
            Some(FlowSummary {
                protocol: ct.orig.protocol,
                orig_dst,
                reply_src,
                tcp_established: ct.is_tcp_established(),
            })
        })
        .collect()
}

/// [`flow_summary`] counted per (protocol, service, real server), sorted.
pub fn flow_counts(entries: &[Conntrack]) -> Vec<FlowCount> {
    let mut map = std::collections::BTreeMap::<(u8, SocketAddr, SocketAddr), (u64, u64)>::new();
    for f in flow_summary(entries) {
        let c = map
            .entry((f.protocol, f.orig_dst, f.reply_src))
            .or_default();
        if f.tcp_established {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
    }
    map.into_iter()
        .map(
            |((protocol, orig_dst, reply_src), (active, inactive))| FlowCount {
                protocol,
                orig_dst,
                reply_src,
                active,
                inactive,
            },
        )
        .collect()
}

/// The conntrack entries of the director's services as the text of
/// `/proc/net/ip_vs_conn`, so `directorctl conns` (the `ipvsadm -Lnc`
/// printer in `crate::format`) works unchanged on the nftables dataplane.
///
/// An entry belongs to one of the director's (desired) services when it was destination-NATed (its reply
/// source is not its original destination) and its
/// original destination is the service's address and port, or (fwmark
/// services, whose mark conntrack does not keep) its reply source is one
/// of the service's real servers. Columns follow ip_vs_conn_seq_show: IPv4
/// as 8 hex digits, IPv6 in full, ports as 4 hex digits, the state in
/// IPVS's words (ip_vs_proto_tcp.c `tcp_state_name_table`, seen from the
/// director: a client's SYN is `SYN_RECV`; UDP is `UDP`), the expiry in
/// seconds. SCTP state is not decoded: `ESTABLISHED` once the entry is
/// assured, else `INIT`.
pub fn ip_vs_conn_text(entries: &[Conntrack], services: &crate::desired::DesiredTable) -> String {
    use crate::model::ServiceKey;
    use std::fmt::Write as _;
    let mut out = String::from(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n",
    );
    let belongs = |ct: &Conntrack, vip: SocketAddr, rs: SocketAddr| {
        services.services.values().any(|s| match s.service.key {
            ServiceKey::Inet { addr, protocol } => {
                protocol.number() == u16::from(ct.orig.protocol)
                    && addr.ip() == vip.ip()
                    && (addr.port() == vip.port() || addr.port() == 0)
            }
            ServiceKey::Fwmark { .. } => s
                .dests
                .keys()
                .any(|d| d.addr == rs.ip() && (d.port == rs.port() || d.port == 0)),
        })
    };
    for ct in entries {
        let (Some(sport), Some(dport), Some(rport)) =
            (ct.orig.src_port, ct.orig.dst_port, ct.reply.src_port)
        else {
            continue;
        };
        let client = SocketAddr::new(ct.orig.src, sport);
        let vip = SocketAddr::new(ct.orig.dst, dport);
        let rs = SocketAddr::new(ct.reply.src, rport);
        // Destination-NATed: the answer comes from somewhere else than the
        // client addressed (judged from the tuples, which an entry written
        // by a sync peer carries even without the DST_NAT status bit).
        if rs == vip || !belongs(ct, vip, rs) {
            continue;
        }
        let (proto, state) = match ct.orig.protocol {
            6 => (
                "TCP",
                match ct.tcp.as_ref().map(|t| t.state.0) {
                    Some(1 | 2 | 9) => "SYN_RECV",
                    Some(3) => "ESTABLISHED",
                    Some(4) => "FIN_WAIT",
                    Some(5) => "CLOSE_WAIT",
                    Some(6) => "LAST_ACK",
                    Some(7) => "TIME_WAIT",
                    Some(8) => "CLOSE",
                    _ => "NONE",
                },
            ),
            17 => ("UDP", "UDP"),
            132 => (
                "SCTP",
                if ct.status.unwrap_or(0) & super::codec::status::ASSURED != 0 {
                    "ESTABLISHED"
                } else {
                    "INIT"
                },
            ),
            _ => continue,
        };
        let addr = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v4) => format!("{:08X}", u32::from(v4)),
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!(
                    "{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}:{:04x}",
                    s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
                )
            }
        };
        let _ = writeln!(
            out,
            "{:<3} {} {:04X} {} {:04X} {} {:04X} {:<11} {:>7}",
            proto,
            addr(client.ip()),
            client.port(),
            addr(vip.ip()),
            vip.port(),
            addr(rs.ip()),
            rs.port(),
            state,
            ct.timeout.unwrap_or(0)
        );
    }
    out
}

/// The conntrack table as the nftables dataplane's [`crate::nft::FlowSource`]
/// (ActiveConn/InActConn in `directorctl status`). Opens a socket per call:
/// status is rare and a socket held open would pin the netns of a test.
#[derive(Debug, Default)]
pub struct ConntrackFlows;

impl crate::nft::FlowSource for ConntrackFlows {
    fn flows(&mut self) -> Result<Vec<crate::nft::Flow>, String> {
        let entries = super::ConntrackSocket::open()
            .and_then(|mut s| s.dump(None))
            .map_err(|e| format!("conntrack dump: {e}"))?;
        Ok(flow_summary(&entries)
            .into_iter()
            .map(|f| crate::nft::Flow {
                protocol: f.protocol,
                orig_dst: f.orig_dst,
                reply_src: f.reply_src,
                tcp_established: f.tcp_established,
            })
            .collect())
    }

    /// One dump, then one ctnetlink delete per entry of a target (by its
    /// original tuple and zone, exactly as `conntrack -D` does). An entry
    /// gone meanwhile (ENOENT) is not a failure; any other refusal is
    /// reported after the rest were tried.
    fn delete_flows(
        &mut self,
        targets: &[(crate::model::ServiceKey, crate::model::DestKey)],
    ) -> Result<Vec<usize>, String> {
        let mut deleted = vec![0; targets.len()];
        if targets.is_empty() {
            return Ok(deleted);
        }
        let mut sock =
            super::ConntrackSocket::open().map_err(|e| format!("conntrack socket: {e}"))?;
        let entries = sock
            .dump(None)
            .map_err(|e| format!("conntrack dump: {e}"))?;
        let mut failed = 0usize;
        let mut first_error = None;
        for ct in &entries {
            let (Some(dport), Some(sport)) = (ct.orig.dst_port, ct.reply.src_port) else {
                continue;
            };
            let flow = crate::nft::Flow {
                protocol: ct.orig.protocol,
                orig_dst: SocketAddr::new(ct.orig.dst, dport),
                reply_src: SocketAddr::new(ct.reply.src, sport),
                tcp_established: ct.is_tcp_established(),
            };
            let Some(i) = targets.iter().position(|(s, d)| flow.served_by(s, d)) else {
                continue;
            };
            match sock.delete(&ct.orig, ct.zone) {
                Ok(()) => deleted[i] += 1,
                Err(super::ConntrackError::NotFound) => {}
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        match first_error {
            None => Ok(deleted),
            Some(e) => Err(format!(
                "{failed} conntrack entries could not be deleted ({} were): {e}",
                deleted.iter().sum::<usize>()
            )),
        }
    }
}
