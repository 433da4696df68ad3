#!/bin/sh
# Captures what iproute2 (`ip`) sends to and gets from rtnetlink, for the
# byte-level tests in ../tests.rs.
#
# Run as root from anywhere:   sh capture.sh > rtnl.txt
#
# How: a fresh network namespace with a veth pair (the hosts have no
# `dummy` module), so the host's addresses are neither read nor touched;
# each command of commands.txt runs under strace, whose `-e read=all -e
# write=all` hex-dumps every byte `ip` sends and receives on its netlink
# socket (the hosts' kernel has no nlmon). The conntrack capture's
# extract.py turns the dumps into one line per netlink message (`>` sent,
# `<` received) and keeps `ip`'s own output (`= ...` lines).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NS=drt-cap-$$
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link add va type veth peer name vb
ip -n "$NS" link set va up
ip -n "$NS" link set vb up
n=0
grep -v '^#' "$HERE/commands.txt" | grep -v '^$' | while IFS= read -r cmd; do
    # shellcheck disable=SC2086
    ip netns exec "$NS" strace -qq -o "$TMP/strace.$n" \
        -e trace=sendto,sendmsg,recvmsg,recvfrom -e read=all -e write=all \
        $cmd >"$TMP/out.$n" 2>/dev/null || true
    n=$((n + 1))
done
python3 "$HERE/../../conntrack/testdata/extract.py" "$HERE/commands.txt" "$TMP"
