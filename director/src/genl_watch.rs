//! Generic-netlink family (un)registration events.
//!
//! The kernel announces every family registration on nlctrl's "notify"
//! multicast group (`CTRL_CMD_NEWFAMILY` / `CTRL_CMD_DELFAMILY`, see
//! include/uapi/linux/genetlink.h). nlctrl's only group is always numbered
//! `GENL_ID_CTRL` (16): net/netlink/genetlink.c gives the controller family
//! that fixed first id. An "IPVS" registration means the ip_vs module was
//! (re)loaded with an empty table.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// nlctrl's "notify" multicast group (`GENL_ID_CTRL`).
const NLCTRL_NOTIFY_GROUP: u32 = 16;

/// A family appeared or went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyEvent {
    pub family: String,
    pub registered: bool,
}

pub struct FamilyWatch {
    socket: Socket,
}

impl FamilyWatch {
    pub fn open() -> std::io::Result<Self> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.add_membership(NLCTRL_NOTIFY_GROUP)?;
        Ok(FamilyWatch { socket })
    }

    /// Blocks until the next family event (other notifications skipped).
    pub fn next_event(&self) -> std::io::Result<FamilyEvent> {
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            if let Some(ev) = parse_events(&buf).into_iter().next() {
                return Ok(ev);
            }
        }
    }
}

/// Every family event in one datagram; anything undecodable is skipped
/// (never a panic on kernel input).
pub fn parse_events(mut buf: &[u8]) -> Vec<FamilyEvent> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        // NLMSG_ALIGN: messages are 4-byte aligned in a datagram.
        let step = (len + 3) & !3;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&buf[..len]) {
            if let NetlinkPayload::InnerMessage(genl) = msg.payload {
                let registered = match genl.payload.cmd {
                    GenlCtrlCmd::NewFamily => Some(true),
                    GenlCtrlCmd::DelFamily => Some(false),
                    _ => None,
                };
                let name = genl.payload.nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyName(n) => Some(n.clone()),
                    _ => None,
                });
                if let (Some(registered), Some(family)) = (registered, name) {
                    out.push(FamilyEvent { family, registered });
                }
            }
        }
        buf = buf.get(step.min(buf.len())..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkPayload};

    fn event(cmd: GenlCtrlCmd, name: &str) -> Vec<u8> {
        let genl = GenlMessage::from_payload(GenlCtrl {
            cmd,
            nlas: vec![
                GenlCtrlAttrs::FamilyName(name.into()),
                GenlCtrlAttrs::FamilyId(0x22),
            ],
        });
        let mut msg =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(genl));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn parses_new_and_del_family_in_one_datagram() {
        let mut buf = event(GenlCtrlCmd::NewFamily, "IPVS");
        buf.extend(event(GenlCtrlCmd::DelFamily, "nl80211"));
        assert_eq!(
            parse_events(&buf),
            vec![
                FamilyEvent {
                    family: "IPVS".into(),
                    registered: true
                },
                FamilyEvent {
                    family: "nl80211".into(),
                    registered: false
                }
            ]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let good = event(GenlCtrlCmd::NewFamily, "IPVS");
        for cut in 0..good.len() {
            let _ = parse_events(&good[..cut]);
        }
        let mut weird = good.clone();
        weird[0] = 0xff;
        assert!(parse_events(&weird).is_empty());
        assert!(parse_events(&[0u8; 40]).is_empty());
    }
}
