//! The kernel side of replication over ctnetlink: [`KernelTable`]
//! ([`ConntrackTable`]) and [`KernelEvents`] ([`EventSource`]), the
//! mapping between [`ctsync::Entry`] and [`conntrack::Conntrack`]
//! ([`to_kernel`], [`from_kernel`]) and the [`Filter`] that decides which
//! flows replicate.
//!
//! ## Mapping
//!
//! An [`Entry`] carries both tuples as the master's kernel reported them
//! (the reply tuple translated). A kernel given that translated reply
//! tuple in a NEW finds nothing to translate and mangles nothing; given
//! the plain (inverted) reply tuple plus CTA_NAT_DST / CTA_NAT_SRC it
//! sets up the same translation and sets IPS_DST_NAT / IPS_SRC_NAT
//! itself ([`Conntrack::with_nat_from_tuples`]). Status: every bit of
//! `IPS_UNCHANGEABLE_MASK` is left to the kernel and IPS_CONFIRMED is
//! always sent (`codec::encode_attrs`): `ctnetlink_change_status`
//! (net/netfilter/nf_conntrack_netlink.c) refuses with EBUSY a status
//! whose EXPECTED / CONFIRMED / DYING bits differ from the entry's, and
//! every entry in the table is CONFIRMED. TCP: state, window scales and
//! the flags of both directions, with IP_CT_TCP_FLAG_BE_LIBERAL added
//! (mask 0xff, so the written flags are exactly these): the window
//! tracking data (`td_end`, `td_maxwin`, ...) is not replicated, and
//! without it `tcp_in_window` (nf_conntrack_proto_tcp.c) can judge the
//! first packets after a failover out of window; such packets get no
//! conntrack and so no NAT. conntrackd does the same with its default
//! `TCPWindowTracking Off`.
//!
//! Reading back ([`from_kernel`]) leaves out what only describes how one
//! box handled the entry, so that master and backup report the same
//! [`Entry`] for one connection and the session's digests agree: the
//! NAT_DONE bits (set by whichever box ran the NAT hooks, or by the NAT
//! setup of a write), EXPECTED / SEQ_ADJUST / TEMPLATE / UNTRACKED
//! (never written), and BE_LIBERAL (added by our writes).
//!
//! ## Upsert (what the kernel refuses, and what we do then)
//!
//! `ctnetlink_new_conntrack` looks the entry up by original tuple and
//! zone. Absent: created (`ctnetlink_create_conntrack`, NAT set up from
//! CTA_NAT_*). Present and no NLM_F_EXCL: `ctnetlink_change_conntrack`,
//! which refuses any CTA_NAT_SRC / CTA_NAT_DST ("only allow NAT changes
//! and master assignation for new conntracks": EOPNOTSUPP), never looks
//! at the reply tuple given (a changed translation would be silently
//! kept as it was), and refuses (EBUSY) clearing SEEN_REPLY or ASSURED,
//! which "can only be set". So an upsert is, per entry and batched:
//!
//! 1. NEW with NLM_F_CREATE|NLM_F_EXCL and the NAT attributes. Done,
//!    unless EEXIST.
//! 2. EEXIST: GET the entry. Same reply tuple and no SEEN_REPLY /
//!    ASSURED to clear: 3. Otherwise the kernel's entry is another
//!    connection (a stale local one, or the NAT changed): 4.
//! 3. NEW without NLM_F_CREATE and without NAT attributes (an update of
//!    timeout, status, TCP state, mark). ENOENT (it expired meanwhile):
//!    1; EBUSY (a status the kernel will not change): 4.
//! 4. DELETE then NEW|CREATE|EXCL in the same send (the kernel runs them
//!    in order).
//!
//! ENOMEM on a create is the table being full (`nf_conntrack_max`, and
//! nothing could be early-dropped): reported as `table_full`. A delete of
//! an absent entry (ENOENT) is what we wanted. An entry is one netlink
//! message, so it is written whole or not at all.
//!
//! ## Loosening (entries this box created, once the peer forwards them)
//!
//! Writes of entries received from the peer turn window tracking off
//! (IP_CT_TCP_FLAG_BE_LIBERAL, above), the update path too: the flags go
//! out with mask 0xff and `nlattr_to_tcp` (nf_conntrack_proto_tcp.c)
//! applies `seen[dir].flags = (flags & ~mask) | (new & mask)` to an
//! existing entry. But an entry the session never rewrites keeps the
//! window data of whoever last forwarded it. That is every connection a
//! box forwarded itself: when it steps down (VRRP backup or fault, its
//! daemon and the sync session still running) the replicated set already
//! equals its kernel, so nothing is written back; the peer then forwards
//! the connections and their sequence numbers move on. When this box
//! takes over again, the first ACK from the client acknowledges data it
//! never saw: `tcp_in_window` returns NFCT_TCP_INVALID, "ACK is over
//! upper bound (ACKed data not seen yet)" unless the sender's flags hold
//! BE_LIBERAL (`nf_tcp_log_invalid`); an invalid packet is not attached
//! to its entry, so it is not translated either: the VIP's own stack
//! answers it with a RST. Seen in the failover tests: every connection
//! reset after a failback from fault.
//!
//! So on becoming backup (and at start, when the kernel may hold entries
//! from an earlier time as master) the driver calls
//! [`ConntrackTable::loosen`]: a dump, then, for each replicated TCP entry
//! without BE_LIBERAL in both directions, an update carrying only the
//! original tuple and CTA_PROTOINFO_TCP with BE_LIBERAL under mask
//! BE_LIBERAL (no status, timeout or mark: those stay as they are). The
//! TCP state attribute is always part of our encoding, so it is sent
//! back as dumped; on a backup no packet of these flows passes, and the
//! ctsync writes run on the same thread, so nothing changes it between
//! the dump and the update.
//!
//! ## Events
//!
//! [`KernelEvents`] reads the NEW / UPDATE / DESTROY groups. Events whose
//! `nlmsg_pid` is the port id of the [`KernelTable`]'s socket are the
//! echo of our own writes (see `conntrack::events` for the kernel code
//! that puts it there) and are suppressed: they are replicated state
//! coming back, not local changes. An overrun becomes
//! [`SourceBatch::Overrun`] after the events read before it.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctsync::{Entry, Event, Key, L4};

use super::table::{Applied, ConntrackTable, EventSource, SourceBatch, Subscription};
use crate::conntrack::codec::{proto, status};
use crate::conntrack::{
    errno_of, Answer, Conntrack, ConntrackError, ConntrackSocket, EventKind, EventSocket, Icmp,
    Request, TcpFlags, TcpInfo, TcpState, Tuple,
};

/// include/uapi/linux/netfilter/nf_conntrack_tcp.h.
pub mod tcp_flag {
    pub const WINDOW_SCALE: u8 = 0x01;
    pub const SACK_PERM: u8 = 0x02;
    pub const CLOSE_INIT: u8 = 0x04;
    pub const BE_LIBERAL: u8 = 0x08;
}

/// Status bits [`from_kernel`] leaves out (module doc).
pub const LOCAL_STATUS: u32 = status::SRC_NAT_DONE
    | status::DST_NAT_DONE
    | status::EXPECTED
    | status::SEQ_ADJUST
    | status::TEMPLATE
    | status::UNTRACKED;

/// Why an entry cannot be mapped (nothing of it is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("addresses of different families in one entry")]
    MixedFamily,
    #[error("the original tuple is protocol {orig}, the reply tuple {reply}")]
    ProtocolMismatch { orig: u8, reply: u8 },
    #[error("protocol {proto} needs {want} in the {tuple} tuple")]
    WrongL4 {
        proto: u8,
        tuple: &'static str,
        want: &'static str,
    },
    #[error("the {tuple} tuple has only one of its two ports")]
    HalfPorts { tuple: &'static str },
    #[error("the {tuple} tuple has a zone of its own (CTA_TUPLE_ZONE): directional zones are not replicated")]
    DirectionalZone { tuple: &'static str },
    #[error("TCP entry without TCP state (CTA_PROTOINFO_TCP)")]
    TcpWithoutState,
    #[error("TCP state {0} is not one the kernel accepts (TCP_CONNTRACK_MAX is 10)")]
    TcpState(u8),
    #[error("TCP state on a protocol {0} entry")]
    TcpStateOnNonTcp(u8),
    #[error("no {0} in the kernel's entry")]
    Missing(&'static str),
}

fn l4_to_kernel(proto_num: u8, t: &ctsync::Tuple, tuple: &'static str) -> Result<Tuple, MapError> {
    let mut k = Tuple::ports(proto_num, t.src, 0, t.dst, 0);
    let needs = match proto_num {
        proto::ICMP | proto::ICMPV6 => "ICMP id/type/code",
        ctsync::entry::proto::TCP
        | ctsync::entry::proto::UDP
        | ctsync::entry::proto::UDPLITE
        | ctsync::entry::proto::SCTP
        | ctsync::entry::proto::DCCP
        | ctsync::entry::proto::GRE => "ports",
        _ => "",
    };
    match (t.l4, needs) {
        (L4::Ports { src, dst }, "ports" | "") => {
            k.src_port = Some(src);
            k.dst_port = Some(dst);
        }
        (
            L4::Icmp {
                id,
                icmp_type,
                icmp_code,
            },
            "ICMP id/type/code",
        ) => {
            k.src_port = None;
            k.dst_port = None;
            k.icmp = Some(Icmp {
                id,
                kind: icmp_type,
                code: icmp_code,
            });
        }
        (L4::None, "") => {
            k.src_port = None;
            k.dst_port = None;
        }
        (_, want) => {
            return Err(MapError::WrongL4 {
                proto: proto_num,
                tuple,
                want: if want.is_empty() {
                    "no ICMP fields"
                } else {
                    want
                },
            })
        }
    }
    Ok(k)
}

fn l4_from_kernel(t: &Tuple, tuple: &'static str) -> Result<ctsync::Tuple, MapError> {
    if t.zone.is_some() {
        return Err(MapError::DirectionalZone { tuple });
    }
    let l4 = match (t.icmp, t.src_port, t.dst_port) {
        (Some(i), None, None) => L4::Icmp {
            id: i.id,
            icmp_type: i.kind,
            icmp_code: i.code,
        },
        (None, Some(src), Some(dst)) => L4::Ports { src, dst },
        (None, None, None) => L4::None,
        _ => return Err(MapError::HalfPorts { tuple }),
    };
    Ok(ctsync::Tuple {
        src: t.src,
        dst: t.dst,
        l4,
    })
}

/// The kernel's original tuple and zone of a key (what DELETE and GET
/// look an entry up by).
pub fn key_to_kernel(k: &Key) -> Result<(Tuple, Option<u16>), MapError> {
    k.family().map_err(|_| MapError::MixedFamily)?;
    let t = l4_to_kernel(k.proto, &k.original, "original")?;
    Ok((t, (k.zone != 0).then_some(k.zone)))
}

/// The entry as a ctnetlink create request (module doc): NAT from the
/// tuples, writable status bits, timeout, mark, zone, TCP protoinfo.
pub fn to_kernel(e: &Entry) -> Result<Conntrack, MapError> {
    e.family().map_err(|_| MapError::MixedFamily)?;
    let orig = l4_to_kernel(e.proto, &e.original, "original")?;
    let reply = l4_to_kernel(e.proto, &e.reply, "reply")?;
    let tcp = match (e.proto, e.tcp) {
        (proto::TCP, Some(t)) => {
            if t.state >= TcpState::MAX {
                return Err(MapError::TcpState(t.state));
            }
            let flags = |f: u8| TcpFlags {
                flags: f | tcp_flag::BE_LIBERAL,
                mask: 0xff,
            };
            Some(TcpInfo {
                state: TcpState(t.state),
                wscale_orig: Some(t.wscale_original),
                wscale_reply: Some(t.wscale_reply),
                flags_orig: Some(flags(t.flags_original)),
                flags_reply: Some(flags(t.flags_reply)),
                unknown: Vec::new(),
            })
        }
        (proto::TCP, None) => return Err(MapError::TcpWithoutState),
        (p, Some(_)) => return Err(MapError::TcpStateOnNonTcp(p)),
        (_, None) => None,
    };
    let mut ct = Conntrack::new(orig, reply).with_nat_from_tuples();
    ct.zone = (e.zone != 0).then_some(e.zone);
    ct.status = Some(e.status);
    ct.timeout = Some(e.timeout);
    ct.mark = Some(e.mark);
    ct.tcp = tcp;
    Ok(ct)
}

/// The key of a kernel entry (enough for a DESTROY event).
pub fn key_from_kernel(ct: &Conntrack) -> Result<Key, MapError> {
    Ok(Key {
        proto: ct.orig.protocol,
        zone: ct.zone.unwrap_or(0),
        original: l4_from_kernel(&ct.orig, "original")?,
    })
}

/// A kernel entry (dump, GET or event) as a replicated entry.
pub fn from_kernel(ct: &Conntrack) -> Result<Entry, MapError> {
    if ct.orig.protocol != ct.reply.protocol {
        return Err(MapError::ProtocolMismatch {
            orig: ct.orig.protocol,
            reply: ct.reply.protocol,
        });
    }
    let tcp = match (ct.orig.protocol, &ct.tcp) {
        (proto::TCP, Some(t)) => Some(ctsync::TcpInfo {
            state: t.state.0,
            wscale_original: t.wscale_orig.unwrap_or(0),
            wscale_reply: t.wscale_reply.unwrap_or(0),
            flags_original: t.flags_orig.map_or(0, |f| f.flags & !tcp_flag::BE_LIBERAL),
            flags_reply: t.flags_reply.map_or(0, |f| f.flags & !tcp_flag::BE_LIBERAL),
        }),
        (proto::TCP, None) => return Err(MapError::TcpWithoutState),
        _ => None,
    };
    let e = Entry {
        proto: ct.orig.protocol,
        original: l4_from_kernel(&ct.orig, "original")?,
        reply: l4_from_kernel(&ct.reply, "reply")?,
        status: ct.status.ok_or(MapError::Missing("CTA_STATUS"))? & !LOCAL_STATUS,
        timeout: ct.timeout.ok_or(MapError::Missing("CTA_TIMEOUT"))?,
        mark: ct.mark.unwrap_or(0),
        zone: ct.zone.unwrap_or(0),
        tcp,
    };
    e.family().map_err(|_| MapError::MixedFamily)?;
    Ok(e)
}

// ------------------------------------------------------------------ filter

/// The ignore list's prefixes: `[ctsync] ignore`, validated by the config
/// (host bits zero).
pub use crate::config::Cidr;

/// Which flows replicate: the original destination is a VIP, or the reply
/// goes to an SNAT source address, and neither end of the original
/// direction is in the ignore list (the boxes' own addresses: health
/// checks, the sync link, management traffic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    vips: HashSet<IpAddr>,
    snat_sources: HashSet<IpAddr>,
    ignore: Vec<Cidr>,
}

impl Filter {
    pub fn new(
        vips: impl IntoIterator<Item = IpAddr>,
        snat_sources: impl IntoIterator<Item = IpAddr>,
        ignore: impl IntoIterator<Item = Cidr>,
    ) -> Filter {
        Filter {
            vips: vips.into_iter().collect(),
            snat_sources: snat_sources.into_iter().collect(),
            ignore: ignore.into_iter().collect(),
        }
    }

    /// VIPs of every `[[vrrp_instance]]` and the addresses of every
    /// address-based `[[virtual_server]]` (fwmark services have none:
    /// their flows replicate through their VIPs), the `to_source` of
    /// every `[[snat]]`.
    pub fn from_config(config: &crate::config::Config, ignore: &[Cidr]) -> Filter {
        let vips = config
            .vrrp_instances
            .iter()
            .flat_map(|i| i.virtual_ipaddresses.iter().map(|(a, _)| *a))
            .chain(config.virtual_servers.iter().filter_map(|vs| match vs.key {
                crate::model::ServiceKey::Inet { addr, .. } => Some(addr.ip()),
                crate::model::ServiceKey::Fwmark { .. } => None,
            }));
        Filter::new(
            vips,
            config.snat.iter().map(|s| s.to_source),
            ignore.iter().copied(),
        )
    }

    fn accepts(&self, orig_src: IpAddr, orig_dst: IpAddr, reply_dst: IpAddr) -> bool {
        (self.vips.contains(&orig_dst) || self.snat_sources.contains(&reply_dst))
            && !self
                .ignore
                .iter()
                .any(|c| c.contains(&orig_src) || c.contains(&orig_dst))
    }

    /// Whether a kernel entry replicates.
    pub fn matches(&self, ct: &Conntrack) -> bool {
        self.accepts(ct.orig.src, ct.orig.dst, ct.reply.dst)
    }

    /// Whether a replicated entry passes (the same rule on its tuples).
    pub fn matches_entry(&self, e: &Entry) -> bool {
        self.accepts(e.original.src, e.original.dst, e.reply.dst)
    }

    /// Whether a key alone passes: VIP flows only, since an SNAT flow is
    /// recognised by its reply tuple, which a key lacks (destroy events
    /// carry both tuples and go through [`Filter::matches`]).
    pub fn matches_key(&self, k: &Key) -> bool {
        self.vips.contains(&k.original.dst)
            && !self
                .ignore
                .iter()
                .any(|c| c.contains(&k.original.src) || c.contains(&k.original.dst))
    }
}

// ------------------------------------------------------------------ table

/// Opens the table and the event source in the calling thread's network
/// namespace; the events know the table's port id, so the echo of its
/// writes is suppressed.
pub fn open(filter: Filter) -> Result<(KernelTable, KernelEvents), ConntrackError> {
    open_with(filter, crate::conntrack::events::DEFAULT_RCVBUF)
}

/// [`open`] with an event receive buffer of `event_rcvbuf` bytes.
pub fn open_with(
    filter: Filter,
    event_rcvbuf: usize,
) -> Result<(KernelTable, KernelEvents), ConntrackError> {
    let sock = ConntrackSocket::open()?;
    let portid = sock.portid()?;
    let mut events = EventSocket::with_rcvbuf(event_rcvbuf)?;
    events.skip_portid(portid);
    Ok((
        KernelTable {
            sock,
            filter: filter.clone(),
            portid,
        },
        KernelEvents {
            sock: events,
            filter,
            pending_overrun: false,
            stats: EventStats::default(),
        },
    ))
}

/// [`ConntrackTable`] over ctnetlink.
pub struct KernelTable {
    sock: ConntrackSocket,
    filter: Filter,
    portid: u32,
}

/// The step an entry of an upsert is at (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Verify,
    Update,
    Replace,
}

/// Rounds of an upsert before an entry that keeps changing under us is
/// given up on (create, verify, update, replace, and one more create).
const MAX_ROUNDS: usize = 6;

struct Item {
    key: Key,
    ct: Conntrack,
    /// The reply tuple the kernel should end up with (translated).
    want_reply: Tuple,
    want_status: u32,
    step: Step,
}

fn same_tuple(a: &Tuple, b: &Tuple) -> bool {
    a.src == b.src
        && a.dst == b.dst
        && a.protocol == b.protocol
        && a.src_port == b.src_port
        && a.dst_port == b.dst_port
        && a.icmp == b.icmp
}

fn fail(out: &mut Applied, key: Key, e: &ConntrackError) {
    out.table_full |= matches!(e, ConntrackError::TableFull);
    out.failed.push((key, e.to_string()));
}

impl KernelTable {
    /// The port id of the socket the writes go out on.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    fn run_batch(&mut self, reqs: &[Request<'_>], n: usize) -> Vec<Answer> {
        match self.sock.batch(reqs) {
            Ok(a) => a,
            // The socket failed: every answer of this round is unknown,
            // each entry is reported failed with the socket's error.
            Err(e) => {
                let msg = e.to_string();
                (0..n)
                    .map(|_| {
                        Err(ConntrackError::Io {
                            what: "sending a batch",
                            source: std::io::Error::other(msg.clone()),
                        })
                    })
                    .collect()
            }
        }
    }
}

impl ConntrackTable for KernelTable {
    fn upsert(&mut self, entries: &[Entry]) -> Applied {
        let mut out = Applied::default();
        let mut items: Vec<Item> = Vec::with_capacity(entries.len());
        for e in entries {
            match to_kernel(e) {
                Ok(ct) => {
                    let want_reply = match l4_to_kernel(e.proto, &e.reply, "reply") {
                        Ok(t) => t,
                        Err(err) => {
                            out.failed.push((e.key(), err.to_string()));
                            continue;
                        }
                    };
                    items.push(Item {
                        key: e.key(),
                        ct,
                        want_reply,
                        want_status: e.status,
                        step: Step::Create,
                    })
                }
                Err(err) => out
                    .failed
                    .push((e.key(), format!("cannot map entry: {err}"))),
            }
        }
        for _ in 0..MAX_ROUNDS {
            if items.is_empty() {
                break;
            }
            // One request per item, two (delete, create) for a replace.
            let answers = {
                let mut reqs = Vec::with_capacity(items.len());
                for it in &items {
                    let zone = it.ct.zone;
                    match it.step {
                        Step::Create => reqs.push(Request::Create(&it.ct)),
                        Step::Verify => reqs.push(Request::Get {
                            orig: &it.ct.orig,
                            zone,
                        }),
                        Step::Update => reqs.push(Request::Update(&it.ct)),
                        Step::Replace => {
                            reqs.push(Request::Delete {
                                orig: &it.ct.orig,
                                zone,
                            });
                            reqs.push(Request::Create(&it.ct));
                        }
                    }
                }
                let n = reqs.len();
                self.run_batch(&reqs, n)
            };
            let mut answers = answers.into_iter();
            let mut next = Vec::new();
            for mut it in items {
                let a = answers.next().unwrap_or(Err(ConntrackError::Unanswered {
                    what: "collecting upsert answers",
                    sent: 1,
                    answered: 0,
                }));
                let replace_create = (it.step == Step::Replace).then(|| answers.next()).flatten();
                let errno = a.as_ref().err().and_then(errno_of);
                let step = match (it.step, a) {
                    (Step::Create, Ok(_)) | (Step::Update, Ok(_)) => None,
                    (Step::Create, Err(ConntrackError::Exists)) => Some(Step::Verify),
                    (Step::Verify, Ok(Some(cur))) => {
                        let held = cur.status.unwrap_or(0) & (status::SEEN_REPLY | status::ASSURED);
                        let clears = held & !it.want_status != 0;
                        if same_tuple(&cur.reply, &it.want_reply) && !clears {
                            Some(Step::Update)
                        } else {
                            Some(Step::Replace)
                        }
                    }
                    (Step::Verify, Ok(None)) => {
                        fail(
                            &mut out,
                            it.key,
                            &ConntrackError::Unanswered {
                                what: "reading an existing entry (ACK without the entry)",
                                sent: 1,
                                answered: 0,
                            },
                        );
                        None
                    }
                    (Step::Verify | Step::Update, Err(ConntrackError::NotFound)) => {
                        Some(Step::Create)
                    }
                    (Step::Update, Err(_)) if errno == Some(libc::EBUSY) => Some(Step::Replace),
                    (Step::Replace, Ok(_) | Err(ConntrackError::NotFound)) => {
                        match replace_create {
                            Some(Ok(_)) => None,
                            Some(Err(ConntrackError::Exists)) => Some(Step::Verify),
                            Some(Err(e)) => {
                                fail(&mut out, it.key, &e);
                                continue;
                            }
                            None => {
                                fail(
                                    &mut out,
                                    it.key,
                                    &ConntrackError::Unanswered {
                                        what: "re-creating an entry",
                                        sent: 1,
                                        answered: 0,
                                    },
                                );
                                continue;
                            }
                        }
                    }
                    (_, Err(e)) => {
                        fail(&mut out, it.key, &e);
                        continue;
                    }
                };
                match step {
                    None => out.written += 1,
                    Some(s) => {
                        it.step = s;
                        next.push(it);
                    }
                }
            }
            items = next;
        }
        for it in items {
            out.failed.push((
                it.key,
                format!(
                    "entry kept changing in the kernel during {MAX_ROUNDS} rounds (last step {:?})",
                    it.step
                ),
            ));
        }
        out
    }

    fn delete(&mut self, keys: &[Key]) -> Applied {
        let mut out = Applied::default();
        let mut mapped = Vec::with_capacity(keys.len());
        for k in keys {
            match key_to_kernel(k) {
                Ok((t, zone)) => mapped.push((*k, t, zone)),
                Err(e) => out.failed.push((*k, format!("cannot map key: {e}"))),
            }
        }
        let reqs: Vec<Request<'_>> = mapped
            .iter()
            .map(|(_, orig, zone)| Request::Delete { orig, zone: *zone })
            .collect();
        let answers = self.run_batch(&reqs, reqs.len());
        for ((k, _, _), a) in mapped.iter().zip(answers) {
            match a {
                Ok(_) | Err(ConntrackError::NotFound) => out.written += 1,
                Err(e) => fail(&mut out, *k, &e),
            }
        }
        out
    }

    fn dump(&mut self) -> Result<Vec<Entry>, ConntrackError> {
        let all = self.sock.dump(None)?;
        let mut out = Vec::with_capacity(all.len());
        let mut unmappable = 0usize;
        let mut first = None;
        for ct in all.iter().filter(|ct| self.filter.matches(ct)) {
            match from_kernel(ct) {
                Ok(e) => out.push(e),
                Err(e) => {
                    unmappable += 1;
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first {
            tracing::warn!(
                event = "ctsync_unmappable_entries",
                count = unmappable,
                first = %e,
                "conntrack entries matching the filter that cannot be replicated"
            );
        }
        Ok(out)
    }

    fn loosen(&mut self) -> Result<Applied, ConntrackError> {
        let all = self.sock.dump(None)?;
        let mut items = Vec::new();
        for ct in all.iter().filter(|ct| self.filter.matches(ct)) {
            if let (Some(u), Ok(key)) = (Self::loosened(ct), key_from_kernel(ct)) {
                items.push((key, u));
            }
        }
        let reqs: Vec<Request<'_>> = items.iter().map(|(_, u)| Request::Update(u)).collect();
        let answers = self.run_batch(&reqs, reqs.len());
        let mut out = Applied::default();
        for ((key, _), a) in items.iter().zip(answers) {
            match a {
                // ENOENT: it ended since the dump; nothing to loosen.
                Ok(_) | Err(ConntrackError::NotFound) => out.written += 1,
                Err(e) => fail(&mut out, *key, &e),
            }
        }
        Ok(out)
    }
}

impl KernelTable {
    /// The update of [`ConntrackTable::loosen`] for one kernel entry, or
    /// `None` if it needs none (not TCP, or liberal both ways already).
    fn loosened(ct: &Conntrack) -> Option<Conntrack> {
        let t = ct.tcp.as_ref()?;
        let liberal = |f: Option<TcpFlags>| f.is_some_and(|f| f.flags & tcp_flag::BE_LIBERAL != 0);
        if liberal(t.flags_orig) && liberal(t.flags_reply) {
            return None;
        }
        let only = TcpFlags {
            flags: tcp_flag::BE_LIBERAL,
            mask: tcp_flag::BE_LIBERAL,
        };
        let mut u = Conntrack::new(ct.orig.clone(), ct.reply.clone());
        u.zone = ct.zone;
        u.tcp = Some(TcpInfo {
            state: t.state,
            wscale_orig: None,
            wscale_reply: None,
            flags_orig: Some(only),
            flags_reply: Some(only),
            unknown: Vec::new(),
        });
        Some(u)
    }
}

// ------------------------------------------------------------------ events

/// Counters of [`KernelEvents`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events read from the kernel.
    pub read: u64,
    /// Echoes of the table's own writes, suppressed.
    pub echoes: u64,
    /// Events of flows the filter leaves out.
    pub filtered: u64,
    /// Events of matching flows that cannot be mapped to an [`Entry`].
    pub unmappable: u64,
    /// Overruns (ENOBUFS) and batches with undecodable messages.
    pub overruns: u64,
}

/// [`EventSource`] over the ctnetlink event groups.
pub struct KernelEvents {
    sock: EventSocket,
    filter: Filter,
    pending_overrun: bool,
    stats: EventStats,
}

impl KernelEvents {
    pub fn stats(&self) -> EventStats {
        self.stats
    }

    /// The receive buffer the kernel granted the event socket.
    pub fn rcvbuf(&self) -> usize {
        self.sock.rcvbuf()
    }
}

impl Subscription for crate::conntrack::events::Membership {
    fn set_listening(&self, on: bool) -> Result<(), ConntrackError> {
        self.set(on)
    }
}

impl EventSource for KernelEvents {
    fn subscription(&self) -> Arc<dyn Subscription> {
        Arc::new(self.sock.membership())
    }

    fn next_batch(&mut self, timeout: Duration) -> Result<Option<SourceBatch>, ConntrackError> {
        if std::mem::take(&mut self.pending_overrun) {
            return Ok(Some(SourceBatch::Overrun));
        }
        let Some(b) = self.sock.next_batch(timeout)? else {
            return Ok(None);
        };
        // Echoes of our own writes, dropped by the socket undecoded.
        self.stats.read += b.skipped;
        self.stats.echoes += b.skipped;
        let lost = b.lost();
        if lost {
            self.stats.overruns += 1;
            tracing::warn!(
                event = "ctsync_event_overrun",
                overrun = b.overrun,
                undecodable = b.undecodable,
                first_error = b.first_decode_error.as_deref().unwrap_or(""),
                "conntrack events lost; the session reconciles against a dump"
            );
        }
        let mut events = Vec::with_capacity(b.events.len());
        for ev in b.events {
            self.stats.read += 1;
            if !self.filter.matches(&ev.entry) {
                self.stats.filtered += 1;
                continue;
            }
            let mapped = match ev.kind {
                EventKind::New => from_kernel(&ev.entry).map(Event::New),
                EventKind::Update => from_kernel(&ev.entry).map(Event::Update),
                EventKind::Destroy => key_from_kernel(&ev.entry).map(Event::Destroy),
            };
            match mapped {
                Ok(e) => events.push(e),
                Err(e) => {
                    self.stats.unmappable += 1;
                    tracing::debug!(event = "ctsync_unmappable_event", error = %e);
                }
            }
        }
        match (events.is_empty(), lost) {
            (true, true) => Ok(Some(SourceBatch::Overrun)),
            (true, false) => Ok(None),
            (false, lost) => {
                self.pending_overrun = lost;
                Ok(Some(SourceBatch::Events(events)))
            }
        }
    }
}

// ------------------------------------------------------------------ measure

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurements {
    pub entries: usize,
    /// Entries per `sendmsg` (about [`crate::conntrack::BATCH_BYTES`] each).
    pub batch_entries: usize,
    pub upsert: Duration,
    /// Updating every entry again (the GET + change path).
    pub update: Duration,
    pub dump: Duration,
    /// Events read (and decoded, filtered, mapped) after the upsert.
    pub events_read: u64,
    pub events_overrun: bool,
    pub events: Duration,
    pub delete: Duration,
}

impl Measurements {
    fn rate(n: usize, d: Duration) -> f64 {
        n as f64 / d.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for Measurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries;
        writeln!(
            f,
            "upsert (create) {n} entries: {:?} = {:.0} entries/s, {} entries per sendmsg",
            self.upsert,
            Measurements::rate(n, self.upsert),
            self.batch_entries
        )?;
        writeln!(
            f,
            "upsert (update) {n} entries: {:?} = {:.0} entries/s",
            self.update,
            Measurements::rate(n, self.update)
        )?;
        writeln!(
            f,
            "dump {n} entries: {:?} = {:.0} entries/s",
            self.dump,
            Measurements::rate(n, self.dump)
        )?;
        writeln!(
            f,
            "events read {} (overrun: {}): {:?} = {:.0} events/s",
            self.events_read,
            self.events_overrun,
            self.events,
            Measurements::rate(self.events_read as usize, self.events)
        )?;
        write!(
            f,
            "delete {n} entries: {:?} = {:.0} entries/s",
            self.delete,
            Measurements::rate(n, self.delete)
        )
    }
}

/// `n` distinct DNAT TCP entries client -> `vip`:80, answered by ten real
/// servers (synthetic load for tests and [`measure`]).
pub fn synthetic_entries(n: usize, vip: std::net::Ipv4Addr) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let client = std::net::Ipv4Addr::from(0x0a40_0000u32 + (i / 50_000) as u32);
            let port = 10_000 + (i % 50_000) as u16;
            let rs = std::net::Ipv4Addr::new(10, 1, 0, 10 + (i % 10) as u8);
            Entry {
                proto: proto::TCP,
                original: ctsync::Tuple {
                    src: client.into(),
                    dst: vip.into(),
                    l4: L4::Ports { src: port, dst: 80 },
                },
                reply: ctsync::Tuple {
                    src: rs.into(),
                    dst: client.into(),
                    l4: L4::Ports {
                        src: 8080,
                        dst: port,
                    },
                },
                status: status::SEEN_REPLY | status::ASSURED | status::CONFIRMED | status::DST_NAT,
                timeout: 600,
                mark: 7,
                zone: 0,
                tcp: Some(ctsync::TcpInfo {
                    state: ctsync::entry::tcp_state::ESTABLISHED,
                    wscale_original: 7,
                    wscale_reply: 7,
                    flags_original: tcp_flag::WINDOW_SCALE | tcp_flag::SACK_PERM,
                    flags_reply: tcp_flag::WINDOW_SCALE | tcp_flag::SACK_PERM,
                }),
            }
        })
        .collect()
}

/// Measures, in the calling thread's network namespace (use an empty,
/// scratch one: it writes `n` entries there and deletes them again),
/// upsert, update, dump, event reading and delete of `n` synthetic
/// entries. The event socket gets a buffer large enough for all of
/// them (`event_rcvbuf`), so the event figure is the read + decode +
/// map rate of a full queue.
pub fn measure(n: usize, event_rcvbuf: usize) -> Result<Measurements, ConntrackError> {
    let vip = std::net::Ipv4Addr::new(192, 0, 2, 100);
    let filter = Filter::new([IpAddr::from(vip)], [], []);
    let (mut table, _) = open_with(filter.clone(), 1 << 20)?;
    // A second event source, which skips the port id of its own table,
    // not this one's: the echoes are read as events (what a peer's writes
    // cost).
    let (_, mut events) = open_with(filter, event_rcvbuf)?;
    let entries = synthetic_entries(n, vip);
    let refused = |what: &'static str, a: &Applied| -> Result<(), ConntrackError> {
        match a.failed.first() {
            Some((k, why)) => Err(ConntrackError::Refused {
                what,
                errno: 0,
                message: format!("{} of {n} failed, first {k:?}: {why}", a.failed.len()),
            }),
            None => Ok(()),
        }
    };

    let t = Instant::now();
    let a = table.upsert(&entries);
    let upsert = t.elapsed();
    refused("measuring upsert", &a)?;

    let t = Instant::now();
    let mut events_read = 0u64;
    let mut events_overrun = false;
    while let Some(b) = events.next_batch(Duration::from_millis(200))? {
        match b {
            SourceBatch::Events(v) => events_read += v.len() as u64,
            SourceBatch::Overrun => events_overrun = true,
        }
    }
    // The last poll waited 200 ms for nothing.
    let events_time = t.elapsed().saturating_sub(Duration::from_millis(200));

    let mut updated = entries.clone();
    for e in &mut updated {
        e.timeout = 300;
    }
    let t = Instant::now();
    let a = table.upsert(&updated);
    let update = t.elapsed();
    refused("measuring update", &a)?;

    let t = Instant::now();
    let dumped = table.dump()?;
    let dump = t.elapsed();
    if dumped.len() != n {
        return Err(ConntrackError::Refused {
            what: "measuring dump",
            errno: 0,
            message: format!("dumped {} entries, wrote {n}", dumped.len()),
        });
    }

    let keys: Vec<Key> = entries.iter().map(Entry::key).collect();
    let t = Instant::now();
    let a = table.delete(&keys);
    let delete = t.elapsed();
    refused("measuring delete", &a)?;

    let one = {
        let mut w = crate::netlink::Writer::new();
        let ct = to_kernel(&entries[0]).map_err(|e| ConntrackError::Refused {
            what: "measuring batch size",
            errno: 0,
            message: e.to_string(),
        })?;
        crate::conntrack::codec::encode_new(&mut w, 1, &ct)?;
        w.buf.len()
    };
    Ok(Measurements {
        entries: n,
        batch_entries: crate::conntrack::BATCH_BYTES.div_ceil(one),
        upsert,
        update,
        dump,
        events_read,
        events_overrun,
        events: events_time,
        delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::codec::{self, AttrSet};
    use crate::conntrack::{refusal, Family};
    use ctsync::entry::{proto as p, status as st};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn dnat() -> Entry {
        synthetic_entries(1, std::net::Ipv4Addr::new(192, 0, 2, 100))[0]
    }

    /// What the kernel reports for an entry it was given as `ct`: the
    /// translated reply tuple, the NAT and NAT_DONE bits it sets itself,
    /// the flags as written.
    fn as_kernel_reports(ct: &Conntrack, reply: Tuple) -> Conntrack {
        let mut k = ct.clone();
        k.reply = reply;
        let mut s = ct.status.unwrap() | st::CONFIRMED | st::SRC_NAT_DONE | st::DST_NAT_DONE;
        if ct.nat_dst.is_some() {
            s |= st::DST_NAT;
        }
        if ct.nat_src.is_some() {
            s |= st::SRC_NAT;
        }
        k.status = Some(s);
        k.nat_dst = None;
        k.nat_src = None;
        k.id = Some(1234);
        // Dumps carry the flags with a zero mask.
        if let Some(t) = &mut k.tcp {
            for f in [&mut t.flags_orig, &mut t.flags_reply]
                .into_iter()
                .flatten()
            {
                f.mask = 0;
            }
        }
        k
    }

    #[test]
    fn dnat_entry_maps_to_a_create_with_nat_dst_and_back() {
        let e = dnat();
        let ct = to_kernel(&e).unwrap();
        // The request carries the plain reply tuple plus CTA_NAT_DST.
        assert_eq!(ct.reply, ct.orig.inverted());
        let n = ct.nat_dst.clone().unwrap();
        assert_eq!(n.min_ip, e.reply.src);
        assert_eq!((n.min_port, n.max_port), (Some(8080), Some(8080)));
        assert!(ct.nat_src.is_none());
        assert_eq!(ct.mark, Some(7));
        assert_eq!(ct.zone, None);
        let t = ct.tcp.clone().unwrap();
        assert_eq!(t.state, TcpState::ESTABLISHED);
        assert_eq!(
            t.flags_orig.unwrap().flags & tcp_flag::BE_LIBERAL,
            tcp_flag::BE_LIBERAL
        );
        assert_eq!(t.flags_orig.unwrap().mask, 0xff);

        let reply = l4_to_kernel(e.proto, &e.reply, "reply").unwrap();
        let back = from_kernel(&as_kernel_reports(&ct, reply)).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn snat_plus_dnat_entry_round_trips() {
        let mut e = dnat();
        e.reply.dst = ip("198.51.100.1");
        e.reply.l4 = L4::Ports {
            src: 8080,
            dst: 61000,
        };
        e.status |= st::SRC_NAT;
        e.zone = 9;
        e.mark = 0xdead;
        let ct = to_kernel(&e).unwrap();
        let s = ct.nat_src.clone().unwrap();
        assert_eq!(s.min_ip, ip("198.51.100.1"));
        assert_eq!(s.min_port, Some(61000));
        assert!(ct.nat_dst.is_some());
        assert_eq!(ct.zone, Some(9));
        // The encoded create request has both NAT nests; the update
        // request (AttrSet::Update) has neither.
        let mut w = crate::netlink::Writer::new();
        codec::encode_new(&mut w, 1, &ct).unwrap();
        let mut u = crate::netlink::Writer::new();
        codec::encode_update(&mut u, 2, &ct).unwrap();
        let created = codec::decode(&w.buf[16..]).unwrap();
        let updated = codec::decode(&u.buf[16..]).unwrap();
        assert_eq!(created.nat_src, ct.nat_src);
        assert_eq!(created.nat_dst, ct.nat_dst);
        assert_eq!((updated.nat_src, updated.nat_dst), (None, None));
        assert_eq!(updated.timeout, Some(e.timeout));
        let reply = l4_to_kernel(e.proto, &e.reply, "reply").unwrap();
        assert_eq!(from_kernel(&as_kernel_reports(&ct, reply)).unwrap(), e);
        // AttrSet::Create sends CONFIRMED and no kernel-only bits.
        assert_eq!(
            created.status,
            Some((e.status & !codec::status::UNCHANGEABLE) | st::CONFIRMED)
        );
        let _ = AttrSet::Create;
    }

    #[test]
    fn plain_icmp_and_v6_entries_round_trip_without_nat() {
        let mut e = dnat();
        e.proto = p::ICMP;
        e.tcp = None;
        e.original.l4 = L4::Icmp {
            id: 7,
            icmp_type: 8,
            icmp_code: 0,
        };
        e.reply = ctsync::Tuple {
            src: e.original.dst,
            dst: e.original.src,
            l4: L4::Icmp {
                id: 7,
                icmp_type: 0,
                icmp_code: 0,
            },
        };
        // Every entry in a kernel table is CONFIRMED, the master's too.
        e.status = st::SEEN_REPLY | st::CONFIRMED;
        let ct = to_kernel(&e).unwrap();
        assert!(ct.nat_dst.is_none() && ct.nat_src.is_none());
        assert_eq!(ct.orig.icmp.unwrap().kind, 8);
        let mut k = ct.clone();
        k.status = Some(st::SEEN_REPLY | st::CONFIRMED);
        assert_eq!(from_kernel(&k).unwrap(), e);

        let mut v6 = dnat();
        v6.original.src = ip("2001:db8::1");
        v6.original.dst = ip("2001:db8::100");
        v6.reply.src = ip("2001:db8:1::11");
        v6.reply.dst = ip("2001:db8::1");
        let ct = to_kernel(&v6).unwrap();
        assert_eq!(ct.family, Family::Ipv6);
        assert_eq!(ct.nat_dst.unwrap().min_ip, ip("2001:db8:1::11"));
    }

    #[test]
    fn entries_that_cannot_be_mapped_are_typed_errors() {
        let mut e = dnat();
        e.reply.src = ip("2001:db8::1");
        assert_eq!(to_kernel(&e), Err(MapError::MixedFamily));

        let mut e = dnat();
        e.original.l4 = L4::None;
        assert!(matches!(
            to_kernel(&e),
            Err(MapError::WrongL4 {
                proto: 6,
                tuple: "original",
                want: "ports"
            })
        ));
        let mut e = dnat();
        e.tcp = None;
        assert_eq!(to_kernel(&e), Err(MapError::TcpWithoutState));
        let mut e = dnat();
        e.tcp.as_mut().unwrap().state = 10;
        assert_eq!(to_kernel(&e), Err(MapError::TcpState(10)));
        let mut e = dnat();
        e.proto = p::UDP;
        assert_eq!(to_kernel(&e), Err(MapError::TcpStateOnNonTcp(17)));
        assert!(MapError::TcpState(10).to_string().contains("TCP state 10"));

        // Kernel side: directional zones, half ports, missing fields.
        let ct = to_kernel(&dnat()).unwrap();
        let mut k = ct.clone();
        k.orig.zone = Some(3);
        assert_eq!(
            from_kernel(&k),
            Err(MapError::DirectionalZone { tuple: "original" })
        );
        let mut k = ct.clone();
        k.reply.dst_port = None;
        assert_eq!(from_kernel(&k), Err(MapError::HalfPorts { tuple: "reply" }));
        let mut k = ct.clone();
        k.timeout = None;
        assert_eq!(from_kernel(&k), Err(MapError::Missing("CTA_TIMEOUT")));
        let mut k = ct.clone();
        k.tcp = None;
        assert_eq!(from_kernel(&k), Err(MapError::TcpWithoutState));
        // A destroy event needs only the key.
        k.status = None;
        assert_eq!(key_from_kernel(&k).unwrap(), dnat().key());
        let (t, zone) = key_to_kernel(&dnat().key()).unwrap();
        assert_eq!((t, zone), (ct.orig.clone(), None));
    }

    #[test]
    fn local_bookkeeping_bits_are_left_out_when_reading() {
        let e = dnat();
        let mut k = to_kernel(&e).unwrap();
        k.reply = l4_to_kernel(e.proto, &e.reply, "reply").unwrap();
        k.status = Some(e.status | LOCAL_STATUS);
        let t = k.tcp.as_mut().unwrap();
        t.flags_orig = Some(TcpFlags {
            flags: tcp_flag::BE_LIBERAL | tcp_flag::WINDOW_SCALE | tcp_flag::SACK_PERM,
            mask: 0,
        });
        let back = from_kernel(&k).unwrap();
        assert_eq!(back.status, e.status);
        assert_eq!(
            back.tcp.unwrap().flags_original,
            e.tcp.unwrap().flags_original
        );
    }

    #[test]
    fn filter_takes_vip_and_snat_flows_minus_ignored_addresses() {
        let f = Filter::new(
            [ip("192.0.2.100"), ip("2001:db8::100")],
            [ip("198.51.100.1")],
            [
                Cidr::new(ip("10.0.0.0"), 24).unwrap(),
                Cidr::new(ip("2001:db8:ffff::1"), 128).unwrap(),
            ],
        );
        let e = dnat();
        assert!(f.matches_entry(&e));
        assert!(f.matches(&to_kernel(&e).unwrap()));
        // Not to a VIP, not from an SNAT source.
        let mut other = e;
        other.original.dst = ip("192.0.2.101");
        assert!(!f.matches_entry(&other));
        // SNAT: outbound flow whose reply goes to the SNAT address.
        let mut snat = other;
        snat.reply.dst = ip("198.51.100.1");
        assert!(f.matches_entry(&snat));
        // The boxes' own addresses are ignored (health checks, sync).
        let mut own = e;
        own.original.src = ip("10.0.0.7");
        assert!(!f.matches_entry(&own));
        let mut own6 = e;
        own6.original.src = ip("2001:db8:ffff::1");
        own6.original.dst = ip("2001:db8::100");
        own6.reply.src = ip("2001:db8:1::11");
        own6.reply.dst = own6.original.src;
        assert!(!f.matches_entry(&own6));
        own6.original.src = ip("2001:db8:ffff::2");
        assert!(f.matches_entry(&own6));
        assert!(f.matches_key(&e.key()));
        assert!(!f.matches_key(&own.key()));
    }

    #[test]
    fn filter_from_config_uses_vips_virtual_servers_and_snat() {
        let toml = r#"
[global]
router_id = "lb-01"

[[vrrp_instance]]
name = "VI_1"
interface = "eth1"
vrid = 51
priority = 150
virtual_ipaddresses = ["192.0.2.100/32"]

[[virtual_server]]
name = "web"
address = "192.0.2.200:80"
protocol = "tcp"
scheduler = "rr"

[[virtual_server.real_server]]
address = "10.0.1.11:8080"

[[snat]]
match_vip = "192.0.2.100"
to_source = "192.0.2.101"
"#;
        let config = crate::config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e:?}"));
        let f = Filter::from_config(&config, &[Cidr::new(ip("10.0.0.0"), 8).unwrap()]);
        assert_eq!(
            f,
            Filter::new(
                [ip("192.0.2.100"), ip("192.0.2.200")],
                [ip("192.0.2.101")],
                [Cidr::new(ip("10.0.0.0"), 8).unwrap()]
            )
        );
    }

    #[test]
    fn kernel_errnos_map_to_what_the_session_acts_on() {
        // ENOMEM from ctnetlink_create_conntrack: nf_conntrack_max.
        let e = refusal("creating a conntrack entry", libc::ENOMEM, None);
        assert!(matches!(e, ConntrackError::TableFull));
        let mut out = Applied::default();
        fail(&mut out, dnat().key(), &e);
        assert!(out.table_full);
        assert!(out.failed[0].1.contains("nf_conntrack_max"));
        assert!(matches!(
            refusal("x", libc::EEXIST, None),
            ConntrackError::Exists
        ));
        assert!(matches!(
            refusal("x", libc::ENOENT, None),
            ConntrackError::NotFound
        ));
        let e = refusal("updating a conntrack entry", libc::EBUSY, Some("busy"));
        assert_eq!(errno_of(&e), Some(libc::EBUSY));
        assert!(e.to_string().contains("updating a conntrack entry"), "{e}");
        assert!(e.to_string().contains("kernel says: busy"), "{e}");
        let mut out = Applied::default();
        fail(&mut out, dnat().key(), &e);
        assert!(!out.table_full);
    }
}
