#!/bin/sh
# Captures the netlink messages the real nft CLI (nftables 1.0.6) sends for
# element changes and rule replacements, for the byte-level tests of
# ../../nfnl/ (director's own nf_tables netlink writer).
#
# Run as root from anywhere:   sh capture.sh > nfnl.txt
#
# How: a fresh network namespace gets the compiled test ruleset
# (../full.nft); each command of commands.txt then runs under strace, whose
# `-e write=all` hex-dumps every byte nft sends on its netlink socket. The
# conntrack capture's extract.py turns the dumps into one line per netlink
# message (`> HEX` sent, `< HEX` received).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
NS=dnft-cap-$$
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" nft -f "$HERE/../full.nft"
# The handle of CHAIN's rule whose comment starts with "sel".
sel_handle() {
    ip netns exec "$NS" nft -a list chain inet director "$1" |
        sed -n 's/.*comment "sel[^"]*" # handle \([0-9]*\)$/\1/p'
}
grep -v '^#' "$HERE/commands.txt" | grep -v '^$' >"$TMP/commands.txt"
n=0
while IFS= read -r cmd; do
    while :; do
        chain=$(printf '%s\n' "$cmd" | sed -n 's/.*{sel:\([a-z0-9_]*\)}.*/\1/p')
        [ -n "$chain" ] || break
        cmd=$(printf '%s\n' "$cmd" | sed "s/{sel:$chain}/$(sel_handle "$chain")/")
    done
    printf '%s\n' "$cmd" >>"$TMP/resolved.txt"
    # shellcheck disable=SC2086
    eval "ip netns exec \"\$NS\" strace -qq -o \"\$TMP/strace.$n\" \
        -e trace=sendto,sendmsg,recvmsg,recvfrom -e read=all -e write=all $cmd" \
        >"$TMP/out.$n" 2>&1 || { echo "failed: $cmd" >&2; cat "$TMP/out.$n" >&2; exit 1; }
    n=$((n + 1))
done <"$TMP/commands.txt"
python3 "$HERE/../../../conntrack/testdata/extract.py" "$TMP/resolved.txt" "$TMP"
