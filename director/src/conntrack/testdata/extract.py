#!/usr/bin/env python3
"""Turns strace hex dumps of conntrack CLI runs into test data.

  extract.py COMMANDS.TXT DIR   (DIR holds strace.N and out.N per command)

Output format (read by ../tests.rs):
  ## <command line>
  > <hex of one netlink message sent by the CLI>
  < <hex of one netlink message from the kernel>
  = <one line the CLI printed on stdout>
"""
import re
import struct
import sys

DUMP = re.compile(r"^ \| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})")


def datagrams(path):
    """(direction, bytes) per send/recv syscall, from strace's hex dumps."""
    cur = None
    for line in open(path):
        m = DUMP.match(line)
        if m:
            if cur is not None:
                cur[1].extend(bytes.fromhex(m.group(1).replace(" ", "")))
            continue
        if line.startswith(" * "):
            continue
        if cur is not None:
            yield cur[0], bytes(cur[1])
            cur = None
        if line.startswith(("sendto(", "sendmsg(")):
            cur = (">", bytearray())
        elif line.startswith(("recvmsg(", "recvfrom(")):
            cur = ("<", bytearray())
    if cur is not None:
        yield cur[0], bytes(cur[1])


def messages(buf):
    pos = 0
    while pos + 16 <= len(buf):
        ln = struct.unpack("=I", buf[pos:pos + 4])[0]
        if ln < 16 or pos + ln > len(buf):
            break
        yield buf[pos:pos + ln]
        pos += (ln + 3) & ~3


def main():
    commands, d = sys.argv[1:3]
    cmds = [l.rstrip("\n") for l in open(commands) if l.strip() and not l.startswith("#")]
    for i, c in enumerate(cmds):
        print("## " + c)
        for direction, buf in datagrams("%s/strace.%d" % (d, i)):
            for m in messages(buf):
                print(direction + " " + m.hex())
        for line in open("%s/out.%d" % (d, i)).read().splitlines():
            print("= " + line)


if __name__ == "__main__":
    main()
