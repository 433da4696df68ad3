#!/bin/bash
# Regenerate the golden files in this directory from a real IPVS kernel and
# the real ipvsadm (1.31).  Runs the table-building part inside the kernel
# lab VM (tests/lab/run), which writes into this directory through /lab-out:
#
#   director/src/format/testdata/make-golden.sh [path/to/tests/lab/run]
#
# What it captures (all from one table):
#   save.txt                  ipvsadm -S -n    (settings; parsed by the tests)
#   nosort-*.txt              the same listings with --nosort: kernel dump
#                             order plus exact counters, also parsed by the
#                             tests to build the KernelTable input
#   list*.txt                 the sorted listings the tests must reproduce
#   ip_vs_conn.txt + conn*.txt  /proc/net/ip_vs_conn and ipvsadm -Lnc of the
#                             same instant
#   timeout.txt daemon.txt    ipvsadm -L --timeout / --daemon
#
# LAB_ENV_GOLDEN_BULK_BYTES=N sets the size of each of the two bulk
# downloads (default 600 MB: enough for the K and M suffixes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ "${1:-}" != "--inside" ]; then
    LAB=${1:-$HERE/../../../../tests/lab/run}
    cd "$HERE"
    exec "$LAB" --timeout 900 --out "$HERE" -- bash "$HERE/make-golden.sh" --inside
fi

OUT=/lab-out
PY=/usr/bin/python3
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "make-golden: $*" >&2; }

# ---- topology: client netns -- director (this VM) -- real-server netns ------
ip netns add cl
ip netns add rs
ip link add vc0 type veth peer name vc1
ip link add vr0 type veth peer name vr1
ip link set vc1 netns cl
ip link set vr1 netns rs
ip addr add 10.50.0.1/24 dev vc0
ip addr add fd50::1/64 dev vc0 nodad
ip addr add 10.60.0.1/24 dev vr0
ip addr add fd60::1/64 dev vr0 nodad
ip link set vc0 up
ip link set vr0 up
ip -n cl addr add 10.50.0.2/24 dev vc1
ip -n cl addr add fd50::2/64 dev vc1 nodad
ip -n cl link set vc1 up
ip -n cl link set lo up
ip -n cl route add default via 10.50.0.1
ip -n cl -6 route add default via fd50::1
ip -n rs addr add 10.60.0.2/24 dev vr1
ip -n rs addr add 10.60.0.3/24 dev vr1
ip -n rs addr add fd60::2/64 dev vr1 nodad
ip -n rs link set vr1 up
ip -n rs link set lo up
ip -n rs route add default via 10.60.0.1
ip -n rs -6 route add default via fd60::1
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv6.conf.all.forwarding=1
ip addr add 10.99.0.1/32 dev lo
ip addr add fd99::1/128 dev lo nodad
modprobe ip_vs 2>/dev/null || true

# ---- the table ----------------------------------------------------------------
A() { ipvsadm "$@" || { log "FAILED: ipvsadm $*"; return 0; }; }
# live services (traffic flows through these)
A -A -t 10.99.0.1:80 -s rr
A -a -t 10.99.0.1:80 -r 10.60.0.2:8080 -m -w 3
A -a -t 10.99.0.1:80 -r 10.60.0.3:8080 -m -w 1 -x 1000 -y 10
A -A -u 10.99.0.1:53 -s rr -o
A -a -u 10.99.0.1:53 -r 10.60.0.2:5353 -m
A -A -t 10.99.0.1:8443 -s wlc -p 120 -M 255.255.255.0
A -a -t 10.99.0.1:8443 -r 10.60.0.2:8080 -m
A -A -t [fd99::1]:80 -s wlc
A -a -t [fd99::1]:80 -r [fd60::2]:8080 -m -w 5
A -A -u 10.99.0.1:5060 -s rr -p 60 --pe sip
A -a -u 10.99.0.1:5060 -r 10.60.0.2:5060 -m
# a Local destination: the real server is an address of this box
A -A -t 10.99.0.1:81 -s rr
A -a -t 10.99.0.1:81 -r 10.99.0.1:81 -g
# static services (layout, flags, sorting)
A -A -t 192.168.10.1:80 -s wlc
A -a -t 192.168.10.1:80 -r 10.0.0.11:8080 -m -w 1
A -a -t 192.168.10.1:80 -r 10.0.0.9:8080 -m -w 2
A -a -t 192.168.10.1:80 -r 192.168.20.5:80 -g -w 0
A -a -t 192.168.10.1:80 -r 172.16.0.1:80 -i -w 4
A -A -t 192.168.10.1:443 -s sh -b sh-fallback,sh-port
A -a -t 192.168.10.1:443 -r 10.0.0.11:443 -g
A -A -t 100.64.0.1:443 -s mh -b mh-port
A -a -t 100.64.0.1:443 -r 10.0.0.11:443 -i --tun-type gue --tun-port 6080 --tun-csum
A -a -t 100.64.0.1:443 -r 10.0.0.12:443 -i --tun-type gre --tun-csum
A -a -t 100.64.0.1:443 -r 10.0.0.13:443 -i --tun-type gue --tun-port 6081 --tun-remcsum
A -a -t 100.64.0.1:443 -r 10.0.0.14:443 -i --tun-type ipip
A -A -t 100.64.0.1:80 -s rr -b flag-1,flag-3
A -A -t 10.1.0.1:80 -s lc -p 3600
A -A -u 10.1.0.1:80 -s mh -b mh-fallback
A -A --sctp-service 10.1.0.1:3868 -s wrr
A -a --sctp-service 10.1.0.1:3868 -r 10.0.0.20:3868 -m -w 2147483647
A -A -t 255.255.255.254:65535 -s dh
A -A -u 1.2.3.4:0 -s sed -p 30
A -A -f 100 -s wlc -p 300
A -a -f 100 -r 10.0.0.31:0 -g
A -a -f 100 -r 10.0.0.30:0 -g -w 7
A -A -f 3000000000 -s rr
A -A -f 7 -6 -s rr -p 60 -M 64
A -a -f 7 -6 -r [2001:db8::31]:0 -g
A -A -f 100 -6 -s nq
A -A -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -s wlc -p 600 -M 48
A -a -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -r [2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535 -g
A -a -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -r [2001:db8::2]:443 -m -w 9
A -A -t [::1]:80 -s rr
A -A -u [2001:db8::1]:53 -s rr -o
A -A -t [fe80::1:0:0:1]:22 -s rr
A -A -t [8000::1]:22 -s rr
A -A -t [2001:0:0:1::1]:22 -s rr

# ---- traffic ---------------------------------------------------------------------
cat >/tmp/srv.py <<'PYEOF'
import socket, socketserver, sys, threading
class T(socketserver.BaseRequestHandler):
    def handle(self):
        data = self.request.recv(100)
        n = int(data.split()[0]) if data.split() else 0
        chunk = b"x" * 65536
        while n > 0:
            k = min(n, len(chunk))
            self.request.sendall(chunk[:k])
            n -= k
class TS(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
class TS6(TS):
    address_family = socket.AF_INET6
class U(socketserver.BaseRequestHandler):
    def handle(self):
        self.request[1].sendto(self.request[0], self.client_address)
srvs = [TS6(("::", 8080), T),
        socketserver.UDPServer(("0.0.0.0", 5353), U),
        socketserver.UDPServer(("0.0.0.0", 5060), U)]
for s in srvs:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
PYEOF
cat >/tmp/cli.py <<'PYEOF'
import socket, sys
def tcp(fam, addr, n, size, keep=False):
    socks = []
    for _ in range(n):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(addr)
        s.sendall(b"%d\n" % size)
        got = 0
        while got < size:
            b = s.recv(1 << 16)
            if not b:
                break
            got += len(b)
        if keep:
            socks.append(s)
        else:
            s.close()
    return socks
def udp(addr, n, payload=b"ping"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    for _ in range(n):
        s.sendto(payload, addr)
        try:
            s.recv(2000)
        except socket.timeout:
            pass
what = sys.argv[1]
if what == "bulk":
    tcp(socket.AF_INET, ("10.99.0.1", 80), 2, int(sys.argv[2]))
elif what == "many":
    tcp(socket.AF_INET, ("10.99.0.1", 80), 30, 1000)
    tcp(socket.AF_INET, ("10.99.0.1", 8443), 5, 100)
    tcp(socket.AF_INET6, ("fd99::1", 80), 7, 5000)
    udp(("10.99.0.1", 53), 12)
    sip = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 10.50.0.2:5060\r\n"
           b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
           b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    udp(("10.99.0.1", 5060), 3, sip)
elif what == "hold":
    socks = tcp(socket.AF_INET, ("10.99.0.1", 80), 3, 10, keep=True)
    socks += tcp(socket.AF_INET6, ("fd99::1", 80), 2, 10, keep=True)
    print("held", flush=True)
    import time
    time.sleep(100000)
PYEOF
ip netns exec rs $PY /tmp/srv.py >/tmp/srv.log 2>&1 &
for _ in $(seq 100); do grep -q ready /tmp/srv.log 2>/dev/null && break; sleep 0.2; done
grep -q ready /tmp/srv.log || { cat /tmp/srv.log >&2; exit 1; }
t0=$(date +%s)
ip netns exec cl $PY /tmp/cli.py bulk "${GOLDEN_BULK_BYTES:-600000000}"
log "bulk transfer took $(( $(date +%s) - t0 ))s"
ip netns exec cl $PY /tmp/cli.py many
ip netns exec cl $PY /tmp/cli.py hold >/tmp/hold.log 2>&1 &
for _ in $(seq 100); do grep -q held /tmp/hold.log 2>/dev/null && break; sleep 0.2; done
# a local client through the Local destination
$PY -c 'import socket; s=socket.socket(); s.bind(("10.99.0.1",81)); s.listen(5); c=socket.create_connection(("10.99.0.1",81)); a,_=s.accept(); c.send(b"x"); a.recv(1)' || log "local client failed"

A --set 900 120 300
# The kernel refuses sync daemons while mixed-family destinations exist
# (and such destinations while a daemon runs): daemons first, then the mix.
A --start-daemon master --mcast-interface vc0 --syncid 7
A --start-daemon backup --mcast-interface vr0 --syncid 9 --sync-maxlen 1400
ipvsadm -L --daemon >$OUT/daemon.txt
A --stop-daemon master
A --stop-daemon backup
A -a -t [2001:db8:1234:5678:9abc:def0:1234:5678]:65535 -r 10.0.0.40:65535 -i
sleep 3

L() { ipvsadm "$@"; }
# ---- captures ------------------------------------------------------------------
# Counters and connection counts are still while nothing flows (the held
# connections stay ESTABLISHED); rates change at every 2 s estimator tick, so
# they are captured in a separate, short group. Each group is retried until
# the --nosort snapshot taken before equals the one taken after.
snapshot() {
    L -Ln --nosort
    L -Ln --nosort --stats --exact
    L -Ln --nosort --thresholds
    L -Ln --nosort --persistent-conn
    L -Ln --nosort --tun-info
}
# Rates first, while they are non-zero. All four listings run at once so
# that they read the same estimator tick (they change every 2 s and one
# ipvsadm takes about a second under TCG); accepted when the two --nosort
# copies agree and the sorted exact listing has the same lines.
ok=
for try in $(seq 60); do
    pids=()
    L -Ln --nosort --rate --exact >/tmp/rate1 & pids+=($!)
    L -Ln --rate >/tmp/list-rate.txt & pids+=($!)
    L -Ln --rate --exact >/tmp/list-rate-exact.txt & pids+=($!)
    L -Ln --nosort --rate --exact >/tmp/rate2 & pids+=($!)
    wait "${pids[@]}"
    sort /tmp/rate1 >/tmp/rate1.sorted
    sort /tmp/list-rate-exact.txt >/tmp/rate3.sorted
    if cmp -s /tmp/rate1 /tmp/rate2 && cmp -s /tmp/rate1.sorted /tmp/rate3.sorted; then
        ok=1; break
    fi
    log "rates changed during capture (try $try), again"
    if [ "$try" -le 2 ]; then
        diff /tmp/rate1 /tmp/rate2 | head -5 >&2 || true
    fi
done
[ -n "$ok" ] || { log "could not get stable rates"; exit 1; }
ok=
for try in $(seq 30); do
    t0=$(date +%s.%N)
    snapshot >/tmp/snap1
    pids=()
    L -Ln >/tmp/list.txt & pids+=($!)
    L -Ln --stats >/tmp/list-stats.txt & pids+=($!)
    L -Ln --stats --exact >/tmp/list-stats-exact.txt & pids+=($!)
    L -Ln --thresholds >/tmp/list-thresholds.txt & pids+=($!)
    L -Ln --persistent-conn >/tmp/list-persistent-conn.txt & pids+=($!)
    L -Ln --tun-info >/tmp/list-tun-info.txt & pids+=($!)
    wait "${pids[@]}"
    snapshot >/tmp/snap2
    log "table capture try $try took $(echo "$(date +%s.%N) - $t0" | bc)s"
    if cmp -s /tmp/snap1 /tmp/snap2; then ok=1; break; fi
done
[ -n "$ok" ] || { log "could not get a stable table"; exit 1; }
cp /tmp/rate1 $OUT/nosort-rate-exact.txt
cp /tmp/list*.txt $OUT/
# split the snapshot back into its parts (each part starts with the banner)
awk -v out=$OUT 'BEGIN { split("list stats-exact thresholds persistent-conn tun-info", part, " ") }
    /^IP Virtual Server version/ { n++ }
    { print > (out "/nosort-" part[n] ".txt") }' /tmp/snap1
L -S -n >$OUT/save.txt

# ipvsadm -Lnc reads /proc/net/ip_vs_conn, whose expiry columns tick every
# second; to pair its output with the exact text it read, snapshot the file
# once and run ipvsadm in a private mount namespace whose /proc holds only
# that snapshot.
cat /proc/net/ip_vs_conn >$OUT/ip_vs_conn.txt
conn_from_snapshot() {
    unshare -m sh -c 'mount -t tmpfs none /proc && mkdir /proc/net &&
        cp "$0" /proc/net/ip_vs_conn && exec ipvsadm "$@"' \
        $OUT/ip_vs_conn.txt "$@"
}
conn_from_snapshot -Lnc >$OUT/conn.txt
conn_from_snapshot -Lnc --persistent-conn >$OUT/conn-persistent.txt
cat /proc/net/ip_vs_conn_sync >$OUT/ip_vs_conn_sync.txt || true
L -L --timeout >$OUT/timeout.txt
uname -r >$OUT/kernel.txt
ipvsadm --version >>$OUT/kernel.txt 2>&1 || true
log "done"
