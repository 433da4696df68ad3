#!/bin/sh
# Captures what real ipvsadm sends to (and gets from) the kernel's IPVS
# generic netlink family, for the byte-level tests in ../tests.rs.
#
# Run from the worktree root, inside the kernel lab:
#   tests/lab/run --out /tmp/cap -- sh director/src/ipvs/testdata/capture.sh
# then copy /tmp/cap/ipvsadm.txt (and, if wanted, ipvsadm.pcap) here.
#
# How: an nlmon interface mirrors every netlink message of the VM; tcpdump
# records it (link type DLT_NETLINK = 253, one skb per packet). Before each
# command a marker request (CTRL_CMD_GETFAMILY for the name "MARK<n>", which
# fails with ENOENT) is sent, so extract.py can cut the capture per command.
set -eu
HERE=$(dirname "$0")
OUT=${LAB_OUT:-/lab-out}

ip link add nlmon0 type nlmon
ip link set nlmon0 up
# A multicast-capable interface for the sync daemons.
ip link add sync0 type dummy
ip link set sync0 up multicast on
ip addr add 192.0.2.254/24 dev sync0

tcpdump -i nlmon0 -U -s 0 -w "$OUT/ipvsadm.pcap" 2>"$OUT/tcpdump.log" &
TCPDUMP=$!
sleep 2

n=0
grep -v '^#' "$HERE/commands.txt" | grep -v '^$' | while IFS= read -r cmd; do
    python3 "$HERE/extract.py" --mark "$n"
    echo "== $n: $cmd" >>"$OUT/commands.log"
    sh -c "$cmd" >>"$OUT/commands.log" 2>&1 || echo "(exit $?)" >>"$OUT/commands.log"
    n=$((n + 1))
done
python3 "$HERE/extract.py" --mark end
sleep 1
kill "$TCPDUMP"
wait "$TCPDUMP" || true
python3 "$HERE/extract.py" "$OUT/ipvsadm.pcap" "$HERE/commands.txt" >"$OUT/ipvsadm.txt"
echo "capture: $(grep -c '^## ' "$OUT/ipvsadm.txt") commands, $(grep -c '^[<>]' "$OUT/ipvsadm.txt") messages"
