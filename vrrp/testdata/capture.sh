#!/usr/bin/env bash
# Regenerate the VRRP advert captures in this directory from a real keepalived.
#
# Why: the codec's round-trip tests must run against bytes a real peer put on
# the wire, not against bytes our own encoder produced (DESIGN.md principle 4).
#
# What it does, all inside two network namespaces created here and removed on
# exit (nothing is sent outside them):
#
#   ns A  (keepalived)  veth A 10.99.0.1/24, fe80::a, 2001:db8:99::1/64
#   ns B  (tcpdump)     veth B 10.99.0.2/24, fe80::b, 2001:db8:99::2/64
#
# keepalived runs in A with one VRRP instance per scenario (see CONF below),
# tcpdump captures in B, i.e. exactly what a receiving router's raw socket gets.
# After the instances have become MASTER, keepalived is stopped with SIGTERM,
# which makes every master send a priority-0 advert (RFC 5798 6.4.3).
# One packet per scenario is then cut out of the capture and written as hex.
#
# Usage: sudo vrrp/testdata/capture.sh [OUTDIR]      (default: this directory)
# Needs: root, iproute2, keepalived (tested with v2.2.7), tcpdump.
set -euo pipefail

OUT=${1:-$(cd "$(dirname "$0")" && pwd)}
TAG=$$
NSA=vrrpcap-$TAG-a
NSB=vrrpcap-$TAG-b
IFA=vc${TAG}a
IFB=vc${TAG}b
WORK=$(mktemp -d /tmp/vrrpcap-$TAG.XXXXXX)
KA_PID=""
TD_PID=""

cleanup() {
    # Only the processes this script started, by pid.
    [ -n "$KA_PID" ] && kill "$KA_PID" 2>/dev/null || true
    [ -n "$TD_PID" ] && kill "$TD_PID" 2>/dev/null || true
    sleep 0.3
    ip netns del "$NSA" 2>/dev/null || true
    ip netns del "$NSB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

KVER=$(keepalived -v 2>&1 | head -1)

ip netns add "$NSA"
ip netns add "$NSB"
for ns in "$NSA" "$NSB"; do
    # No DAD, no automatic link-local: the addresses below are the only ones,
    # so keepalived's choice of IPv6 source address is deterministic.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.addr_gen_mode=1
    ip -n "$ns" link set lo up
done
ip link add "$IFA" netns "$NSA" type veth peer name "$IFB" netns "$NSB"
ip -n "$NSA" link set "$IFA" addrgenmode none
ip -n "$NSB" link set "$IFB" addrgenmode none
ip -n "$NSA" addr add 10.99.0.1/24 dev "$IFA"
ip -n "$NSB" addr add 10.99.0.2/24 dev "$IFB"
ip -n "$NSA" addr add fe80::a/64 dev "$IFA" nodad
ip -n "$NSB" addr add fe80::b/64 dev "$IFB" nodad
ip -n "$NSA" addr add 2001:db8:99::1/64 dev "$IFA" nodad
ip -n "$NSB" addr add 2001:db8:99::2/64 dev "$IFB" nodad
ip -n "$NSA" link set "$IFA" up
ip -n "$NSB" link set "$IFB" up

CONF=$WORK/keepalived.conf
cat >"$CONF" <<CONF
global_defs {
    router_id vrrpcap
    # Not strict: strict mode would forbid the v2 authentication instances.
    vrrp_garp_master_delay 5
}

# v3 over IPv4, multicast 224.0.0.18, defaults.
vrrp_instance V3_V4 {
    state MASTER
    interface $IFA
    version 3
    virtual_router_id 51
    priority 150
    advert_int 1
    virtual_ipaddress {
        192.0.2.100/32
    }
}

# v3 over IPv6, multicast ff02::12, source = link-local fe80::a.
vrrp_instance V3_V6 {
    state MASTER
    interface $IFA
    version 3
    virtual_router_id 52
    priority 150
    advert_int 1
    virtual_ipaddress {
        2001:db8::100/64
    }
}

# v2, no authentication.
vrrp_instance V2_NOAUTH {
    state MASTER
    interface $IFA
    version 2
    virtual_router_id 53
    priority 100
    advert_int 1
    virtual_ipaddress {
        192.0.2.101/32
    }
}

# v2, simple text password (RFC 2338 auth type 1).
vrrp_instance V2_PASS {
    state MASTER
    interface $IFA
    version 2
    virtual_router_id 54
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass secret
    }
    virtual_ipaddress {
        192.0.2.102/32
    }
}

# v3 over IPv4, unicast to B.
vrrp_instance V3_UNICAST {
    state MASTER
    interface $IFA
    version 3
    virtual_router_id 55
    priority 120
    advert_int 1
    unicast_src_ip 10.99.0.1
    unicast_peer {
        10.99.0.2
    }
    virtual_ipaddress {
        192.0.2.103/32
    }
}

# v3 over IPv4, four VIPs, advert interval 2.5 s (= 250 centiseconds).
vrrp_instance V3_MULTI {
    state MASTER
    interface $IFA
    version 3
    virtual_router_id 56
    priority 200
    advert_int 2.5
    virtual_ipaddress {
        192.0.2.110/32
        192.0.2.111/32
        198.51.100.7/24
        203.0.113.200/32
    }
}

# v2, three VIPs, advert interval 3 s.
vrrp_instance V2_MULTI {
    state MASTER
    interface $IFA
    version 2
    virtual_router_id 57
    priority 90
    advert_int 3
    virtual_ipaddress {
        192.0.2.120/32
        192.0.2.121/32
        192.0.2.122/32
    }
}

# v2 with IPsec AH (RFC 2338 auth type 2): IP protocol 51, AH header
# in front of the VRRP message.
vrrp_instance V2_AH {
    state MASTER
    interface $IFA
    version 2
    virtual_router_id 58
    priority 100
    advert_int 1
    authentication {
        auth_type AH
        auth_pass secret
    }
    virtual_ipaddress {
        192.0.2.130/32
    }
}

# v3 over IPv6, unicast to B's global address.
vrrp_instance V3_V6_UNICAST {
    state MASTER
    interface $IFA
    version 3
    virtual_router_id 59
    priority 130
    advert_int 1
    unicast_src_ip 2001:db8:99::1
    unicast_peer {
        2001:db8:99::2
    }
    virtual_ipaddress {
        2001:db8::159/64
        2001:db8::160/64
    }
}
CONF

PCAP=$WORK/vrrp.pcap
ip netns exec "$NSB" tcpdump -i "$IFB" -nn -U -s 0 -w "$PCAP" \
    'ip proto 112 or ip proto 51 or ip6 proto 112' 2>"$WORK/tcpdump.log" &
TD_PID=$!
sleep 1

ip netns exec "$NSA" keepalived -f "$CONF" -n -l -D -P \
    -p "$WORK/keepalived.pid" -r "$WORK/vrrp.pid" -c "$WORK/checkers.pid" \
    >"$WORK/keepalived.log" 2>&1 &
KA_PID=$!

# Long enough for the 2.5 s instance to become master and advertise a few times.
sleep 12
kill -TERM "$KA_PID"
wait "$KA_PID" 2>/dev/null || true
KA_PID=""
sleep 1
kill "$TD_PID"
wait "$TD_PID" 2>/dev/null || true
TD_PID=""

# extract NAME FILTER DESCRIPTION: the first packet matching the BPF FILTER,
# whole IP packet as hex (tcpdump -x omits the link-layer header).
extract() {
    local name=$1 filter=$2 desc=$3 hex
    hex=$(tcpdump -r "$PCAP" -nn -c 1 -x "$filter" 2>/dev/null |
        awk '/^[[:space:]]+0x[0-9a-f]+:/ { for (i = 2; i <= NF; i++) printf "%s", $i }')
    if [ -z "$hex" ]; then
        echo "capture.sh: no packet for $name ($filter)" >&2
        return 1
    fi
    {
        echo "# $desc"
        echo "# produced by vrrp/testdata/capture.sh with $KVER; whole IP packet as received by the peer"
        echo "$hex" | fold -w 64
    } >"$OUT/$name.hex"
    echo "wrote $OUT/$name.hex"
}

# Offsets: IPv4 VRRP message at ip[ihl*4], IPv6 at ip6[40] (no extension
# headers). VRRP byte 1 = VRID, byte 2 = priority.
V4='ip[((ip[0] & 0xf) << 2) + '
extract v3_ipv4_multicast "ip proto 112 and ${V4}1] = 51 and ${V4}2] != 0" \
    "VRRPv3 IPv4 multicast, vrid 51, priority 150, advert_int 1s, VIP 192.0.2.100"
extract v3_ipv6_multicast "ip6 proto 112 and ip6[41] = 52 and ip6[42] != 0" \
    "VRRPv3 IPv6 multicast, vrid 52, priority 150, advert_int 1s, VIP 2001:db8::100, src fe80::a"
extract v2_ipv4_noauth "ip proto 112 and ${V4}1] = 53 and ${V4}2] != 0" \
    "VRRPv2 IPv4 multicast, vrid 53, priority 100, advert_int 1s, auth none, VIP 192.0.2.101"
extract v2_ipv4_pass "ip proto 112 and ${V4}1] = 54 and ${V4}2] != 0" \
    "VRRPv2 IPv4 multicast, vrid 54, priority 100, advert_int 1s, auth PASS 'secret', VIP 192.0.2.102"
extract v3_ipv4_unicast "ip proto 112 and ${V4}1] = 55 and ${V4}2] != 0" \
    "VRRPv3 IPv4 unicast 10.99.0.1 -> 10.99.0.2, vrid 55, priority 120, advert_int 1s, VIP 192.0.2.103"
extract v3_ipv4_multi_vip "ip proto 112 and ${V4}1] = 56 and ${V4}2] != 0" \
    "VRRPv3 IPv4 multicast, vrid 56, priority 200, advert_int 2.5s, VIPs 192.0.2.110 192.0.2.111 198.51.100.7 203.0.113.200"
extract v2_ipv4_multi_vip "ip proto 112 and ${V4}1] = 57 and ${V4}2] != 0" \
    "VRRPv2 IPv4 multicast, vrid 57, priority 90, advert_int 3s, VIPs 192.0.2.120 192.0.2.121 192.0.2.122"
# AH: IPv4 header, then the 24-byte AH header (RFC 2402, HMAC-96 ICV), then VRRP.
extract v2_ipv4_ah "ip proto 51 and ${V4}24 + 1] = 58 and ${V4}24 + 2] != 0" \
    "VRRPv2 IPv4 multicast over IPsec AH (IP proto 51), vrid 58, priority 100, advert_int 1s, auth_type AH 'secret', VIP 192.0.2.130"
extract v3_ipv6_unicast "ip6 proto 112 and ip6[41] = 59 and ip6[42] != 0" \
    "VRRPv3 IPv6 unicast 2001:db8:99::1 -> 2001:db8:99::2, vrid 59, priority 130, advert_int 1s, VIPs 2001:db8::159 2001:db8::160"
extract v3_ipv4_priority0 "ip proto 112 and ${V4}1] = 51 and ${V4}2] = 0" \
    "VRRPv3 IPv4 multicast, vrid 51, PRIORITY 0 sent by the master on SIGTERM, VIP 192.0.2.100"
extract v3_ipv6_priority0 "ip6 proto 112 and ip6[41] = 52 and ip6[42] = 0" \
    "VRRPv3 IPv6 multicast, vrid 52, PRIORITY 0 sent by the master on SIGTERM, VIP 2001:db8::100"
extract v2_ipv4_priority0 "ip proto 112 and ${V4}1] = 53 and ${V4}2] = 0" \
    "VRRPv2 IPv4 multicast, vrid 53, PRIORITY 0 sent by the master on SIGTERM, VIP 192.0.2.101"

if [ -n "${KEEP_LOG:-}" ]; then
    cp "$WORK/keepalived.log" "$KEEP_LOG"
fi
