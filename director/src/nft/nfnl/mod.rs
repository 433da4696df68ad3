//! nf_tables over netlink, for the two things the CLI is too slow at:
//! reading the ruleset generation and applying small element/rule changes.
//!
//! Every `nft` invocation first fills its cache with every chain and set of
//! the table (`NFT_MSG_GETCHAIN` and `NFT_MSG_GETSET` dumps; measured 40 ms
//! per call at 5,000 services, before the change itself), and `nft -j list
//! table` takes seconds at that size. A destination change, though, only
//! adds and deletes set elements and, for `rr`/`wrr`, replaces the one
//! selector rule whose modulus changed. Those messages are simple and fixed
//! in shape, so the director writes them itself:
//!
//! - [`Nfnl::generation`]: `NFT_MSG_GETGEN` -> `NFTA_GEN_ID`, the counter
//!   the kernel bumps on every committed transaction (nf_tables_api.c,
//!   `nf_tables_commit`: `net->nft.base_seq++`). Unchanged generation =
//!   unchanged ruleset, so a pass needs no dump (see `NftDataplane`).
//! - [`Nfnl::apply`]: one batch (`NFNL_MSG_BATCH_BEGIN` .. `_END`) of
//!   `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` / `NFT_MSG_NEWRULE`
//!   (`NLM_F_REPLACE`), all or nothing like any nf_tables batch, guarded by
//!   `NFNL_BATCH_GENID` (nfnetlink.c, `nfnetlink_rcv_skb_batch`): if anyone
//!   committed since the generation the plan was made against, the kernel
//!   refuses the whole batch with `ERESTART` and nothing is applied.
//!
//! Everything else (tables, chains, set declarations, the other rules) still
//! goes through the nft CLI, which owns the bytecode compiler; see the
//! module docs of [`super`]. The byte layouts below are checked against
//! what nft 1.0.6 itself sends (`testdata/nfnl/`, captured with strace).
//!
//! Value encoding (libnftnl/nft `datatype.c`, kernel `nft_set_elem` keys):
//! a key or data value is the concatenation of its components, each padded
//! to 4 bytes (a register's 32-bit slots, `NFT_REG32_SIZE`) when there is
//! more than one; `ipv4_addr`, `ipv6_addr`, `inet_service` are network byte
//! order, `mark` and `integer` (the `typeof numgen`/`jhash` keys) host byte
//! order, `inet_proto` one byte.

use crate::netlink::{self as nl, MsgIter, Reply, Writer};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::exec::TABLE;

/// include/uapi/linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;

/// include/uapi/linux/netfilter/nf_tables.h, `enum nf_tables_msg_types`.
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_L4PROTO: u32 = 16;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFTA_NG_OFFSET: u16 = 4;
const NFT_NG_INCREMENTAL: u32 = 0;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFT_NAT_DNAT: u32 = 1;

/// `enum nft_registers`: NFT_REG_1 is the first 16-byte register; the
/// 32-bit view numbers its slots from NFT_REG32_00 = 8.
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG32_00: u32 = 8;

/// Verdict codes (include/uapi/linux/netfilter.h, nf_tables.h).
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// `NFPROTO_*` (include/uapi/linux/netfilter.h).
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;

/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`: the TLV nft stores a rule's
/// comment in (`userdata = { \x00<len>comment\x00 }`).
const UDATA_RULE_COMMENT: u8 = 0;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

/// `ERESTART`: the batch's generation check failed.
const ERESTART: i32 = 85;

/// More messages than this in one batch and the caller uses the CLI (the
/// acknowledgements must fit the socket's receive buffer).
pub const MAX_BATCH_MESSAGES: usize = 256;

/// Add or delete elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemOp {
    Add,
    Delete,
}

/// The selector rule of an `rr`/`wrr` service, the only rule a destination
/// change rewrites (its `numgen inc mod N` follows the number of slots):
///
/// ```text
/// meta l4proto PROTO dnat FAMILY [addr . port] to numgen inc mod N map @SET comment "COMMENT"
/// ```
///
/// which nft compiles to (`nft --debug=netlink`):
///
/// ```text
/// [ meta load l4proto => reg 1 ]
/// [ cmp eq reg 1 PROTO ]
/// [ numgen reg 1 = inc mod N ]
/// [ lookup reg 1 set SET dreg 1 ]
/// [ nat dnat FAMILY addr_min reg 1 [proto_min reg PORT] ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumgenRule {
    /// IANA protocol number the rule matches.
    pub l4proto: u8,
    pub ipv6: bool,
    /// `addr . port to` (the map's data carries the port too).
    pub ported: bool,
    pub modulus: u32,
    pub set: String,
    pub comment: String,
}

/// One message of a fast batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastCmd {
    /// Elements of one set: `(key, data)` in the model's canonical text,
    /// typed by the set's declared `key_type` / `data_type`.
    Elements {
        op: ElemOp,
        set: String,
        key_type: String,
        data_type: Option<String>,
        elems: Vec<(String, String)>,
    },
    /// `replace rule inet director CHAIN handle HANDLE ...`.
    ReplaceRule {
        chain: String,
        handle: u64,
        rule: NumgenRule,
    },
}

/// Why a fast batch was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NfnlError {
    /// Someone committed to nf_tables after the generation the plan was
    /// made against: nothing was applied; dump and plan again.
    #[error("the ruleset changed since it was read (generation check failed)")]
    GenerationChanged,
    /// The kernel refused message `index` of the batch (so, all of it).
    #[error("kernel refused {what}: {message}")]
    Refused {
        index: usize,
        what: String,
        errno: i32,
        message: String,
    },
    /// A value the encoder cannot write (the caller falls back to nft).
    #[error("cannot encode {0}")]
    Encode(String),
    #[error("netlink: {0}")]
    Io(String),
}

/// Writes `value` of nft type `ty` (`ipv4_addr . inet_service`, `mark`,
/// `verdict` is not a value: see [`put_data`]).
pub fn encode_value(ty: &str, text: &str) -> Result<Vec<u8>, String> {
    let types: Vec<&str> = ty.split(" . ").collect();
    let parts: Vec<&str> = text.split(" . ").collect();
    if types.len() != parts.len() {
        return Err(format!("{text:?} does not have the shape of {ty:?}"));
    }
    let concat = types.len() > 1;
    let mut out = Vec::new();
    for (t, p) in types.iter().zip(&parts) {
        let p = p.trim();
        let bytes: Vec<u8> = match *t {
            "ipv4_addr" => p
                .parse::<Ipv4Addr>()
                .map_err(|e| format!("{p:?} as ipv4_addr: {e}"))?
                .octets()
                .to_vec(),
            "ipv6_addr" => p
                .parse::<Ipv6Addr>()
                .map_err(|e| format!("{p:?} as ipv6_addr: {e}"))?
                .octets()
                .to_vec(),
            "inet_service" => p
                .parse::<u16>()
                .map_err(|e| format!("{p:?} as inet_service: {e}"))?
                .to_be_bytes()
                .to_vec(),
            "inet_proto" => vec![match p {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                n => n
                    .parse::<u8>()
                    .map_err(|e| format!("{n:?} as inet_proto: {e}"))?,
            }],
            "mark" | "integer" => p
                .parse::<u32>()
                .map_err(|e| format!("{p:?} as {t}: {e}"))?
                .to_ne_bytes()
                .to_vec(),
            other => return Err(format!("type {other} is not written over netlink")),
        };
        let len = bytes.len();
        out.extend(bytes);
        if concat {
            out.extend(std::iter::repeat_n(0u8, nl::align4(len) - len));
        }
    }
    Ok(out)
}

fn too_long(_: nl::TooLong) -> NfnlError {
    NfnlError::Encode("a netlink attribute longer than 64 KiB".into())
}

/// `NFTA_SET_ELEM_DATA`: a value, or a verdict (`jump CHAIN`, `accept`).
fn put_data(w: &mut Writer, ty: &str, text: &str) -> Result<(), NfnlError> {
    let d = w.begin_nest_marked(NFTA_SET_ELEM_DATA);
    if ty == "verdict" {
        let v = w.begin_nest_marked(NFTA_DATA_VERDICT);
        let (code, chain) = match text.split_once(' ') {
            Some(("jump", c)) => (NFT_JUMP as u32, Some(c)),
            Some(("goto", c)) => (NFT_GOTO as u32, Some(c)),
            None if text == "accept" => (NF_ACCEPT, None),
            None if text == "drop" => (NF_DROP, None),
            _ => return Err(NfnlError::Encode(format!("verdict {text:?}"))),
        };
        w.put_be32(NFTA_VERDICT_CODE, code).map_err(too_long)?;
        if let Some(c) = chain {
            w.put_str(NFTA_VERDICT_CHAIN, c).map_err(too_long)?;
        }
        w.end_nest(v).map_err(too_long)?;
    } else {
        let bytes = encode_value(ty, text).map_err(NfnlError::Encode)?;
        w.put(NFTA_DATA_VALUE, &bytes).map_err(too_long)?;
    }
    w.end_nest(d).map_err(too_long)
}

fn begin(w: &mut Writer, msg: u16, flags: u16, seq: u32) -> usize {
    w.begin_nfnl(
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | flags,
        seq,
        NFPROTO_INET,
    )
}

/// One `NFT_MSG_NEWSETELEM`/`DELSETELEM` message (nft sends the same,
/// plus `NFTA_SET_ELEM_LIST_SET_ID`, which only matters for a set created
/// in the same batch).
pub fn encode_elements(
    w: &mut Writer,
    seq: u32,
    op: ElemOp,
    set: &str,
    key_type: &str,
    data_type: Option<&str>,
    elems: &[(String, String)],
) -> Result<(), NfnlError> {
    let (msg, flags) = match op {
        ElemOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_ACK),
        ElemOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_ACK),
    };
    let m = begin(w, msg, flags, seq);
    let r = (|| {
        w.put_str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
            .map_err(too_long)?;
        w.put_str(NFTA_SET_ELEM_LIST_SET, set).map_err(too_long)?;
        let list = w.begin_nest_marked(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (i, (key, data)) in elems.iter().enumerate() {
            // libnftnl numbers the list entries 1, 2, ...; the kernel reads
            // them with nla_for_each_nested and ignores the type. Kept in
            // the 14 bits an attribute type has.
            let e = w.begin_nest_marked(1 + (i % 0x3fff) as u16);
            let k = w.begin_nest_marked(NFTA_SET_ELEM_KEY);
            let bytes = encode_value(key_type, key).map_err(NfnlError::Encode)?;
            w.put(NFTA_DATA_VALUE, &bytes).map_err(too_long)?;
            w.end_nest(k).map_err(too_long)?;
            if op == ElemOp::Add {
                if let Some(dt) = data_type {
                    put_data(w, dt, data)?;
                }
            }
            w.end_nest(e).map_err(too_long)?;
        }
        w.end_nest(list).map_err(too_long)?;
        w.end_msg(m).map_err(too_long)
    })();
    if r.is_err() {
        w.truncate(m);
    }
    r
}

fn put_expr(
    w: &mut Writer,
    name: &str,
    body: impl FnOnce(&mut Writer) -> Result<(), nl::TooLong>,
) -> Result<(), nl::TooLong> {
    let e = w.begin_nest_marked(NFTA_LIST_ELEM);
    w.put_str(NFTA_EXPR_NAME, name)?;
    let d = w.begin_nest_marked(NFTA_EXPR_DATA);
    body(w)?;
    w.end_nest(d)?;
    w.end_nest(e)
}

/// One `NFT_MSG_NEWRULE` with `NLM_F_REPLACE` (the rule at `handle` is
/// swapped for this one in the same position) and `NLM_F_ECHO` (the kernel
/// sends the new rule back: its handle is new).
pub fn encode_replace_rule(
    w: &mut Writer,
    seq: u32,
    chain: &str,
    handle: u64,
    r: &NumgenRule,
) -> Result<(), NfnlError> {
    let m = begin(
        w,
        NFT_MSG_NEWRULE,
        NLM_F_REPLACE | NLM_F_ACK | NLM_F_ECHO,
        seq,
    );
    let res = (|| {
        w.put_str(NFTA_RULE_TABLE, TABLE)?;
        w.put_str(NFTA_RULE_CHAIN, chain)?;
        w.put_be64(NFTA_RULE_HANDLE, handle)?;
        let exprs = w.begin_nest_marked(NFTA_RULE_EXPRESSIONS);
        put_expr(w, "meta", |w| {
            w.put_be32(NFTA_META_KEY, NFT_META_L4PROTO)?;
            w.put_be32(NFTA_META_DREG, NFT_REG_1)
        })?;
        put_expr(w, "cmp", |w| {
            w.put_be32(NFTA_CMP_SREG, NFT_REG_1)?;
            w.put_be32(NFTA_CMP_OP, NFT_CMP_EQ)?;
            let d = w.begin_nest_marked(NFTA_CMP_DATA);
            w.put(NFTA_DATA_VALUE, &[r.l4proto])?;
            w.end_nest(d)
        })?;
        put_expr(w, "numgen", |w| {
            w.put_be32(NFTA_NG_DREG, NFT_REG_1)?;
            w.put_be32(NFTA_NG_MODULUS, r.modulus)?;
            w.put_be32(NFTA_NG_TYPE, NFT_NG_INCREMENTAL)?;
            w.put_be32(NFTA_NG_OFFSET, 0)
        })?;
        put_expr(w, "lookup", |w| {
            w.put_be32(NFTA_LOOKUP_SREG, NFT_REG_1)?;
            w.put_be32(NFTA_LOOKUP_DREG, NFT_REG_1)?;
            w.put_str(NFTA_LOOKUP_SET, &r.set)
        })?;
        put_expr(w, "nat", |w| {
            w.put_be32(NFTA_NAT_TYPE, NFT_NAT_DNAT)?;
            w.put_be32(
                NFTA_NAT_FAMILY,
                if r.ipv6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 },
            )?;
            w.put_be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1)?;
            if r.ported {
                // The port follows the address in the map's data: the
                // second 32-bit slot of reg 1 after an IPv4 address
                // (NFT_REG32_01), the next 16-byte register after an IPv6
                // one (NFT_REG_2). nft picks the narrowest name for each.
                let reg = if r.ipv6 { NFT_REG_2 } else { NFT_REG32_00 + 1 };
                w.put_be32(NFTA_NAT_REG_PROTO_MIN, reg)?;
            }
            Ok(())
        })?;
        w.end_nest(exprs)?;
        let mut udata = vec![UDATA_RULE_COMMENT, 0];
        udata.extend_from_slice(r.comment.as_bytes());
        udata.push(0);
        udata[1] = u8::try_from(r.comment.len() + 1).map_err(|_| nl::TooLong)?;
        w.put(NFTA_RULE_USERDATA, &udata)?;
        w.end_msg(m)
    })();
    if res.is_err() {
        w.truncate(m);
    }
    res.map_err(too_long)
}

/// The whole batch: begin (with the generation guard), `cmds`, end.
/// Returns the buffer and the sequence number of each command's message.
pub fn encode_batch(
    cmds: &[FastCmd],
    generation: u32,
    first_seq: u32,
) -> Result<(Vec<u8>, Vec<u32>), NfnlError> {
    let mut w = Writer::new();
    let mut seq = first_seq;
    let b = w.begin_nfnl(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0);
    set_res_id(&mut w, b);
    w.put_be32(NFNL_BATCH_GENID, generation).map_err(too_long)?;
    w.end_msg(b).map_err(too_long)?;
    let mut seqs = Vec::with_capacity(cmds.len());
    for c in cmds {
        seq = seq.wrapping_add(1);
        seqs.push(seq);
        match c {
            FastCmd::Elements {
                op,
                set,
                key_type,
                data_type,
                elems,
            } => encode_elements(&mut w, seq, *op, set, key_type, data_type.as_deref(), elems)?,
            FastCmd::ReplaceRule {
                chain,
                handle,
                rule,
            } => encode_replace_rule(&mut w, seq, chain, *handle, rule)?,
        }
    }
    seq = seq.wrapping_add(1);
    let e = w.begin_nfnl(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, 0);
    set_res_id(&mut w, e);
    w.end_msg(e).map_err(too_long)?;
    Ok((w.buf, seqs))
}

/// Batch begin/end carry the subsystem in `nfgenmsg.res_id` (big endian).
fn set_res_id(w: &mut Writer, msg_start: usize) {
    let at = msg_start + nl::NLMSG_HDRLEN + 2;
    if let Some(s) = w.buf.get_mut(at..at + 2) {
        s.copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    }
}

/// What a committed batch reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// `(chain, new handle)` of every replaced rule, from the echoes.
    pub new_rules: Vec<(String, u64, Option<String>)>,
}

/// Reads `NFTA_RULE_CHAIN`, `NFTA_RULE_HANDLE` and the comment of an echoed
/// `NFT_MSG_NEWRULE`.
fn parse_rule_echo(payload: &[u8]) -> Option<(String, u64, Option<String>)> {
    let attrs = payload.get(nl::NFGEN_HDRLEN..)?;
    let (mut chain, mut handle, mut comment) = (None, None, None);
    for a in nl::AttrIter::new(attrs).flatten() {
        match a.kind {
            NFTA_RULE_CHAIN => chain = Some(nl::c_string(a.value)),
            NFTA_RULE_HANDLE => {
                handle = Some(u64::from_be_bytes(a.value.get(..8)?.try_into().ok()?))
            }
            NFTA_RULE_USERDATA => {
                // TLVs: type, len, value.
                let mut v = a.value;
                while v.len() >= 2 {
                    let (t, l) = (v[0], usize::from(v[1]));
                    let body = v.get(2..2 + l)?;
                    if t == UDATA_RULE_COMMENT {
                        comment = Some(nl::c_string(body));
                    }
                    v = &v[2 + l..];
                }
            }
            _ => {}
        }
    }
    Some((chain?, handle?, comment))
}

/// A NETLINK_NETFILTER socket for [`Nfnl::generation`] and [`Nfnl::apply`].
pub struct Nfnl {
    sock: Socket,
    seq: u32,
    rbuf: Vec<u8>,
}

impl Nfnl {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Nfnl> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Nfnl {
            sock,
            seq: 0,
            rbuf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Opens the socket in the named network namespace
    /// (`/run/netns/NAME`): a socket stays in the namespace it was created
    /// in, so a short-lived thread enters it, opens, and hands it back.
    pub fn open_in_netns(name: &str) -> io::Result<Nfnl> {
        nl::in_netns(name, Nfnl::open)?
    }

    fn next_seq(&mut self, n: u32) -> u32 {
        let s = self.seq.wrapping_add(1).max(1);
        self.seq = s.wrapping_add(n);
        s
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        nl::send_all(&self.sock, buf)
    }

    fn recv(&mut self) -> io::Result<()> {
        nl::recv_datagram(&self.sock, &mut self.rbuf, 0)
    }

    /// The current ruleset generation (`NFT_MSG_GETGEN`).
    pub fn generation(&mut self) -> Result<u32, NfnlError> {
        let seq = self.next_seq(0);
        let mut w = Writer::new();
        let m = w.begin_nfnl(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_REQUEST,
            seq,
            0,
        );
        w.end_msg(m).map_err(too_long)?;
        self.send(&w.buf)
            .map_err(|e| NfnlError::Io(e.to_string()))?;
        loop {
            self.recv().map_err(|e| NfnlError::Io(e.to_string()))?;
            for m in MsgIter::new(&self.rbuf) {
                let m = m.map_err(|e| NfnlError::Io(e.0))?;
                if m.header.seq != seq {
                    continue;
                }
                match nl::reply(&m) {
                    Reply::Data(p)
                        if m.header.kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN =>
                    {
                        let attrs = p.get(nl::NFGEN_HDRLEN..).unwrap_or(&[]);
                        for a in nl::AttrIter::new(attrs).flatten() {
                            if a.kind == NFTA_GEN_ID {
                                if let Some(b) = a.value.get(..4) {
                                    let id: [u8; 4] = b.try_into().unwrap_or([0; 4]);
                                    return Ok(u32::from_be_bytes(id));
                                }
                            }
                        }
                        return Err(NfnlError::Io("NEWGEN without NFTA_GEN_ID".into()));
                    }
                    Reply::Refused(e) => {
                        return Err(NfnlError::Io(format!(
                            "GETGEN refused: {}",
                            io::Error::from_raw_os_error(-e.error)
                        )))
                    }
                    Reply::Malformed(e) => return Err(NfnlError::Io(e.0)),
                    _ => {}
                }
            }
        }
    }

    /// Applies `cmds` as one batch if the ruleset generation is still
    /// `generation`. All or nothing.
    pub fn apply(&mut self, cmds: &[FastCmd], generation: u32) -> Result<Applied, NfnlError> {
        let n = u32::try_from(cmds.len() + 1).unwrap_or(u32::MAX);
        let first = self.next_seq(n);
        let (buf, seqs) = encode_batch(cmds, generation, first)?;
        self.send(&buf).map_err(|e| NfnlError::Io(e.to_string()))?;
        // nfnetlink processes the batch synchronously in sendmsg and
        // queues one ACK (or error) per message after the whole batch
        // (nfnetlink.c, nfnl_err_deliver); a failed generation check is a
        // single error for the batch-begin message.
        let mut pending: Vec<u32> = seqs.clone();
        let mut applied = Applied::default();
        let mut refused: Option<NfnlError> = None;
        while !pending.is_empty() {
            self.recv().map_err(|e| NfnlError::Io(e.to_string()))?;
            for m in MsgIter::new(&self.rbuf) {
                let m = m.map_err(|e| NfnlError::Io(e.0))?;
                if m.header.seq == first {
                    if let Reply::Refused(e) = nl::reply(&m) {
                        if e.error == -ERESTART {
                            return Err(NfnlError::GenerationChanged);
                        }
                        return Err(NfnlError::Io(format!(
                            "batch refused: {}",
                            io::Error::from_raw_os_error(-e.error)
                        )));
                    }
                    continue;
                }
                let Some(index) = seqs.iter().position(|s| *s == m.header.seq) else {
                    continue;
                };
                let reply = nl::reply(&m);
                if reply.is_final() {
                    pending.retain(|s| *s != m.header.seq);
                }
                match reply {
                    Reply::Data(p)
                        if m.header.kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE =>
                    {
                        if let Some(r) = parse_rule_echo(p) {
                            applied.new_rules.push(r);
                        }
                    }
                    Reply::Refused(e) => {
                        if refused.is_none() {
                            let errno = -e.error;
                            let os = io::Error::from_raw_os_error(errno).to_string();
                            refused = Some(NfnlError::Refused {
                                index,
                                what: cmds.get(index).map(describe).unwrap_or_default(),
                                errno,
                                message: match e.ext_msg {
                                    Some(m) => format!("{os} ({m})"),
                                    None => os,
                                },
                            });
                        }
                    }
                    Reply::Malformed(e) => return Err(NfnlError::Io(e.0)),
                    Reply::Done | Reply::Data(_) => {}
                }
            }
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }
}

/// A command as nft script text would name it, for error messages.
pub fn describe(c: &FastCmd) -> String {
    match c {
        FastCmd::Elements { op, set, elems, .. } => {
            let keys: Vec<&str> = elems.iter().take(3).map(|(k, _)| k.as_str()).collect();
            let verb = match op {
                ElemOp::Add => "add",
                ElemOp::Delete => "delete",
            };
            format!("{verb} element {set} {{ {} }}", keys.join(", "))
        }
        FastCmd::ReplaceRule { chain, handle, .. } => {
            format!("replace rule {chain} handle {handle}")
        }
    }
}

#[cfg(test)]
mod tests;
