//! Facts about one network interface, read for the calling thread's network
//! namespace.
//!
//! Source: `getifaddrs(3)`, which glibc answers with an rtnetlink dump on a
//! socket it opens in the calling thread's namespace. `/sys/class/net` is
//! not used: sysfs shows the devices of the namespace it was mounted in,
//! not of the namespace a thread `setns(2)`-ed into, so it would describe
//! the wrong (or no) device in a daemon that drives a named namespace.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::sys::{self, Entry};

/// One network interface as the VRRP driver needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Device name (`eth1`).
    pub name: String,
    /// Interface index (`ip link`'s number), the scope of link-local
    /// addresses and the interface of multicast joins.
    pub index: u32,
    /// Hardware address; all zero when the link has no 6-byte one (tun,
    /// some tunnels). The sender MAC of gratuitous ARPs and the Target
    /// Link-Layer Address of unsolicited NAs.
    pub mac: [u8; 6],
    /// IPv4 addresses in the order the kernel dumps them, which is what
    /// `ip -4 addr` lists: primaries first, then secondaries. The first is
    /// the primary address VRRPv2/v3 adverts are sent from (RFC 5798
    /// 5.1.1.1). Includes addresses labelled as aliases (`eth1:0`).
    pub ipv4: Vec<Ipv4Addr>,
    /// The first fe80::/10 address: the source of IPv6 adverts (RFC 5798
    /// 5.1.2.1). It may still
    /// be tentative (duplicate address detection running), which
    /// [`crate::net::VrrpSocket::open`] allows for.
    pub ipv6_link_local: Option<Ipv6Addr>,
    /// Administratively up (`IFF_UP`) and operationally up (`IFF_RUNNING`:
    /// RFC 2863 operstate `up`, or `unknown` for drivers that do not
    /// report one). A veth whose peer is down is not operationally up.
    pub oper_up: bool,
}

/// Facts about interface `name` in the calling thread's network namespace.
/// [`io::ErrorKind::NotFound`] if there is no such interface.
pub fn interface(name: &str) -> io::Result<Interface> {
    select(name, &sys::entries()?).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface {name:?}"),
        )
    })
}

/// Pick `name`'s facts out of a `getifaddrs` listing (pure, for tests).
pub(crate) fn select(name: &str, entries: &[Entry]) -> Option<Interface> {
    let mut iface = entries.iter().find_map(|e| match e {
        Entry::Link {
            name: n,
            index,
            mac,
            up,
            running,
        } if n == name => Some(Interface {
            name: name.to_owned(),
            index: *index,
            mac: mac.unwrap_or([0; 6]),
            ipv4: Vec::new(),
            ipv6_link_local: None,
            oper_up: *up && *running,
        }),
        _ => None,
    })?;
    for e in entries {
        match e {
            Entry::V4 { name: label, addr } if is_label_of(label, name) => iface.ipv4.push(*addr),
            Entry::V6 { name: n, addr }
                if n == name && iface.ipv6_link_local.is_none() && addr.is_unicast_link_local() =>
            {
                iface.ipv6_link_local = Some(*addr);
            }
            _ => {}
        }
    }
    Some(iface)
}

/// glibc names an IPv4 row after the address label (`IFA_LABEL`), which is
/// the device name or, for an alias, `device:suffix` (ifconfig-style;
/// iproute2 insists that a label starts with the device name).
fn is_label_of(label: &str, device: &str) -> bool {
    label == device
        || label
            .strip_prefix(device)
            .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, index: u32, up: bool, running: bool) -> Entry {
        Entry::Link {
            name: name.into(),
            index,
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up,
            running,
        }
    }

    fn v4(name: &str, a: [u8; 4]) -> Entry {
        Entry::V4 {
            name: name.into(),
            addr: a.into(),
        }
    }

    fn v6(name: &str, a: &str) -> Entry {
        Entry::V6 {
            name: name.into(),
            addr: a.parse().unwrap(),
        }
    }

    #[test]
    fn picks_the_named_link_its_addresses_in_dump_order_and_aliases() {
        let entries = [
            link("lo", 1, true, true),
            link("eth1", 2, true, true),
            link("eth10", 3, true, true),
            v4("lo", [127, 0, 0, 1]),
            v4("eth1", [192, 0, 2, 1]),
            v4("eth10", [198, 51, 100, 1]),
            v4("eth1", [203, 0, 113, 1]),
            v4("eth1:vip", [192, 0, 2, 100]),
            v6("eth1", "2001:db8::1"),
            v6("eth1", "fe80::1"),
            v6("eth1", "fe80::2"),
            v6("eth10", "fe80::10"),
        ];
        let i = select("eth1", &entries).unwrap();
        assert_eq!(i.index, 2);
        assert_eq!(i.mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(
            i.ipv4,
            vec![
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(203, 0, 113, 1),
                Ipv4Addr::new(192, 0, 2, 100)
            ]
        );
        assert_eq!(i.ipv6_link_local, Some("fe80::1".parse().unwrap()));
        assert!(i.oper_up);
        assert_eq!(select("eth2", &entries), None);
        assert_eq!(select("eth", &entries), None);
    }

    #[test]
    fn oper_up_needs_both_admin_and_running() {
        for (up, running, want) in [
            (true, true, true),
            (true, false, false),
            (false, false, false),
        ] {
            let i = select("x", &[link("x", 5, up, running)]).unwrap();
            assert_eq!(i.oper_up, want, "up={up} running={running}");
        }
    }

    #[test]
    fn a_link_without_a_six_byte_address_has_a_zero_mac() {
        let e = Entry::Link {
            name: "tun0".into(),
            index: 9,
            mac: None,
            up: true,
            running: true,
        };
        assert_eq!(select("tun0", &[e]).unwrap().mac, [0; 6]);
    }
}
