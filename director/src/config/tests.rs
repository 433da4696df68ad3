//! Every example parses; every error class has a test pinning its exact
//! `FILE:LINE:COL: message` (so a regression in position or wording fails);
//! several independent errors are all reported, in order; no input panics.

use super::*;
use crate::model::{svc_flags, Family, Forward, Protocol, ServiceKey, TunnelCsum, TunnelType};
use std::net::SocketAddr;
use std::time::Duration;

/// A valid `[global]` (lines 1-2) for snippets that test something else.
const G: &str = "[global]\nrouter_id = \"lb\"\n";

/// A valid virtual server header (lines 3-5) after `G`.
const VS: &str = "[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.1:80\"\n";

fn errors(text: &str) -> String {
    match parse(text, "t.toml") {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(e) => e.to_string(),
    }
}

fn ok(text: &str) -> Config {
    match parse(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// `G` + `VS` + `body`: body starts at line 6.
fn vs(body: &str) -> String {
    format!("{G}{VS}{body}")
}

// ---------------------------------------------------------------- examples

#[test]
fn example_director_toml_parses() {
    let c = ok(include_str!("../../../etc/director.toml"));
    assert_eq!(c.global.router_id, "lb-01");
    assert_eq!(
        c.global.metrics_listen,
        Some("127.0.0.1:9588".parse().unwrap())
    );
    assert_eq!(
        c.global.control_socket,
        std::path::PathBuf::from("/run/director/director.sock")
    );
    assert_eq!(c.vrrp_instances.len(), 1);
    let v = &c.vrrp_instances[0];
    assert!(v.accept && v.shutdown_priority_zero);
    assert_eq!(v.garp, Garp::default());
    assert_eq!(v.track_interfaces[0].weight, -60);
    let tcp: Vec<_> = c
        .virtual_servers
        .iter()
        .filter(|v| {
            matches!(
                v.key,
                ServiceKey::Inet {
                    protocol: Protocol::Tcp,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(tcp.len(), 2);
    assert!(tcp.iter().all(|v| v.real_servers.len() == 3));
    assert!(tcp.iter().any(|v| v.persistence.is_some()));
    assert!(tcp
        .iter()
        .any(|v| v.scheduler == "mh" && v.scheduler_flags == svc_flags::SCHED2));
    assert!(c.virtual_servers.iter().any(|v| matches!(
        v.key,
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            ..
        }
    )));
    assert!(c
        .virtual_servers
        .iter()
        .any(|v| matches!(v.key, ServiceKey::Fwmark { .. })));
    assert_eq!(c.snat.len(), 1);
}

#[test]
fn example_keepalived_like_pair_parses() {
    let c = ok(include_str!("../../../etc/keepalived-like-pair.toml"));
    assert_eq!(c.vrrp_instances.len(), 2);
    assert_eq!(c.sync_groups[0].instances, vec!["VI_1", "VI_GATEWAY"]);
    // keepalived's auth_type PASS, which a keepalived peer insists on.
    for v in &c.vrrp_instances {
        assert_eq!(v.version, 2);
        assert!(
            matches!(&v.authentication, Some(VrrpAuth::Pass { auth_pass }) if auth_pass.expose() == "changeme")
        );
    }
    assert_eq!(c.virtual_servers.len(), 3);
    for v in &c.virtual_servers {
        assert_eq!(v.scheduler, "wlc");
        assert_eq!(v.forwarding, Forward::Masq);
        assert_eq!(
            v.persistence.as_ref().unwrap().timeout,
            Duration::from_secs(360)
        );
    }
    let https = c
        .virtual_servers
        .iter()
        .find(|v| v.name == "front-https")
        .unwrap();
    assert!(https.real_servers.iter().all(|r| r.port == 20001));
    assert!(c.ctsync.is_some());
    assert_eq!(
        c.ipvs_sync,
        Some(IpvsSync {
            interface: "bond0".into(),
            syncid: 1
        })
    );
}

#[test]
fn example_ipv6_parses() {
    let c = ok(include_str!("../../../etc/ipv6.toml"));
    let mail = c
        .virtual_servers
        .iter()
        .find(|v| v.name == "mail6")
        .unwrap();
    assert_eq!(
        mail.key,
        ServiceKey::Fwmark {
            family: Family::V6,
            mark: 600
        }
    );
    assert_eq!(mail.forwarding, Forward::Route);
    assert_eq!(mail.persistence.as_ref().unwrap().netmask, 64);
    let web = c.virtual_servers.iter().find(|v| v.name == "web6").unwrap();
    assert_eq!(web.persistence.as_ref().unwrap().netmask, 64);
    let dns = c.virtual_servers.iter().find(|v| v.name == "dns6").unwrap();
    let t = dns.real_servers[1].tunnel;
    assert_eq!(
        (t.kind, t.port, t.csum),
        (TunnelType::Gue, 6080, TunnelCsum::Csum)
    );
}

// ------------------------------------------------------- values and defaults

#[test]
fn defaults() {
    let c = ok(&format!(
        "{G}[[vrrp_instance]]\nname = \"V\"\ninterface = \"eth0\"\nvrid = 1\npriority = 100\nvirtual_ipaddresses = [\"192.0.2.1\"]\n{VS}\
         health = {{ kind = \"tcp\" }}\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n"
    ));
    let g = &c.global;
    assert_eq!(
        g.control_socket,
        std::path::PathBuf::from("/run/director/director.sock")
    );
    assert_eq!(g.dataplane, DataplaneChoice::Auto);
    assert!(!g.ipvs_exclusive);
    assert_eq!(g.reconcile_interval, Duration::from_secs(5));
    assert_eq!(g.ipvs_timeouts, None);
    assert_eq!(g.metrics_listen, None);
    let v = &c.vrrp_instances[0];
    assert_eq!(
        (v.version, v.advert_interval, v.preempt, v.preempt_delay),
        (3, Duration::from_secs(1), true, Duration::ZERO)
    );
    assert_eq!(
        v.virtual_ipaddresses,
        vec![("192.0.2.1".parse().unwrap(), 32)]
    );
    let s = &c.virtual_servers[0];
    assert_eq!(
        s.key,
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1:80".parse::<SocketAddr>().unwrap()
        }
    );
    assert_eq!(
        (s.scheduler.as_str(), s.scheduler_flags, s.one_packet),
        ("wlc", 0, false)
    );
    assert_eq!(s.persistence, None);
    assert_eq!(s.forwarding, Forward::Masq);
    let h = &s.health[0];
    assert_eq!(
        (h.interval, h.timeout, h.rise, h.fall, h.port),
        (Duration::from_secs(2), Duration::from_secs(1), 2, 3, None)
    );
    let r = &s.real_servers[0];
    assert_eq!(
        (r.weight, r.forwarding, r.upper_threshold, r.lower_threshold),
        (1, Forward::Masq, 0, 0)
    );
}

#[test]
fn values_are_mapped() {
    let c = ok(
        "[global]\nrouter_id = \"lb\"\nipvs_timeouts = { tcp = \"15m\", udp = \"300s\" }\nreconcile_interval = \"100ms\"\n\
         [[virtual_server]]\nname = \"s\"\naddress = \"192.0.2.1:0\"\nprotocol = \"udp\"\nscheduler = \"sh\"\n\
         scheduler_flags = [\"sh-fallback\", \"sh-port\", \"flag-3\"]\npersistence_timeout = \"1m\"\n\
         persistence_granularity = \"255.255.240.0\"\npersistence_engine = \"sip\"\none_packet = true\nforwarding = \"tun\"\n\
         tunnel = { type = \"gre\", csum = \"remcsum\" }\n\
         [[virtual_server.real_server]]\naddress = \"[2001:db8::1]:0\"\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.2:0\"\nforwarding = \"nat\"\nweight = 0\n"
    );
    assert_eq!(
        c.global.ipvs_timeouts,
        Some(crate::model::Timeouts {
            tcp: 900,
            tcp_fin: 0,
            udp: 300
        })
    );
    assert_eq!(c.global.reconcile_interval, Duration::from_millis(100));
    let s = &c.virtual_servers[0];
    assert_eq!(
        s.scheduler_flags,
        svc_flags::SCHED1 | svc_flags::SCHED2 | svc_flags::SCHED3
    );
    assert_eq!(
        s.persistence,
        Some(Persistence {
            timeout: Duration::from_secs(60),
            netmask: 0xffff_f000
        })
    );
    assert_eq!(s.persistence_engine.as_deref(), Some("sip"));
    assert!(s.one_packet);
    // tun allows an IPv6 real server behind an IPv4 VIP; it inherits the
    // virtual server's tunnel settings.
    assert_eq!(s.real_servers[0].forwarding, Forward::Tunnel);
    assert_eq!(s.real_servers[0].tunnel.kind, TunnelType::Gre);
    assert_eq!(s.real_servers[0].tunnel.csum, TunnelCsum::RemCsum);
    assert_eq!(
        (s.real_servers[1].forwarding, s.real_servers[1].weight),
        (Forward::Masq, 0)
    );
    assert_eq!(s.real_servers[1].tunnel, crate::model::Tunnel::default());
}

// ------------------------------------------------------ phase 1: structure

#[test]
fn syntax_error() {
    assert_eq!(
        errors("[global\n"),
        "t.toml:1:8: TOML syntax error: unclosed table, expected ']'"
    );
}

#[test]
fn syntax_error_reports_the_first_one() {
    assert_eq!(
        errors("[global]\nrouter_id = \"lb\nx"),
        "t.toml:2:16: TOML syntax error: invalid basic string, expected '\"'"
    );
}

#[test]
fn duplicate_key() {
    assert_eq!(
        errors("[global]\nrouter_id = \"a\"\nrouter_id = \"b\"\n"),
        "t.toml:3:1: duplicate key \"router_id\""
    );
}

#[test]
fn duplicate_table() {
    assert_eq!(
        errors(&format!("{G}[global]\n")),
        "t.toml:3:2: duplicate table \"global\""
    );
}

#[test]
fn unknown_key_with_suggestion() {
    assert_eq!(
        errors(&vs("shceduler = \"rr\"\n")),
        "t.toml:6:1: unknown key \"shceduler\" in [[virtual_server]] (did you mean \"scheduler\"?); expected one of name, \
         address, protocol, fwmark, family, scheduler, scheduler_flags, persistence_timeout, persistence_granularity, \
         persistence_engine, one_packet, maglev_table_size, forwarding, tunnel, health, on_down, \
         on_down_connections, quorum, sorry_server, drain_timeout, real_server"
    );
}

#[test]
fn unknown_key_in_real_server() {
    assert_eq!(
        errors(&vs("[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nlb_kind = \"NAT\"\n")),
        "t.toml:8:1: unknown key \"lb_kind\" in [[virtual_server.real_server]]; expected one of address, weight, \
         health, forwarding, tunnel, upper_threshold, lower_threshold"
    );
}

#[test]
fn unknown_key_in_inline_table() {
    assert_eq!(
        errors(&vs("health = { knd = \"tcp\" }\n")),
        "t.toml:6:12: unknown key \"knd\" in virtual_server.health (did you mean \"kind\"?); expected one of kind, \
         interval, timeout, rise, fall, port, address, method, path, host, expect_status, body_regex, digest, sni, \
         verify, ca_file, command"
    );
}

#[test]
fn unknown_top_level_key() {
    assert_eq!(
        errors(&format!("{G}[[virtual_servers]]\n")),
        "t.toml:3:3: unknown key \"virtual_servers\" at the top level (did you mean \"virtual_server\"?); expected one \
         of global, vrrp_instance, vrrp_script, sync_group, virtual_server, snat, ctsync"
    );
}

#[test]
fn wrong_type_string() {
    assert_eq!(
        errors("[global]\nrouter_id = 5\n"),
        "t.toml:2:13: invalid type: expected a string for \"router_id\", found integer 5"
    );
}

#[test]
fn wrong_type_duration() {
    assert_eq!(
        errors(&format!("{G}[[vrrp_instance]]\nadvert_interval = 1\n")),
        "t.toml:4:19: invalid type: expected a duration string like \"1s\" for \"advert_interval\", found integer 1"
    );
}

#[test]
fn wrong_type_array_element() {
    assert_eq!(
        errors(&format!(
            "{G}[[vrrp_instance]]\nunicast_peers = [\"192.0.2.2\", 3]\n"
        )),
        "t.toml:4:31: invalid type: expected a string for \"unicast_peers\", found integer 3"
    );
}

#[test]
fn wrong_type_table() {
    assert_eq!(
        errors(&vs("health = 5\n")),
        "t.toml:6:10: invalid type: expected a table or an array of tables for \"health\", found integer 5"
    );
}

#[test]
fn wrong_type_bool() {
    assert_eq!(
        errors(&vs("one_packet = \"yes\"\n")),
        "t.toml:6:14: invalid type: expected a boolean (true or false) for \"one_packet\", found string \"yes\""
    );
}

#[test]
fn wrong_type_array_of_tables() {
    assert_eq!(
        errors(&format!("virtual_server = 3\n{G}")),
        "t.toml:1:18: invalid type: expected an array of tables for \"virtual_server\", found integer 3"
    );
}

// ------------------------------------------------------- phase 2: global

#[test]
fn missing_global() {
    assert_eq!(
        errors(""),
        "t.toml:1:1: missing [global] table (it needs at least router_id)"
    );
}

#[test]
fn missing_required_key() {
    assert_eq!(
        errors("[global]\ndataplane = \"ipvs\"\n"),
        "t.toml:1:1: missing required key \"router_id\" in [global]"
    );
}

#[test]
fn empty_string() {
    assert_eq!(
        errors("[global]\nrouter_id = \" \"\n"),
        "t.toml:2:13: router_id must not be empty"
    );
}

#[test]
fn bad_choice_with_case_hint() {
    assert_eq!(
        errors(&format!("{G}dataplane = \"IPVS\"\n")),
        "t.toml:3:13: bad dataplane \"IPVS\": expected \"auto\", \"ipvs\" or \"nftables\" (values are lowercase)"
    );
}

#[test]
fn bad_socket_address() {
    assert_eq!(
        errors(&format!("{G}metrics_listen = \"localhost:9588\"\n")),
        "t.toml:3:18: bad address \"localhost:9588\" for metrics_listen: invalid IP address"
    );
}

#[test]
fn reconcile_interval_too_short() {
    assert_eq!(
        errors(&format!("{G}reconcile_interval = \"50ms\"\n")),
        "t.toml:3:22: reconcile_interval \"50ms\" is too short: the minimum is 100ms"
    );
}

#[test]
fn ipvs_timeouts_whole_seconds() {
    assert_eq!(
        errors(&format!("{G}ipvs_timeouts = {{ tcp_fin = \"1.5s\" }}\n")),
        "t.toml:3:29: ipvs_timeouts.tcp_fin \"1.5s\" must be whole seconds"
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        errors(&vrrp("advert_interval = \"1x\"\n")),
        "t.toml:9:19: invalid duration \"1x\" for advert_interval: unknown time unit \"x\", supported units: ns, \
         us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
    );
}

#[test]
fn read_error() {
    let e = load(std::path::Path::new("/nonexistent/director.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/nonexistent/director.toml: cannot read: No such file or directory (os error 2)"
    );
}

// --------------------------------------------------------- phase 2: VRRP

/// A valid VRRP instance at lines 3-8, with `extra` from line 9 on.
fn vrrp(extra: &str) -> String {
    format!(
        "{G}[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\n\
         virtual_ipaddresses = [\"192.0.2.100/32\"]\n{extra}"
    )
}

#[test]
fn vrrp_missing_keys_at_header() {
    assert_eq!(
        errors(&format!("{G}[[vrrp_instance]]\nname = \"VI_1\"\n")),
        "t.toml:3:1: missing required key \"interface\" in [[vrrp_instance]]\n\
         t.toml:3:1: missing required key \"vrid\" in [[vrrp_instance]]\n\
         t.toml:3:1: missing required key \"priority\" in [[vrrp_instance]]\n\
         t.toml:3:1: missing required key \"virtual_ipaddresses\" in [[vrrp_instance]]"
    );
}

#[test]
fn vrid_out_of_range() {
    assert_eq!(
        errors(&vrrp("").replace("vrid = 51", "vrid = 256")),
        "t.toml:6:8: vrid 256 out of range 1..=255"
    );
}

#[test]
fn bad_version() {
    assert_eq!(
        errors(&vrrp("version = 4\n")),
        "t.toml:9:11: version 4 is not a VRRP version: expected 2 or 3"
    );
}

#[test]
fn advert_interval_v2() {
    assert_eq!(
        errors(&vrrp("version = 2\nadvert_interval = \"500ms\"\n")),
        "t.toml:10:19: advert_interval \"500ms\" is not valid for VRRP version 2: expected whole seconds 1s..=255s"
    );
}

#[test]
fn advert_interval_v3() {
    assert_eq!(
        errors(&vrrp("advert_interval = \"41s\"\n")),
        "t.toml:9:19: advert_interval \"41s\" is not valid for VRRP version 3: expected a multiple of 10ms in \
         10ms..=40.95s"
    );
    ok(&vrrp("advert_interval = \"40s 950ms\"\n"));
    ok(&vrrp("advert_interval = \"10ms\"\n"));
}

#[test]
fn vips_empty() {
    assert_eq!(
        errors(&vrrp("").replace("[\"192.0.2.100/32\"]", "[]")),
        "t.toml:8:23: virtual_ipaddresses must not be empty"
    );
}

#[test]
fn vip_bad_prefix() {
    assert_eq!(
        errors(&vrrp("").replace("/32", "/33")),
        "t.toml:8:24: bad address \"192.0.2.100/33\" for virtual_ipaddresses: invalid prefix length \"33\" \
         (expected 0..=32)"
    );
}

#[test]
fn vip_family_mixed() {
    assert_eq!(
        errors(&vrrp("").replace("[\"192.0.2.100/32\"]", "[\"192.0.2.100\", \"2001:db8::1\"]")),
        "t.toml:8:39: virtual IP 2001:db8::1 is IPv6 but vrrp_instance \"VI_1\" is IPv4 (one instance carries one \
         address family)"
    );
}

#[test]
fn vip_v6_needs_v3() {
    assert_eq!(
        errors(&vrrp("version = 2\n").replace("192.0.2.100/32", "2001:db8::1")),
        "t.toml:8:24: virtual IP 2001:db8::1 is IPv6 but VRRP version 2 is IPv4-only (RFC 3768); use version = 3"
    );
}

#[test]
fn unicast_peer_family() {
    assert_eq!(
        errors(&vrrp("unicast_peers = [\"2001:db8::2\"]\n")),
        "t.toml:9:18: unicast peer 2001:db8::2 is IPv6 but vrrp_instance \"VI_1\" is IPv4"
    );
}

#[test]
fn track_interface_needs_name() {
    assert_eq!(
        errors(&vrrp("track_interfaces = [{ weight = -10 }]\n")),
        "t.toml:9:21: missing required key \"name\" in vrrp_instance.track_interfaces"
    );
}

#[test]
fn track_weight_range() {
    assert_eq!(
        errors(&vrrp(
            "track_interfaces = [{ name = \"eth0\", weight = -255 }]\n"
        )),
        "t.toml:9:47: track_interfaces weight -255 out of range -253..=253 in vrrp_instance \"VI_1\""
    );
}

#[test]
fn duplicate_vrrp_name_vrid_and_vip() {
    let second =
        "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 100\n\
                  virtual_ipaddresses = [\"192.0.2.100\"]\n";
    assert_eq!(
        errors(&vrrp(second)),
        "t.toml:10:8: duplicate vrrp_instance name \"VI_1\" (first at line 3)\n\
         t.toml:12:8: vrid 51 on eth1 (IPv4) is already used by vrrp_instance \"VI_1\" (line 6)\n\
         t.toml:14:24: virtual IP 192.0.2.100 is already in vrrp_instance \"VI_1\" (line 8)"
    );
}

#[test]
fn same_vrid_other_family_or_interface_is_fine() {
    ok(&vrrp(
        "[[vrrp_instance]]\nname = \"VI_6\"\ninterface = \"eth1\"\nvrid = 51\npriority = 100\n\
         virtual_ipaddresses = [\"2001:db8::1\"]\n",
    ));
}

#[test]
fn priority_out_of_range() {
    assert_eq!(
        errors(&vrrp("").replace("priority = 150", "priority = 0")),
        "t.toml:7:12: priority 0 out of range 1..=255"
    );
    assert_eq!(
        errors(&vrrp("").replace("priority = 150", "priority = 256")),
        "t.toml:7:12: priority 256 out of range 1..=255"
    );
}

#[test]
fn duplicate_vrid_on_one_interface_and_family() {
    // Another name and VIP, same interface, VRID and family: the two would
    // answer each other's adverts.
    let second =
        "[[vrrp_instance]]\nname = \"VI_2\"\ninterface = \"eth1\"\nvrid = 51\npriority = 100\n\
                  virtual_ipaddresses = [\"192.0.2.200\"]\n";
    assert_eq!(
        errors(&vrrp(second)),
        "t.toml:12:8: vrid 51 on eth1 (IPv4) is already used by vrrp_instance \"VI_1\" (line 6)"
    );
}

// ---------------------------------------- phase 2: keepalived's VRRP keys

#[test]
fn vrrp_keepalived_keys_default_like_keepalived() {
    let c = ok(&vrrp(
        "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\n",
    ));
    let v = &c.vrrp_instances[0];
    assert!(v.accept);
    assert!(v.shutdown_priority_zero);
    assert_eq!(
        v.garp,
        Garp {
            master_delay: Duration::from_secs(5),
            master_repeat: 5,
            master_refresh: None,
            master_refresh_repeat: 1,
            lower_prio_delay: Duration::from_secs(5),
            lower_prio_repeat: 5,
        }
    );
    assert_eq!(v.garp, Garp::default());
    assert_eq!(v.unicast_src_ip, None);
    assert_eq!(v.authentication, None);
    assert_eq!(v.track_scripts, vec![]);
    assert_eq!(v.notify, Notify::default());
    assert_eq!(c.vrrp_scripts, vec![]);
    assert_eq!(c.sync_groups[0].notify, Notify::default());
}

#[test]
fn vrrp_accept_false_is_refused_not_ignored() {
    assert_eq!(
        errors(&format!(
            "{G}[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\n\
             virtual_ipaddresses = [\"192.0.2.100/32\"]\naccept = false\n"
        )),
        "t.toml:9:10: accept = false in vrrp_instance \"VI_1\" is not supported: director's VIPs carry \
         load-balanced traffic, which Accept_Mode off (RFC 5798 6.4.3) would drop; remove the key"
    );
}

#[test]
fn vrrp_keepalived_keys_are_mapped() {
    let c = ok(&format!(
        "{G}[[vrrp_script]]\nname = \"chk_haproxy\"\nscript = [\"/usr/bin/pgrep\", \"-x\", \"haproxy\"]\n\
         interval = \"2s\"\ntimeout = \"500ms\"\nweight = -30\nrise = 2\nfall = 3\n\
         [[vrrp_script]]\nname = \"chk_disk\"\nscript = [\"/usr/local/bin/chk-disk\"]\n\
         [[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\nversion = 2\n\
         virtual_ipaddresses = [\"192.0.2.100/32\"]\naccept = true\nshutdown_priority_zero = false\n\
         garp_master_delay = \"10s\"\ngarp_master_repeat = 3\ngarp_master_refresh = \"60s\"\n\
         garp_master_refresh_repeat = 2\ngarp_lower_prio_repeat = 0\n\
         unicast_peers = [\"192.0.2.2\"]\nunicast_src_ip = \"192.0.2.1\"\n\
         authentication = {{ auth_type = \"PASS\", auth_pass = \"12345678\" }}\n\
         track_scripts = [{{ name = \"chk_haproxy\" }}, {{ name = \"chk_disk\", weight = 10 }}]\n\
         track_interfaces = [{{ name = \"eth0\", weight = -253 }}, {{ name = \"eth2\", weight = 253 }}]\n\
         notify_master = [\"/etc/director/notify.sh\", \"master\"]\nnotify_backup = [\"/etc/director/notify.sh\", \"backup\"]\n\
         notify_fault = [\"/etc/director/notify.sh\", \"fault\"]\nnotify_stop = [\"/etc/director/notify.sh\", \"stop\"]\n\
         notify = [\"/usr/local/bin/log-state\"]\n\
         [[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\nnotify_master = [\"/etc/conntrackd/primary-backup.sh\", \"primary\"]\n\
         notify = [\"/usr/local/bin/log-state\", \"--group\"]\n"
    ));
    assert_eq!(
        c.vrrp_scripts,
        vec![
            VrrpScript {
                name: "chk_haproxy".into(),
                script: vec!["/usr/bin/pgrep".into(), "-x".into(), "haproxy".into()],
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
                weight: -30,
                rise: 2,
                fall: 3,
            },
            // Defaults: interval 1s, timeout = interval, weight 0 (fault),
            // rise and fall 1.
            VrrpScript {
                name: "chk_disk".into(),
                script: vec!["/usr/local/bin/chk-disk".into()],
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                weight: 0,
                rise: 1,
                fall: 1,
            },
        ]
    );
    let v = &c.vrrp_instances[0];
    assert!(v.accept);
    assert!(!v.shutdown_priority_zero);
    assert_eq!(
        v.garp,
        Garp {
            master_delay: Duration::from_secs(10),
            master_repeat: 3,
            master_refresh: Some(Duration::from_secs(60)),
            master_refresh_repeat: 2,
            // Defaults to garp_master_delay, as in keepalived.
            lower_prio_delay: Duration::from_secs(10),
            lower_prio_repeat: 0,
        }
    );
    assert_eq!(v.unicast_src_ip, Some("192.0.2.1".parse().unwrap()));
    let Some(VrrpAuth::Pass { auth_pass }) = &v.authentication else {
        panic!("{:?}", v.authentication)
    };
    assert_eq!(auth_pass.expose(), "12345678");
    // The password is not shown by Debug or serde.
    assert!(!format!("{c:?}").contains("12345678"));
    let json = serde_json::to_string(&v.authentication).unwrap();
    assert_eq!(json, r#"{"auth_type":"PASS","auth_pass":"<redacted>"}"#);
    assert_eq!(
        v.track_scripts,
        vec![
            // The script's weight, or the entry's own.
            TrackScript {
                name: "chk_haproxy".into(),
                weight: -30
            },
            TrackScript {
                name: "chk_disk".into(),
                weight: 10
            },
        ]
    );
    assert_eq!(
        (v.track_interfaces[0].weight, v.track_interfaces[1].weight),
        (-253, 253)
    );
    let argv = |s: &[&str]| Some(s.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(
        v.notify,
        Notify {
            master: argv(&["/etc/director/notify.sh", "master"]),
            backup: argv(&["/etc/director/notify.sh", "backup"]),
            fault: argv(&["/etc/director/notify.sh", "fault"]),
            stop: argv(&["/etc/director/notify.sh", "stop"]),
            generic: argv(&["/usr/local/bin/log-state"]),
        }
    );
    let g = &c.sync_groups[0].notify;
    assert_eq!(
        g.master,
        argv(&["/etc/conntrackd/primary-backup.sh", "primary"])
    );
    assert_eq!(g.generic, argv(&["/usr/local/bin/log-state", "--group"]));
    assert_eq!(g.backup, None);
}

#[test]
fn garp_keys() {
    assert_eq!(
        errors(&vrrp(
            "garp_master_repeat = 0\ngarp_master_refresh_repeat = 2\ngarp_lower_prio_repeat = 256\n\
             garp_master_delay = \"5x\"\n"
        )),
        "t.toml:9:22: garp_master_repeat 0 out of range 1..=255 in vrrp_instance \"VI_1\"\n\
         t.toml:10:30: garp_master_refresh_repeat in vrrp_instance \"VI_1\" needs garp_master_refresh (refresh bursts \
         are off by default)\n\
         t.toml:11:26: garp_lower_prio_repeat 256 out of range 0..=255 in vrrp_instance \"VI_1\"\n\
         t.toml:12:21: invalid duration \"5x\" for garp_master_delay in vrrp_instance \"VI_1\": unknown time unit \"x\", \
         supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
    );
    // keepalived's 0 means off; a 0s delay means no second burst.
    let c = ok(&vrrp(
        "garp_master_refresh = \"0s\"\ngarp_master_delay = \"0s\"\ngarp_lower_prio_delay = \"1s\"\n",
    ));
    let g = &c.vrrp_instances[0].garp;
    assert_eq!(
        (g.master_refresh, g.master_delay, g.lower_prio_delay),
        (None, Duration::ZERO, Duration::from_secs(1))
    );
    assert_eq!(
        errors(&vrrp("garp_master_refresh = 60\n")),
        "t.toml:9:23: invalid type: expected a duration string like \"1s\" for \"garp_master_refresh\", found \
         integer 60"
    );
}

#[test]
fn unicast_src_ip_rules() {
    assert_eq!(
        errors(&vrrp("unicast_src_ip = \"192.0.2.1\"\n")),
        "t.toml:9:18: unicast_src_ip needs unicast_peers: vrrp_instance \"VI_1\" sends multicast adverts, from the \
         interface's primary address"
    );
    assert_eq!(
        errors(&vrrp("unicast_peers = []\nunicast_src_ip = \"192.0.2.1\"\n")),
        "t.toml:10:18: unicast_src_ip needs unicast_peers: vrrp_instance \"VI_1\" sends multicast adverts, from the \
         interface's primary address"
    );
    assert_eq!(
        errors(&vrrp(
            "unicast_peers = [\"192.0.2.2\"]\nunicast_src_ip = \"2001:db8::1\"\n"
        )),
        "t.toml:10:18: unicast_src_ip 2001:db8::1 is IPv6 but vrrp_instance \"VI_1\" is IPv4"
    );
    assert_eq!(
        errors(&vrrp(
            "unicast_peers = [\"192.0.2.2\"]\nunicast_src_ip = \"192.0.2.2\"\n"
        )),
        "t.toml:10:18: unicast_src_ip 192.0.2.2 is also one of the unicast_peers of vrrp_instance \"VI_1\": the \
         source is this box, the peers the others"
    );
    assert_eq!(
        errors(&vrrp(
            "unicast_peers = [\"192.0.2.2\"]\nunicast_src_ip = \"192.0.2.300\"\n"
        )),
        "t.toml:10:18: bad address \"192.0.2.300\" for unicast_src_ip: invalid IP address"
    );
}

#[test]
fn authentication_rules() {
    // Version 3 is the default: authentication needs version = 2.
    assert_eq!(
        errors(&vrrp(
            "authentication = { auth_type = \"PASS\", auth_pass = \"secret\" }\n"
        )),
        "t.toml:9:18: authentication is VRRPv2 only (RFC 5798 removed it from VRRPv3), and vrrp_instance \"VI_1\" is \
         version 3: remove authentication, or set version = 2 to talk to a keepalived peer that uses it"
    );
    let v2 = |auth: &str| vrrp(&format!("version = 2\nauthentication = {auth}\n"));
    assert_eq!(
        errors(&v2("{ auth_type = \"AH\", auth_pass = \"secret\" }")),
        "t.toml:10:32: auth_type \"AH\" (IPsec Authentication Header) in vrrp_instance \"VI_1\" is not supported: \
         use \"PASS\", or no authentication"
    );
    assert_eq!(
        errors(&v2("{ auth_type = \"pass\", auth_pass = \"secret\" }")),
        "t.toml:10:32: bad auth_type \"pass\" in vrrp_instance \"VI_1\": expected \"PASS\" (uppercase, as keepalived \
         writes it)"
    );
    assert_eq!(
        errors(&v2("{ auth_type = \"PASS\", auth_pass = \"123456789\" }")),
        "t.toml:10:52: auth_pass in vrrp_instance \"VI_1\" is 9 bytes, but VRRPv2 carries at most 8 (keepalived \
         silently uses the first 8; write those)"
    );
    assert_eq!(
        errors(&v2("{ auth_type = \"PASS\", auth_pass = \"\" }")),
        "t.toml:10:52: auth_pass in vrrp_instance \"VI_1\" must not be empty"
    );
    assert_eq!(
        errors(&v2("{ auth_type = \"PASS\" }")),
        "t.toml:10:18: missing required key \"auth_pass\" in authentication of vrrp_instance \"VI_1\""
    );
    assert_eq!(
        errors(&v2("{ auth_type = \"PASS\", auth_pas = \"x\" }")),
        "t.toml:10:40: unknown key \"auth_pas\" in vrrp_instance.authentication (did you mean \"auth_pass\"?); \
         expected one of auth_type, auth_pass"
    );
    assert_eq!(
        errors(&v2("\"PASS\"")),
        "t.toml:10:18: invalid type: expected a table for \"authentication\", found string \"PASS\""
    );
    // Eight bytes, not eight characters.
    assert_eq!(
        errors(&v2("{ auth_type = \"PASS\", auth_pass = \"pässwörd\" }")),
        "t.toml:10:52: auth_pass in vrrp_instance \"VI_1\" is 10 bytes, but VRRPv2 carries at most 8 (keepalived \
         silently uses the first 8; write those)"
    );
    let c = ok(&v2("{ auth_type = \"PASS\", auth_pass = \"9a2a33e8\" }"));
    assert!(c.vrrp_instances[0].authentication.is_some());
}

/// A `[[vrrp_script]]` "chk" at lines 3-5, then the VRRP instance of
/// `vrrp()` at lines 6-11, `extra` from line 12 on.
fn with_script(extra: &str) -> String {
    format!(
        "{G}[[vrrp_script]]\nname = \"chk\"\nscript = [\"/bin/true\"]\n{}",
        vrrp(extra).replacen(G, "", 1)
    )
}

#[test]
fn track_scripts_rules() {
    assert_eq!(
        errors(&vrrp("track_scripts = [{ name = \"chk\" }]\n")),
        "t.toml:9:27: track_scripts of vrrp_instance \"VI_1\" names vrrp_script \"chk\", which does not exist"
    );
    assert_eq!(
        errors(&with_script(
            "track_scripts = [{ name = \"chk\", weight = 300 }, { name = \"chk\" }, { weight = 1 }]\n"
        )),
        "t.toml:12:43: track_scripts weight 300 out of range -253..=253 in vrrp_instance \"VI_1\"\n\
         t.toml:12:59: vrrp_script \"chk\" is tracked twice by vrrp_instance \"VI_1\"\n\
         t.toml:12:68: missing required key \"name\" in track_scripts of vrrp_instance \"VI_1\""
    );
    assert_eq!(
        errors(&with_script("track_scripts = [\"chk\"]\n")),
        "t.toml:12:18: invalid type: expected a table for each \"track_scripts\" entry, found string \"chk\""
    );
    let c = ok(&with_script(
        "track_scripts = [{ name = \"chk\", weight = -20 }]\n",
    ));
    assert_eq!(c.vrrp_instances[0].track_scripts[0].weight, -20);
}

#[test]
fn track_interface_weight_zero_or_absent_means_fault() {
    let c = ok(&vrrp(
        "track_interfaces = [{ name = \"eth0\" }, { name = \"eth2\", weight = 0 }]\n",
    ));
    let t = &c.vrrp_instances[0].track_interfaces;
    assert_eq!((t[0].weight, t[1].weight), (0, 0));
    assert_eq!(
        errors(&vrrp(
            "track_interfaces = [{ name = \"eth0\", weight = 254 }]\n"
        )),
        "t.toml:9:47: track_interfaces weight 254 out of range -253..=253 in vrrp_instance \"VI_1\""
    );
}

#[test]
fn vrrp_script_rules() {
    assert_eq!(
        errors(&format!(
            "{G}[[vrrp_script]]\nname = \"chk\"\nscript = \"pgrep haproxy\"\ninterval = \"0s\"\nweight = 254\nrise = 0\n\
             fall = -1\n"
        )),
        "t.toml:5:10: script in vrrp_script \"chk\" is a string, but director runs programs without a shell: write \
         an argv array, [\"/path\", \"arg\"] (here: [\"/full/path/of/pgrep\", \"haproxy\"])\n\
         t.toml:6:12: interval in vrrp_script \"chk\" must be greater than 0\n\
         t.toml:7:10: weight 254 out of range -253..=253 in vrrp_script \"chk\"\n\
         t.toml:8:8: rise 0 out of range 1..=4294967295 in vrrp_script \"chk\"\n\
         t.toml:9:8: fall -1 out of range 1..=4294967295 in vrrp_script \"chk\""
    );
    assert_eq!(
        errors(&format!(
            "{G}[[vrrp_script]]\nname = \"chk\"\nscript = [\"/usr/bin/pgrep\", \"haproxy\"]\ninterval = \"1s\"\n\
             timeout = \"2s\"\n[[vrrp_script]]\nname = \"chk\"\n"
        )),
        "t.toml:7:11: timeout 2s of vrrp_script \"chk\" is longer than its interval 1s: a run must end before the \
         next one starts\n\
         t.toml:8:1: missing required key \"script\" in [[vrrp_script]]\n\
         t.toml:9:8: duplicate vrrp_script name \"chk\" (first at line 3)"
    );
    assert_eq!(
        errors(&format!(
            "{G}[[vrrp_script]]\nname = \"chk\"\nscript = [\"/bin/true\"]\nintervall = \"1s\"\n"
        )),
        "t.toml:6:1: unknown key \"intervall\" in [[vrrp_script]] (did you mean \"interval\"?); expected one of name, \
         script, interval, timeout, weight, rise, fall"
    );
    assert_eq!(
        errors(&format!("{G}[vrrp_script]\nname = \"chk\"\n")),
        "t.toml:3:1: invalid type: expected an array of tables for \"vrrp_script\", found a table (write \
         [[vrrp_script]] for each entry)"
    );
}

#[test]
fn programs_are_argv_arrays_never_shell_strings() {
    assert_eq!(
        errors(&vrrp(
            "notify_master = \"/etc/conntrackd/primary-backup.sh primary\"\nnotify = \"/bin/x $1 | y\"\n\
             notify_fault = []\nnotify_stop = [\"stop.sh\"]\nnotify_backup = [\"/bin/x\", \"a\\u0000b\"]\n"
        )),
        "t.toml:9:17: notify_master in vrrp_instance \"VI_1\" is a string, but director runs programs without a shell: \
         write an argv array, [\"/path\", \"arg\"] (here: [\"/etc/conntrackd/primary-backup.sh\", \"primary\"])\n\
         t.toml:10:10: notify in vrrp_instance \"VI_1\" is a string, but director runs programs without a shell: write \
         an argv array, [\"/path\", \"arg\"]\n\
         t.toml:11:16: notify_fault in vrrp_instance \"VI_1\" must not be empty: write [\"/path\", \"arg\"]\n\
         t.toml:12:16: notify_stop in vrrp_instance \"VI_1\": the program \"stop.sh\" must be an absolute path (there \
         is no PATH search)\n\
         t.toml:13:28: notify_backup in vrrp_instance \"VI_1\": an argument contains a NUL character"
    );
    assert_eq!(
        errors(&vrrp("notify_backup = [\"/bin/x\", 3]\n")),
        "t.toml:9:28: invalid type: expected a string for \"notify_backup\", found integer 3"
    );
    assert_eq!(
        errors(&vrrp(
            "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\nnotify_master = \"/x.sh master\"\n\
             notify_fault = 1\n"
        )),
        "t.toml:13:16: invalid type: expected an array of strings like [\"/path\", \"arg\"] for \"notify_fault\", \
         found integer 1"
    );
    assert_eq!(
        errors(&vrrp(
            "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\nnotify_master = \"/x.sh master\"\n"
        )),
        "t.toml:12:17: notify_master in sync_group \"G1\" is a string, but director runs programs without a shell: \
         write an argv array, [\"/path\", \"arg\"] (here: [\"/x.sh\", \"master\"])"
    );
}

// --------------------------------------------------- phase 2: sync groups

#[test]
fn sync_group_unknown_instance() {
    assert_eq!(
        errors(&vrrp(
            "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n"
        )),
        "t.toml:11:22: sync_group \"G1\" names vrrp_instance \"VI_2\", which does not exist"
    );
}

/// `vrrp()` with tracking on VI_1 (lines 9-10), a second instance VI_2
/// (lines 11-17), two scripts (18-25) and a group of `members` (26-28).
fn group_with_weights(members: &str) -> String {
    vrrp(&format!(
        "track_interfaces = [{{ name = \"eth0\", weight = -60 }}, {{ name = \"eth2\" }}]\n\
         track_scripts = [{{ name = \"chk\" }}, {{ name = \"ok\", weight = 0 }}]\n\
         [[vrrp_instance]]\nname = \"VI_2\"\ninterface = \"eth2\"\nvrid = 52\npriority = 150\n\
         virtual_ipaddresses = [\"192.0.2.101/32\"]\ntrack_scripts = [{{ name = \"ok\", weight = 10 }}]\n\
         [[vrrp_script]]\nname = \"chk\"\nscript = [\"/bin/true\"]\nweight = -20\n\
         [[vrrp_script]]\nname = \"ok\"\nscript = [\"/bin/true\"]\nweight = 5\n\
         [[sync_group]]\nname = \"G1\"\ninstances = [{members}]\n"
    ))
}

#[test]
fn sync_group_members_take_no_tracking_weights() {
    let why = "a member of sync_group \"G1\": a weight moves one member's priority alone and the group then \
               flaps between the boxes (keepalived ignores such weights); use weight 0 (the default), so that a \
               failure faults the whole group and the peer takes over every member";
    assert_eq!(
        errors(&group_with_weights("\"VI_1\", \"VI_2\"")),
        format!(
            "t.toml:9:47: weight -60 of track_interfaces \"eth0\" in vrrp_instance \"VI_1\", {why}\n\
             t.toml:10:27: vrrp_script \"chk\" has weight -20 (line 21), tracked by vrrp_instance \"VI_1\", \
             {why}; or give it weight = 0 here\n\
             t.toml:17:42: weight 10 of track_scripts \"ok\" in vrrp_instance \"VI_2\", {why}"
        )
    );
    // Weight 0 (faults) is what a group member takes; a group of one
    // cannot split.
    let c = ok(&group_with_weights("\"VI_1\""));
    assert_eq!(c.vrrp_instances[0].track_interfaces[0].weight, -60);
}

#[test]
fn sync_group_instance_twice() {
    assert_eq!(
        errors(&vrrp(
            "[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\n[[sync_group]]\nname = \"G2\"\ninstances = [\"VI_1\"]\n"
        )),
        "t.toml:14:14: vrrp_instance \"VI_1\" is already in sync_group \"G1\" (line 11); an instance can be in one \
         group only"
    );
}

// ----------------------------------------------- phase 2: virtual servers

#[test]
fn bad_ip_address() {
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "10.0.0.300:80")),
        "t.toml:5:11: bad address \"10.0.0.300:80\" for address: invalid IP address"
    );
}

#[test]
fn address_needs_port_and_brackets() {
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "192.0.2.1")),
        "t.toml:5:11: bad address \"192.0.2.1\" for address: missing port, e.g. \"192.0.2.1:80\""
    );
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "2001:db8::1")),
        "t.toml:5:11: bad address \"2001:db8::1\" for address: missing port; write IPv6 with brackets, e.g. \
         \"[2001:db8::1]:80\""
    );
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "2001:db8::1:80:x")),
        "t.toml:5:11: bad address \"2001:db8::1:80:x\" for address: IPv6 addresses need brackets, e.g. \
         \"[2001:db8::1]:80\""
    );
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "192.0.2.1:http")),
        "t.toml:5:11: bad address \"192.0.2.1:http\" for address: invalid port \"http\" (expected 0..=65535)"
    );
}

#[test]
fn virtual_server_needs_address_or_fwmark() {
    assert_eq!(
        errors(&format!("{G}[[virtual_server]]\nname = \"x\"\n")),
        "t.toml:3:1: virtual server \"x\" needs either address (\"ip:port\") or fwmark"
    );
    assert_eq!(
        errors(&vs("fwmark = 1\n")),
        "t.toml:6:10: address and fwmark are exclusive: a virtual server is either an address (with protocol) or a \
         firewall mark (with family)"
    );
}

#[test]
fn family_and_protocol_belong_to_one_kind() {
    assert_eq!(
        errors(&vs("family = \"ipv4\"\n")),
        "t.toml:6:10: family is only for fwmark services (an address has its own family)"
    );
    assert_eq!(
        errors(&format!("{G}[[virtual_server]]\nname = \"f\"\nfwmark = 1\nprotocol = \"tcp\"\n")),
        "t.toml:6:12: protocol is only for address services (a fwmark service takes whatever the mark selects)"
    );
}

#[test]
fn fwmark_range() {
    assert_eq!(
        errors(&format!(
            "{G}[[virtual_server]]\nname = \"f\"\nfwmark = 0\n"
        )),
        "t.toml:5:10: fwmark 0 out of range 1..=4294967295"
    );
}

#[test]
fn bad_scheduler() {
    assert_eq!(
        errors(&vs("scheduler = \"Weighted-RR\"\n")),
        "t.toml:6:13: bad scheduler \"Weighted-RR\": expected an IPVS scheduler name of 1 to 15 characters a-z, 0-9, \
         _ (rr, wrr, lc, wlc, sh, dh, mh, ...)"
    );
    // Custom modules are fine.
    ok(&vs("scheduler = \"my_sched2\"\n"));
}

#[test]
fn scheduler_flag_for_other_scheduler() {
    assert_eq!(
        errors(&vs("scheduler = \"mh\"\nscheduler_flags = [\"mh-port\", \"sh-port\", \"mh-port\", \"port\"]\n")),
        "t.toml:7:31: scheduler flag \"sh-port\" is only for scheduler \"sh\", not \"mh\"\n\
         t.toml:7:42: duplicate scheduler flag \"mh-port\"\n\
         t.toml:7:53: bad scheduler flag \"port\": expected \"sh-fallback\", \"sh-port\", \"mh-fallback\", \"mh-port\", \
         \"flag-1\", \"flag-2\" or \"flag-3\""
    );
}

#[test]
fn granularity_needs_timeout() {
    assert_eq!(
        errors(&vs("persistence_granularity = \"255.255.255.0\"\n")),
        "t.toml:6:27: persistence_granularity needs persistence_timeout"
    );
}

#[test]
fn granularity_not_contiguous() {
    assert_eq!(
        errors(&vs("persistence_timeout = \"360s\"\npersistence_granularity = \"192.0.2.1\"\n")),
        "t.toml:7:27: persistence_granularity \"192.0.2.1\" is not a contiguous netmask (like \"255.255.255.0\"); the \
         kernel would AND client addresses with it bit by bit"
    );
}

#[test]
fn granularity_by_family() {
    assert_eq!(
        errors(&vs("persistence_timeout = \"360s\"\npersistence_granularity = 24\n")),
        "t.toml:7:27: persistence_granularity 24 for an IPv4 service: write the netmask, e.g. \"255.255.255.0\""
    );
    let v6 = format!(
        "{G}[[virtual_server]]\nname = \"w\"\naddress = \"[2001:db8::1]:80\"\npersistence_timeout = \"360s\"\n\
         persistence_granularity = \"255.255.255.0\"\n"
    );
    assert_eq!(
        errors(&v6),
        "t.toml:7:27: bad persistence_granularity \"255.255.255.0\" for an IPv6 service: expected a prefix length \
         1..=128, like 64 or \"/64\""
    );
}

#[test]
fn persistence_engine_needs_timeout() {
    assert_eq!(
        errors(&vs("persistence_engine = \"sip\"\n")),
        "t.toml:6:22: persistence_engine needs persistence_timeout"
    );
}

#[test]
fn persistence_timeout_whole_seconds() {
    assert_eq!(
        errors(&vs("persistence_timeout = \"1500ms\"\n")),
        "t.toml:6:23: persistence_timeout \"1500ms\" must be whole seconds"
    );
}

#[test]
fn port_zero_needs_persistence() {
    assert_eq!(
        errors(&vs("").replace("192.0.2.1:80", "192.0.2.1:0")),
        "t.toml:5:11: port 0 (all ports) needs persistence_timeout: IPVS matches port-0 services only for \
         persistent connections"
    );
}

#[test]
fn one_packet_only_udp() {
    assert_eq!(
        errors(&vs("one_packet = true\n")),
        "t.toml:6:14: one_packet is only for UDP services (the kernel applies one-packet scheduling to UDP only), \
         not tcp"
    );
}

#[test]
fn tunnel_rules() {
    assert_eq!(
        errors(&vs("tunnel = { type = \"ipip\" }\n")),
        "t.toml:6:10: tunnel is only for forwarding = \"tun\", not \"nat\""
    );
    assert_eq!(
        errors(&vs("forwarding = \"tun\"\ntunnel = { type = \"gue\" }\n")),
        "t.toml:7:10: tunnel type \"gue\" needs a port (the UDP port of the GUE receiver)"
    );
    assert_eq!(
        errors(&vs(
            "forwarding = \"tun\"\ntunnel = { type = \"gre\", port = 5555 }\n"
        )),
        "t.toml:7:33: tunnel port is only for type \"gue\", not \"gre\""
    );
}

#[test]
fn health_rules() {
    assert_eq!(
        errors(&vs("health = { kind = \"icmp\", interval = \"1s\", timeout = \"2s\", rise = 0 }\n")),
        "t.toml:6:19: bad health kind \"icmp\": expected \"tcp\", \"http\", \"https\" or \"script\"\n\
         t.toml:6:54: health timeout 2s is longer than interval 1s: a check must finish before the next one starts\n\
         t.toml:6:67: health rise 0 out of range 1..=4294967295"
    );
    assert_eq!(
        errors(&vs("health = { interval = \"2s\" }\n")),
        "t.toml:6:10: missing required key \"kind\" in virtual_server.health"
    );
    assert_eq!(
        errors(&vs("health = { kind = \"tcp\", interval = \"0s\" }\n")),
        "t.toml:6:37: health interval must be greater than 0"
    );
}

#[test]
fn health_checks_of_every_kind_are_mapped() {
    let c = ok(&vs(
        "health = [\n\
         { kind = \"http\", path = \"/healthz\", host = \"www.example.com\", expect_status = [200, \"301-302\"], body_regex = \"ok|green\", interval = \"5s\", timeout = \"2s\", rise = 1, fall = 2 },\n\
         { kind = \"tcp\", port = 8443, address = \"10.0.9.9\" },\n\
         ]\n\
         on_down = \"inhibit\"\nquorum = 2\nsorry_server = \"10.0.0.99:80\"\ndrain_timeout = \"30s\"\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.2:80\"\n\
         health = { kind = \"https\", sni = \"api.example.com\", digest = \"d41d8cd98f00b204e9800998ecf8427e\" }\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.3:80\"\nhealth = []\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.4:80\"\n\
         health = { kind = \"script\", command = [\"/usr/local/bin/check\", \"--deep\"] }\n",
    ));
    let v = &c.virtual_servers[0];
    assert_eq!(
        (v.on_down, v.on_down_connections, v.quorum),
        (OnDown::Inhibit, OnDownConnections::Keep, 2)
    );
    assert_eq!(v.sorry_server, Some("10.0.0.99:80".parse().unwrap()));
    assert_eq!(v.drain_timeout, Duration::from_secs(30));
    let rs = &v.real_servers;
    // Real server 1 uses the virtual server's two checks.
    let checks = rs[0].checks(v);
    assert_eq!(checks.len(), 2);
    let http = checks[0].check_for(rs[0].address, rs[0].port);
    assert_eq!(http.target, "10.0.0.1:80".parse().unwrap());
    assert_eq!(
        (http.interval, http.timeout, http.rise, http.fall),
        (Duration::from_secs(5), Duration::from_secs(2), 1, 2)
    );
    let healthcheck::Probe::Http(h) = &http.probe else {
        panic!("{http:?}")
    };
    assert_eq!(
        (h.method.as_str(), h.path.as_str(), h.host.as_deref()),
        ("GET", "/healthz", Some("www.example.com"))
    );
    let ranges: Vec<String> = h.expect_status.iter().map(|r| r.to_string()).collect();
    assert_eq!(ranges, ["200", "301-302"]);
    assert_eq!(
        h.body,
        Some(healthcheck::BodyMatch::Regex("ok|green".into()))
    );
    let tcp = checks[1].check_for(rs[0].address, rs[0].port);
    assert_eq!(tcp.target, "10.0.9.9:8443".parse().unwrap());
    assert_eq!(tcp.probe, healthcheck::Probe::Tcp);
    // Real server 2 has its own https check (keepalived's defaults: GET /,
    // 2xx, no certificate verification).
    let own = rs[1].checks(v);
    assert_eq!(own.len(), 1);
    let healthcheck::Probe::Https { http, tls } = &own[0].probe else {
        panic!("{own:?}")
    };
    assert_eq!((http.path.as_str(), tls.verify), ("/", false));
    assert_eq!(tls.sni.as_deref(), Some("api.example.com"));
    assert!(matches!(http.body, Some(healthcheck::BodyMatch::Md5(_))));
    // Real server 3 is not checked; 4 runs a script (argv, no shell).
    assert!(rs[2].checks(v).is_empty());
    assert_eq!(
        rs[3].checks(v)[0].probe,
        healthcheck::Probe::Script(healthcheck::ScriptProbe {
            argv: vec!["/usr/local/bin/check".into(), "--deep".into()]
        })
    );
}

#[test]
fn health_defaults_remove_and_reset() {
    let c = ok(&vs(
        "health = { kind = \"tcp\" }\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n",
    ));
    let v = &c.virtual_servers[0];
    assert_eq!(
        (v.on_down, v.on_down_connections, v.quorum, v.sorry_server),
        (OnDown::Remove, OnDownConnections::Reset, 1, None)
    );
    assert_eq!(v.drain_timeout, Duration::from_secs(300));
}

#[test]
fn health_keys_of_the_wrong_kind_and_bad_values() {
    assert_eq!(
        errors(&vs(
            "health = { kind = \"tcp\", path = \"/x\", sni = \"a\" }\n"
        )),
        "t.toml:6:33: path applies to http and https checks only, not \"tcp\"\n\
         t.toml:6:45: sni applies to https checks only, not \"tcp\""
    );
    assert_eq!(
        errors(&vs(
            "health = { kind = \"http\", command = [\"/bin/true\"], verify = true }\n"
        )),
        "t.toml:6:37: command applies to script checks only, not \"http\"\n\
         t.toml:6:61: verify applies to https checks only, not \"http\""
    );
    assert_eq!(
        errors(&vs("health = { kind = \"script\" }\n")),
        "t.toml:6:10: missing required key \"command\" in virtual_server.health"
    );
    assert_eq!(
        errors(&vs("health = { kind = \"script\", command = \"check.sh --deep\" }\n")),
        "t.toml:6:39: command in health of virtual server \"web\" is a string, but director runs programs without a \
         shell: write an argv array, [\"/path\", \"arg\"] (here: [\"/full/path/of/check.sh\", \"--deep\"])"
    );
    assert_eq!(
        errors(&vs("health = { kind = \"http\", body_regex = \"(unclosed\" }\n")),
        "t.toml:6:40: health check: body regex \"(unclosed\" does not compile: regex parse error:\n    (unclosed\n    ^\nerror: unclosed group"
    );
    assert_eq!(
        errors(&vs(
            "health = { kind = \"http\", expect_status = [\"2xx\", 700], digest = \"abc\" }\n"
        )),
        "t.toml:6:44: bad expect_status \"2xx\": expected a status code 100-599 or a range like \"200-399\"\n\
         t.toml:6:51: bad expect_status \"700\": expected a status code 100-599 or a range like \"200-399\"\n\
         t.toml:6:66: bad digest \"abc\": expected 32 hex digits (MD5, as keepalived's genhash prints) or 64 (SHA-256)"
    );
    assert_eq!(
        errors(&vs(
            "health = { kind = \"http\", body_regex = \"x\", digest = \"y\" }\n"
        )),
        "t.toml:6:54: use body_regex or digest, not both"
    );
    assert_eq!(
        errors(&vs(
            "health = { kind = \"https\", ca_file = \"/etc/ssl/ca.pem\" }\n"
        )),
        "t.toml:6:38: ca_file is only used with verify = true"
    );
    assert_eq!(
        errors(&vs(
            "health = { kind = \"https\", verify = true, ca_file = \"/nonexistent/ca.pem\" }\n"
        )),
        "t.toml:6:53: health check: ca_file /nonexistent/ca.pem: I/O error: No such file or directory (os error 2)"
    );
    assert_eq!(
        errors(&vs("health = { kind = \"http\", path = \"no-slash\" }\n")),
        "t.toml:6:34: health check: HTTP path \"no-slash\" must start with / and contain no spaces or control \
         characters"
    );
    assert_eq!(
        errors(&vs(
            "on_down = \"drop\"\non_down_connections = \"rst\"\nquorum = 0\nsorry_server = \"10.0.0.1\"\n"
        )),
        "t.toml:6:11: bad on_down \"drop\": expected \"remove\" or \"inhibit\"\n\
         t.toml:7:23: bad on_down_connections \"rst\": expected \"reset\" or \"keep\"\n\
         t.toml:8:10: quorum 0 out of range 1..=65535\n\
         t.toml:9:16: bad address \"10.0.0.1\" for sorry_server: missing port, e.g. \"10.0.0.1:80\""
    );
    assert_eq!(
        errors(&vs(
            "quorum = 3\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n"
        )),
        "t.toml:6:10: quorum 3 of virtual server \"web\" can never be met: it has 1 real servers"
    );
}

#[test]
fn real_server_health_override_is_checked_too() {
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nhealth = { kind = \"tcp\", rise = 0 }\n"
        )),
        "t.toml:8:33: health rise 0 out of range 1..=4294967295"
    );
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nhealth = [{ kind = \"tcp\" }, { knd = \"x\" }]\n"
        )),
        "t.toml:8:31: unknown key \"knd\" in virtual_server.real_server.health (did you mean \"kind\"?); expected one \
         of kind, interval, timeout, rise, fall, port, address, method, path, host, expect_status, body_regex, \
         digest, sni, verify, ca_file, command"
    );
}

#[test]
fn health_needs_port_for_port_zero_real_servers() {
    let t = format!(
        "{G}[[virtual_server]]\nname = \"f\"\nfwmark = 7\nhealth = {{ kind = \"tcp\" }}\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.1:0\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.2:0\"\n"
    );
    assert_eq!(
        errors(&t),
        "t.toml:6:10: health of virtual server \"f\" needs a port: real server 10.0.0.1:0 has port 0, so there is no \
         port to check"
    );
}

#[test]
fn weight_out_of_range() {
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nweight = 70000\n"
        )),
        "t.toml:8:10: weight 70000 out of range 0..=65535"
    );
}

#[test]
fn real_server_family() {
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"[2001:db8::1]:80\"\n"
        )),
        "t.toml:7:11: real server 2001:db8::1 is IPv6 but virtual server \"web\" is IPv4"
    );
    // fwmark services: the family key decides.
    assert_eq!(
        errors(&format!(
            "{G}[[virtual_server]]\nname = \"f\"\nfwmark = 7\nfamily = \"ipv6\"\n\
             [[virtual_server.real_server]]\naddress = \"10.0.0.1:0\"\n"
        )),
        "t.toml:8:11: real server 10.0.0.1 is IPv4 but virtual server \"f\" is IPv6"
    );
    // ...except over tunnels, which the kernel supports across families.
    ok(&vs(
        "[[virtual_server.real_server]]\naddress = \"[2001:db8::1]:80\"\nforwarding = \"tun\"\n",
    ));
}

#[test]
fn dr_cannot_change_port() {
    assert_eq!(
        errors(&vs("forwarding = \"dr\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:8080\"\n")),
        "t.toml:8:11: real server 10.0.0.1:8080 uses dr forwarding, which cannot change the destination port: its \
         port must be 80 like virtual server \"web\" (ipvsadm would silently use 80)"
    );
    // NAT may; a port-0 (or fwmark) service accepts any port with dr.
    ok(&vs(
        "[[virtual_server.real_server]]\naddress = \"10.0.0.1:8080\"\n",
    ));
    ok(&format!(
        "{G}[[virtual_server]]\nname = \"f\"\nfwmark = 7\nforwarding = \"dr\"\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.1:8080\"\n"
    ));
}

#[test]
fn duplicate_real_server() {
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n"
        )),
        "t.toml:9:11: duplicate real server 10.0.0.1:80 in virtual server \"web\" (first at line 7)"
    );
}

#[test]
fn thresholds() {
    assert_eq!(
        errors(&vs(
            "[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nupper_threshold = 50\nlower_threshold = 100\n"
        )),
        "t.toml:9:19: lower_threshold 100 is above upper_threshold 50"
    );
}

#[test]
fn duplicate_virtual_servers() {
    let t = format!(
        "{G}{VS}[[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.1:80\"\n\
         [[virtual_server]]\nname = \"m1\"\nfwmark = 5\n[[virtual_server]]\nname = \"m2\"\nfwmark = 5\n\
         [[virtual_server]]\nname = \"m3\"\nfwmark = 5\nfamily = \"ipv6\"\n\
         [[virtual_server]]\nname = \"u\"\naddress = \"192.0.2.1:80\"\nprotocol = \"udp\"\n"
    );
    assert_eq!(
        errors(&t),
        "t.toml:7:8: duplicate virtual server name \"web\" (first at line 3)\n\
         t.toml:8:11: virtual server \"web\" duplicates TCP 192.0.2.1:80 of virtual server \"web\" (line 3)\n\
         t.toml:14:10: virtual server \"m2\" duplicates FWM 5 of virtual server \"m1\" (line 9)"
    );
}

// ----------------------------------------------------- phase 2: snat, ctsync

#[test]
fn snat_family() {
    assert_eq!(
        errors(&format!(
            "{G}[[snat]]\nmatch_vip = \"192.0.2.1\"\nto_source = \"2001:db8::1\"\n"
        )),
        "t.toml:5:13: to_source 2001:db8::1 is IPv6 but match_vip 192.0.2.1 is IPv4"
    );
}

#[test]
fn ctsync_rules() {
    assert_eq!(
        errors(&format!(
            "{G}[ctsync]\nlocal = \"10.0.0.1:3780\"\npeer = \"[2001:db8::2]:3780\"\n"
        )),
        "t.toml:3:1: missing required key \"key_file\" in [ctsync]\n\
         t.toml:5:8: peer [2001:db8::2]:3780 is IPv6 but local 10.0.0.1:3780 is IPv4"
    );
    assert_eq!(
        errors(&format!("{G}[ctsync]\nlocal = \"10.0.0.1:3780\"\npeer = \"10.0.0.1:3781\"\nkey_file = \"k\"\n")),
        "t.toml:5:8: peer 10.0.0.1:3781 is the same host as local 10.0.0.1:3780: peer is the other box of the pair"
    );
}

#[test]
fn ctsync_ignore_and_follow() {
    const VI: &str = "[[vrrp_instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\npriority = 150\nvirtual_ipaddresses = [\"192.0.2.100/32\"]\n\
                      [[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\"]\n";
    const CT: &str =
        "[ctsync]\nlocal = \"10.1.0.1:3780\"\npeer = \"10.1.0.2:3780\"\nkey_file = \"k\"\n";
    // Defaults: nothing ignored, the role follows every instance.
    let c = ok(&format!("{G}{VI}{CT}"));
    let ct = c.ctsync.unwrap();
    assert!(ct.ignore.is_empty());
    assert_eq!(ct.follow, None);
    // Both families; an instance or a sync group may be followed.
    let c = ok(&format!(
        "{G}{VI}{CT}ignore = [\"10.1.0.0/24\", \"2001:db8::/64\", \"192.0.2.7\"]\nfollow = \"G1\"\n"
    ));
    let ct = c.ctsync.unwrap();
    assert_eq!(
        ct.ignore,
        vec![
            Cidr::new("10.1.0.0".parse().unwrap(), 24).unwrap(),
            Cidr::new("2001:db8::".parse().unwrap(), 64).unwrap(),
            Cidr::new("192.0.2.7".parse().unwrap(), 32).unwrap(),
        ]
    );
    assert!(ct.ignore[0].contains(&"10.1.0.200".parse().unwrap()));
    assert!(!ct.ignore[0].contains(&"10.1.1.1".parse().unwrap()));
    assert!(!ct.ignore[0].contains(&"::ffff:10.1.0.1".parse().unwrap()));
    assert_eq!(ct.follow.as_deref(), Some("G1"));
    assert_eq!(
        ok(&format!("{G}{VI}{CT}follow = \"VI_1\"\n"))
            .ctsync
            .unwrap()
            .follow
            .as_deref(),
        Some("VI_1")
    );
    // Lines: G 1-2, VI 3-11, CT 12-15, ours from 16.
    assert_eq!(
        errors(&format!(
            "{G}{VI}{CT}ignore = [\"10.1.0.1/24\", \"10.1.0.0/33\", \"nope\", \"10.9.0.0/16\", \"10.9.0.0/16\"]\nfollow = \"VI_2\"\n"
        )),
        "t.toml:16:11: ignore \"10.1.0.1/24\" has host bits set: did you mean \"10.1.0.0/24\"?\n\
         t.toml:16:26: bad prefix \"10.1.0.0/33\" for ignore: invalid prefix length \"33\" (expected 0..=32)\n\
         t.toml:16:41: bad prefix \"nope\" for ignore: invalid IP address\n\
         t.toml:16:64: ignore lists 10.9.0.0/16 twice\n\
         t.toml:17:10: follow \"VI_2\" is not a vrrp_instance or sync_group (known: VI_1, G1)"
    );
    assert_eq!(
        errors(&format!("{G}{CT}follow = \"VI_1\"\n")),
        "t.toml:7:10: follow \"VI_1\": there is no vrrp_instance or sync_group to follow"
    );
    assert_eq!(
        errors(&format!("{G}{CT}ignore = \"10.0.0.0/8\"\n")),
        "t.toml:7:10: invalid type: expected an array for \"ignore\", found string \"10.0.0.0/8\""
    );
}

#[test]
fn ctsync_ipvs_sync_daemon_keys() {
    const CT: &str =
        "[ctsync]\nlocal = \"10.1.0.1:3780\"\npeer = \"10.1.0.2:3780\"\nkey_file = \"k\"\n";
    // Absent: no sync daemons.
    assert_eq!(ok(&format!("{G}{CT}")).ipvs_sync, None);
    // The id defaults to 0 (the backup then accepts any id).
    let c = ok(&format!("{G}{CT}ipvs_sync_interface = \"eth2\"\n"));
    assert_eq!(
        c.ipvs_sync,
        Some(IpvsSync {
            interface: "eth2".into(),
            syncid: 0
        })
    );
    let c = ok(&format!(
        "{G}{CT}ipvs_sync_interface = \"eth2\"\nipvs_syncid = 255\n"
    ));
    assert_eq!(c.ipvs_sync.unwrap().syncid, 255);
    // Lines: G 1-2, CT 3-6, ours from 7.
    assert_eq!(
        errors(&format!("{G}{CT}ipvs_syncid = 1\n")),
        "t.toml:7:15: ipvs_syncid needs ipvs_sync_interface (the interface the IPVS sync daemons use)"
    );
    assert_eq!(
        errors(&format!(
            "{G}{CT}ipvs_sync_interface = \"a-very-long-name0\"\nipvs_syncid = 256\n"
        )),
        "t.toml:7:23: ipvs_sync_interface \"a-very-long-name0\" is longer than 15 bytes (IFNAMSIZ 16 with the NUL)\n\
         t.toml:8:15: ipvs_syncid 256 out of range 0..=255"
    );
    assert_eq!(
        errors(&format!("{G}{CT}ipvs_sync_interface = \"eth 2\"\n")),
        "t.toml:7:23: ipvs_sync_interface \"eth 2\" is not a valid interface name (no '/', ':' or whitespace)"
    );
    assert_eq!(
        errors(&format!("{G}{CT}ipvs_syncid = \"1\"\n")),
        "t.toml:7:15: invalid type: expected an integer for \"ipvs_syncid\", found string \"1\""
    );
    // Written nftables: refused; auto forced to nftables (no IPVS on this
    // kernel): accepted, the daemon ignores it with a warning.
    let nft = format!(
        "[global]\nrouter_id = \"lb\"\ndataplane = \"nftables\"\n{CT}ipvs_sync_interface = \"eth2\"\n"
    );
    assert_eq!(
        parse(&nft, "t.toml").unwrap_err().to_string(),
        "t.toml:8:23: ipvs_sync_interface starts the kernel's IPVS sync daemons, which have nothing to sync on the nftables dataplane (ctsync alone moves the connections there); remove it, or use dataplane = \"ipvs\" (or \"auto\", which ignores it where IPVS is absent)"
    );
    let auto = format!("{G}{CT}ipvs_sync_interface = \"eth2\"\n");
    let c = parse_for(&auto, "t.toml", Some(DataplaneChoice::Nftables)).unwrap();
    assert!(c.ipvs_sync.is_some());
}

// ------------------------------------------------------------- collection

#[test]
fn reports_all_independent_errors_in_order() {
    let t = "[global]\nrouter_id = \"lb\"\nreconcile_interval = \"10ms\"\n\
         [[virtual_server]]\nname = \"web\"\naddress = \"192.0.2.1:80\"\nscheduler_flags = [\"sh-port\"]\n\
         [[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nweight = -1\n";
    assert_eq!(
        errors(t),
        "t.toml:3:22: reconcile_interval \"10ms\" is too short: the minimum is 100ms\n\
         t.toml:7:20: scheduler flag \"sh-port\" is only for scheduler \"sh\", not \"wlc\"\n\
         t.toml:10:10: weight -1 out of range 0..=65535"
    );
    assert_eq!(parse(t, "t.toml").unwrap_err().len(), 3);
}

#[test]
fn errors_are_sorted_by_position() {
    // Found in pass order (global, vrrp, ..., ctsync) but printed by position.
    let t = "[ctsync]\nlocal = \"x\"\n[global]\nrouter_id = \"\"\n";
    assert_eq!(
        errors(t),
        "t.toml:1:1: missing required key \"peer\" in [ctsync]\n\
         t.toml:1:1: missing required key \"key_file\" in [ctsync]\n\
         t.toml:2:9: bad address \"x\" for local: expected \"ip:port\"\n\
         t.toml:4:13: router_id must not be empty"
    );
}

#[test]
fn columns_count_characters() {
    // "é" is two bytes; the column is the character position.
    assert_eq!(
        errors("# café\n[global]\nrouter_id = \"lb\"\ndataplane = \"é\"\n"),
        "t.toml:4:13: bad dataplane \"é\": expected \"auto\", \"ipvs\" or \"nftables\""
    );
    assert_eq!(
        errors("[global]\nrouter_id = \"é\" ; x\n"),
        "t.toml:2:17: TOML syntax error: unexpected key or value, expected newline, '#'"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for t in [
        format!("a = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("a = {}1{}\n", "{b=".repeat(100_000), "}".repeat(100_000)),
        format!("[{}a]\nx = 1\n", "a.".repeat(100_000)),
    ] {
        assert!(parse(&t, "t.toml").is_err());
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Fragments that steer random input into both phases.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[global]\nrouter_id = \"x\"\n".to_string()),
            Just("[[virtual_server]]\n".to_string()),
            Just("[[virtual_server.real_server]]\n".to_string()),
            Just("[[vrrp_instance]]\n".to_string()),
            Just("[[sync_group]]\n".to_string()),
            Just("[[vrrp_script]]\n".to_string()),
            Just("[ctsync]\n".to_string()),
            Just("[[snat]]\n".to_string()),
            "(name|address|fwmark|family|protocol|scheduler|scheduler_flags|persistence_timeout|persistence_granularity|forwarding|weight|vrid|priority|version|advert_interval|virtual_ipaddresses|unicast_peers|instances|tunnel|health|local|peer|match_vip|to_source|script|notify|notify_master|track_scripts|authentication|unicast_src_ip|garp_master_repeat|garp_master_refresh|accept) = (\"[0-9a-z:./\\[\\] -]{0,20}\"|-?[0-9]{1,12}|true|\\[\"[0-9a-f.:/]{0,16}\"\\]|\\{ (kind|type|port|interval|name|auth_type|auth_pass) = \"[a-zA-Z0-9]{0,5}\" \\}|\\[\\{ name = \"[a-z]{0,3}\" \\}\\])\n",
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let _ = parse(&s, "f.toml");
        }

        #[test]
        fn configish_text_never_panics(parts in proptest::collection::vec(fragment(), 0..12)) {
            let text = parts.concat();
            if let Err(e) = parse(&text, "f.toml") {
                // Every error has a real position and is printable.
                for err in e.errors() {
                    prop_assert!(err.line >= 1 && err.col >= 1);
                }
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn integer_too_large_for_toml() {
    assert_eq!(
        errors(&vs("[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\nweight = 99999999999999999999\n")),
        "t.toml:8:10: integer 99999999999999999999 for \"weight\" is too large"
    );
}

#[test]
fn table_instead_of_array_of_tables() {
    assert_eq!(
        errors(&format!("{G}[virtual_server]\nname = \"x\"\n")),
        "t.toml:3:1: invalid type: expected an array of tables for \"virtual_server\", found a table (write \
         [[virtual_server]] for each entry)"
    );
}

#[test]
fn datetime_is_not_a_duration() {
    assert_eq!(
        errors(&vs("persistence_timeout = 1979-05-27\n")),
        "t.toml:6:23: invalid type: expected a duration string like \"1s\" for \"persistence_timeout\", found \
         datetime 1979-05-27"
    );
}

#[test]
fn persistence_timeout_zero() {
    assert_eq!(
        errors(&vs("persistence_timeout = \"0s\"\n")),
        "t.toml:6:23: persistence_timeout \"0s\" is too short: the minimum is 1s"
    );
}

#[test]
fn array_where_a_table_belongs() {
    assert_eq!(
        errors("[[global]]\nrouter_id = \"x\"\n"),
        "t.toml:1:1: invalid type: expected a table for \"global\", found an array (write [global], not \
         [[global]])"
    );
    assert_eq!(
        errors(&vs("health = [\"tcp\"]\n")),
        "t.toml:6:11: invalid type: expected a table for each \"health\" entry, found string \"tcp\""
    );
    assert_eq!(
        errors(&format!("{G}[[vrrp_instance]]\ntrack_interfaces = [\"eth0\"]\n")),
        "t.toml:4:21: invalid type: expected a table for each \"track_interfaces\" entry, found string \"eth0\""
    );
}

// ------------------------------------------------------ nftables dataplane

const G_NFT: &str = "[global]\nrouter_id = \"lb\"\ndataplane = \"nftables\"\n";

/// `G_NFT` (lines 1-3) + `VS` (lines 4-6) + `body` from line 7.
fn nft_vs(body: &str) -> String {
    format!("{G_NFT}{VS}{body}")
}

#[test]
fn nftables_accepts_its_four_schedulers_and_maglev_table_size() {
    for s in NFTABLES_SCHEDULERS {
        ok(&nft_vs(&format!("scheduler = \"{s}\"\n")));
    }
    let c = ok(&nft_vs(
        "scheduler = \"mh\"\nscheduler_flags = [\"mh-port\"]\nmaglev_table_size = 251\n",
    ));
    assert_eq!(c.virtual_servers[0].maglev_table_size, 251);
    assert_eq!(
        ok(&vs("scheduler = \"mh\"\n")).virtual_servers[0].maglev_table_size,
        65537
    );
}

#[test]
fn maglev_table_size_must_be_prime_and_in_range() {
    assert_eq!(
        errors(&vs("maglev_table_size = 65536\n")),
        "t.toml:6:21: maglev_table_size 65536 is not prime (a prime size makes every backend's \
         permutation visit every slot; the default is 65537)"
    );
    assert_eq!(
        errors(&vs("maglev_table_size = 99999999\n")),
        "t.toml:6:21: maglev_table_size 99999999 out of range 2..=16777216"
    );
}

#[test]
fn nftables_refuses_what_it_cannot_express_each_at_its_key() {
    let text = nft_vs(
        "scheduler = \"wlc\"\npersistence_timeout = \"60s\"\npersistence_engine = \"sip\"\n\
         forwarding = \"dr\"\n[[virtual_server.real_server]]\naddress = \"10.0.0.1:80\"\n\
         upper_threshold = 10\nforwarding = \"tun\"\n",
    );
    assert_eq!(
        errors(&text),
        "t.toml:7:13: scheduler \"wlc\" is not available on the nftables dataplane (it has rr, wrr, sh, mh); \
         use dataplane = \"ipvs\" on a kernel with IPVS\n\
         t.toml:9:22: persistence_engine is not available on the nftables dataplane (persistence there is by \
         client address only); use dataplane = \"ipvs\" on a kernel with IPVS\n\
         t.toml:10:14: forwarding \"dr\" is not available on the nftables dataplane (it forwards by NAT only); \
         use dataplane = \"ipvs\" on a kernel with IPVS\n\
         t.toml:13:19: connection thresholds are not available on the nftables dataplane (nftables does not \
         count connections per real server while scheduling); use dataplane = \"ipvs\" on a kernel with IPVS\n\
         t.toml:14:14: forwarding \"tun\" is not available on the nftables dataplane (it forwards by NAT only); \
         use dataplane = \"ipvs\" on a kernel with IPVS"
    );
}

#[test]
fn nftables_names_the_default_scheduler_when_none_is_set() {
    assert_eq!(
        errors(&format!("{G_NFT}{VS}")),
        "t.toml:4:1: [[virtual_server]]: the default scheduler wlc is not available on the nftables \
         dataplane; set scheduler = \"rr\", \"wrr\", \"sh\" or \"mh\""
    );
}

#[test]
fn the_daemon_can_check_a_config_for_the_dataplane_auto_chose() {
    let text = vs("scheduler = \"lc\"\n");
    ok(&text);
    let e = parse_for(&text, "t.toml", Some(DataplaneChoice::Nftables))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.toml:6:13: scheduler \"lc\" is not available on the nftables dataplane"),
        "{e}"
    );
}

#[test]
fn nftables_refuses_port_zero_services() {
    let text = format!(
        "{G_NFT}[[virtual_server]]\nname = \"all\"\naddress = \"192.0.2.1:0\"\nscheduler = \"rr\"\npersistence_timeout = \"60s\"\n"
    );
    assert_eq!(
        errors(&text),
        "t.toml:6:11: port 0 (all ports) services are not available on the nftables dataplane (a service \
         there is one address, protocol and port); use dataplane = \"ipvs\" on a kernel with IPVS"
    );
}

#[test]
fn example_nftables_toml_parses_for_the_nftables_dataplane() {
    let c = ok(include_str!("../../../etc/nftables.toml"));
    assert_eq!(c.global.dataplane, DataplaneChoice::Nftables);
    assert_eq!(c.virtual_servers.len(), 4);
    assert_eq!(c.snat.len(), 1);
    // And the annotated example names what only IPVS can do.
    let e = parse_for(
        include_str!("../../../etc/director.toml"),
        "director.toml",
        Some(DataplaneChoice::Nftables),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("scheduler \"wlc\" is not available on the nftables dataplane"),
        "{e}"
    );
    assert!(
        e.contains("one_packet is not available on the nftables dataplane"),
        "{e}"
    );
}

#[test]
fn ipvs_refuses_a_reset_it_cannot_keep_at_weight_zero() {
    let text = vs("on_down = \"inhibit\"\non_down_connections = \"reset\"\n");
    // Fine where the dataplane is not known yet, and on nftables (it
    // deletes the conntrack entries of a weight-0 server as well).
    ok(&text);
    let e = parse_for(&text, "t.toml", Some(DataplaneChoice::Ipvs))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "t.toml:7:23: on_down_connections = \"reset\" with on_down = \"inhibit\" is not possible on the \
         IPVS dataplane: IPVS expires a failed real server's connections only when the server is removed \
         (net.ipv4.vs.expire_nodest_conn), not at weight 0; use on_down = \"remove\", or \
         on_down_connections = \"keep\""
    );
    // The defaults (remove + reset, inhibit + keep) are what IPVS can do.
    for body in [
        "",
        "on_down = \"inhibit\"\n",
        "on_down_connections = \"reset\"\n",
    ] {
        parse_for(&vs(body), "t.toml", Some(DataplaneChoice::Ipvs))
            .unwrap_or_else(|e| panic!("{body}: {e}"));
    }
}
