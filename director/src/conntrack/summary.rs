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
