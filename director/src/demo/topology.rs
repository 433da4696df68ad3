//! The demo network: a client, two directors and N real servers in their
//! own network namespaces, joined by three bridges in a "hub" namespace.
//! Nothing is added to the namespace the caller runs in, so no packet of
//! the demo can leave the host or touch its real interfaces.
//!
//! ```text
//!   client 192.0.2.2 (eth0)
//!        |
//!   ==== bridge "front" 192.0.2.0/24 ======================  VIP 192.0.2.100
//!        |  eth0 192.0.2.11                 |  eth0 192.0.2.12    (VRRP VI_FRONT)
//!   director d0                        director d1
//!        |  eth2 198.51.100.1               |  eth2 198.51.100.2
//!   ==== bridge "sync" 198.51.100.0/24 ====================  ctsync, port 3780
//!        |  eth1 203.0.113.11               |  eth1 203.0.113.12
//!   ==== bridge "back" 203.0.113.0/24 =====================  203.0.113.1 floats
//!        |               |               |                    (VRRP VI_BACK):
//!   rs0 .21         rs1 .22         rs2 .23                   SNAT source and
//!   (eth0)                                                    the servers' gateway
//! ```
//!
//! The addresses are the RFC 5737 documentation ranges. The real servers
//! answer the floating back address, so their replies always go to
//! whichever director is master (no asymmetric routing after a takeover).
//! A "cable" is the hub end of a veth pair: [`Topology::set_link`] pulls it
//! (the director's end loses carrier, as with a real cable).

use super::sys::{unique_tag, Netns};
use super::Result;
use std::net::{Ipv4Addr, SocketAddr};

/// The service VIP on the front segment.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The floating address on the back segment: SNAT source of forwarded
/// connections and the real servers' default gateway.
pub const BACK_VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Port of the echo service on the VIP and on the real servers.
pub const ECHO_PORT: u16 = 9000;
/// Port of the HTTP service on the VIP; the real servers serve it on
/// [`HTTP_RS_PORT`].
pub const HTTP_PORT: u16 = 80;
pub const HTTP_RS_PORT: u16 = 8080;
/// The ctsync port on the sync link.
pub const SYNC_PORT: u16 = 3780;
/// Interfaces inside a director.
pub const FRONT_IF: &str = "eth0";
pub const BACK_IF: &str = "eth1";
pub const SYNC_IF: &str = "eth2";

pub fn director_front(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 11 + i as u8)
}
pub fn director_back(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 11 + i as u8)
}
pub fn director_sync(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + i as u8)
}
pub fn real_server(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, 21 + j as u8)
}
pub fn echo_vip() -> SocketAddr {
    SocketAddr::from((VIP, ECHO_PORT))
}
pub fn http_vip() -> SocketAddr {
    SocketAddr::from((VIP, HTTP_PORT))
}

/// The three segments a director is cabled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Front,
    Back,
    Sync,
}

impl Link {
    fn bridge(self) -> &'static str {
        match self {
            Link::Front => "front",
            Link::Back => "back",
            Link::Sync => "sync",
        }
    }
}

/// The built network; dropping it kills every process in its namespaces
/// and deletes them.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    // Field order is drop order: the hosts first, the hub with the
    // bridges last.
    client: Netns,
    directors: Vec<Netns>,
    real_servers: Vec<Netns>,
    hub: Netns,
}

impl Topology {
    /// Builds the network with `real_servers` (1..=20) real servers. The
    /// namespaces are named `<label>-<pid>-<n>-<role>`; each one is
    /// owned as soon as it exists, so a failure half-way removes what was
    /// built.
    pub fn build(label: &str, real_servers: usize) -> Result<Topology> {
        if !(1..=20).contains(&real_servers) {
            return Err(super::DemoError::new(format!(
                "{real_servers} real servers: the topology has room for 1 to 20"
            )));
        }
        let tag = format!("{label}-{}", unique_tag());
        let hub = Netns::create(&format!("{tag}-hub"))?;
        // The hub only switches frames; it must not answer or route.
        hub.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        for br in ["front", "back", "sync"] {
            // No STP, no forward delay: a port forwards as soon as it is
            // up, as on the unmanaged switch this stands for; no multicast
            // snooping, so VRRP adverts (224.0.0.18) reach every port.
            hub.ip(&[
                "link",
                "add",
                br,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ])?;
            hub.ip(&["link", "set", br, "up"])?;
        }
        let client = Netns::create(&format!("{tag}-client"))?;
        host_sysctls(&client)?;
        cable(&hub, "front", "client", &client, "eth0")?;
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;

        let mut directors = Vec::new();
        for i in 0..2 {
            let d = Netns::create(&format!("{tag}-d{i}"))?;
            host_sysctls(&d)?;
            for (link, dev, addr) in [
                (Link::Front, FRONT_IF, director_front(i)),
                (Link::Back, BACK_IF, director_back(i)),
                (Link::Sync, SYNC_IF, director_sync(i)),
            ] {
                cable(&hub, link.bridge(), &hub_end(i, link), &d, dev)?;
                d.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            }
            directors.push(d);
        }

        let mut servers = Vec::new();
        for j in 0..real_servers {
            let r = Netns::create(&format!("{tag}-rs{j}"))?;
            host_sysctls(&r)?;
            cable(&hub, "back", &format!("rs{j}"), &r, "eth0")?;
            r.ip(&[
                "addr",
                "add",
                &format!("{}/24", real_server(j)),
                "dev",
                "eth0",
            ])?;
            // Replies to clients (no SNAT) and anything else off-segment
            // go to the master through the floating address.
            r.ip(&["route", "add", "default", "via", &BACK_VIP.to_string()])?;
            servers.push(r);
        }
        Ok(Topology {
            tag,
            client,
            directors,
            real_servers: servers,
            hub,
        })
    }

    /// `<label>-<pid>-<n>`: the common prefix of the namespace names.
    pub fn tag(&self) -> &str {
        &self.tag
    }
    pub fn hub(&self) -> &Netns {
        &self.hub
    }
    pub fn client(&self) -> &Netns {
        &self.client
    }
    pub fn director(&self, i: usize) -> &Netns {
        &self.directors[i]
    }
    pub fn real_server(&self, j: usize) -> &Netns {
        &self.real_servers[j]
    }
    pub fn real_servers(&self) -> &[Netns] {
        &self.real_servers
    }

    /// Every namespace name, hub first.
    pub fn namespace_names(&self) -> Vec<String> {
        std::iter::once(&self.hub)
            .chain(std::iter::once(&self.client))
            .chain(&self.directors)
            .chain(&self.real_servers)
            .map(|n| n.name().to_owned())
            .collect()
    }

    /// Plugs (`up`) or pulls the cable between director `i` and segment
    /// `link`.
    pub fn set_link(&self, i: usize, link: Link, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        self.hub
            .ip(&["link", "set", &hub_end(i, link), state])
            .map(|_| ())
    }

    /// Whether director `i` holds the VIP on its front interface.
    pub fn holds_vip(&self, i: usize) -> bool {
        self.directors[i].has_addr(FRONT_IF, &format!("{VIP}/32"))
    }
}

/// Name of the hub end of director `i`'s cable to `link` (at most 15
/// bytes, the kernel's limit on interface names).
fn hub_end(i: usize, link: Link) -> String {
    format!("d{i}-{}", link.bridge())
}

/// Settings of every host: no reverse-path filter (the VIPs move between
/// boxes, so a reply may arrive on an interface the filter would not
/// expect), no IPv6 autoconfiguration noise.
fn host_sysctls(ns: &Netns) -> Result<()> {
    ns.sysctl(&[
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv6.conf.all.accept_ra", "0"),
        ("net.ipv6.conf.default.accept_ra", "0"),
    ])
}

/// A veth pair: `hub_end` on `bridge` in the hub, `dev` in `ns`; both up.
fn cable(hub: &Netns, bridge: &str, hub_end: &str, ns: &Netns, dev: &str) -> Result<()> {
    hub.ip(&[
        "link",
        "add",
        hub_end,
        "type",
        "veth",
        "peer",
        "name",
        dev,
        "netns",
        ns.name(),
    ])?;
    hub.ip(&["link", "set", hub_end, "master", bridge, "up"])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(())
}
