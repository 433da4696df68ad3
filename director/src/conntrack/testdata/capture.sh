#!/bin/sh
# Captures what the real conntrack CLI (conntrack-tools) sends to and gets
# from ctnetlink, for the byte-level tests in ../tests.rs.
#
# Run as root from anywhere:   sh capture.sh > conntrack.txt
#
# How: a fresh network namespace (conntrack tables are per netns, so the
# host's table is neither read nor touched); each command of commands.txt
# runs under strace, whose `-e read=all -e write=all` hex-dumps every byte
# the CLI sends to and receives from its netlink socket. (nlmon would be the
# natural tap, but the hosts' kernel is built without it.) extract.py turns
# the dumps into one line per netlink message; the CLI's own stdout is kept
# (lines "= ...") to compare our decoder with what it printed.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NS=dct-cap-$$
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
n=0
grep -v '^#' "$HERE/commands.txt" | grep -v '^$' | while IFS= read -r cmd; do
    cd "$HERE"
    # shellcheck disable=SC2086
    ip netns exec "$NS" strace -qq -o "$TMP/strace.$n" \
        -e trace=sendto,sendmsg,recvmsg,recvfrom -e read=all -e write=all \
        $cmd >"$TMP/out.$n" 2>/dev/null || true
    n=$((n + 1))
done
python3 "$HERE/extract.py" "$HERE/commands.txt" "$TMP"
