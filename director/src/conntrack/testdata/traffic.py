#!/usr/bin/env python3
"""Real traffic for capture.sh: turns on conntrack accounting, makes the
netns track (an nft rule that matches on ct state), and leaves one TCP
connection over loopback ESTABLISHED (the process sleeps while the dump
that follows runs) plus one that closed (TIME_WAIT)."""
import os
import socket
import subprocess
import sys
import time

open("/proc/sys/net/netfilter/nf_conntrack_acct", "w").write("1")
subprocess.run(["nft", "-f", "-"], check=True, input=b"""
table inet dct {
  chain out {
    type filter hook output priority 0; policy accept;
    ct state established counter
  }
}
""")
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8080))
srv.listen()
closed = socket.create_connection(("127.0.0.1", 8080))
a, _ = srv.accept()
closed.sendall(b"hello")
a.recv(5)
closed.close()
a.close()
kept = socket.create_connection(("127.0.0.1", 8080))
b, _ = srv.accept()
kept.sendall(b"x" * 1000)
b.recv(1000)
if os.fork() == 0:
    time.sleep(5)
    sys.exit(0)
