#!/usr/bin/env python3
"""Cuts an nlmon pcap of ipvsadm runs into per-command netlink messages.

  extract.py --mark N            send the marker request for command N
  extract.py PCAP COMMANDS.TXT   print the test-data text to stdout

Output format (read by ../tests.rs):
  ## <command line>
  > <hex of one netlink message sent by ipvsadm (NLM_F_REQUEST set)>
  < <hex of one netlink message from the kernel>
Only the IPVS family's messages (and their NLMSG_ERROR / NLMSG_DONE
replies) are kept; the generic netlink controller traffic (family lookups)
and everything else on the VM's netlink is dropped.
"""
import socket
import struct
import sys

NETLINK_GENERIC = 16
GENL_ID_CTRL = 16
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_NAME = 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST = 1
MARK = b"MARK"


def send_mark(tag):
    name = MARK + tag.encode() + b"\0"
    attr = struct.pack("=HH", 4 + len(name), CTRL_ATTR_FAMILY_NAME) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + attr
    msg = struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, NLM_F_REQUEST | 4, 1, 0) + body
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    s.bind((0, 0))
    s.send(msg)
    s.recv(65536)
    s.close()


def packets(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        e = ">"
    else:
        raise SystemExit("not a classic pcap file (pcapng is not supported)")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    # DLT_NETLINK (253) as libpcap writes it for an nlmon device: a 16-byte
    # cooked header like DLT_LINUX_SLL (pkttype, ARPHRD_NETLINK = 0x0338,
    # address length and 8 address bytes, then the netlink protocol as a
    # big-endian u16), then the skb's netlink messages.
    if linktype not in (253, 113):
        raise SystemExit(f"unexpected link type {linktype}")
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        if len(pkt) >= 16 and struct.unpack(">H", pkt[14:16])[0] == NETLINK_GENERIC:
            yield pkt[16:]


def messages(pkt):
    off = 0
    while off + 16 <= len(pkt):
        ln, typ, flags, seq, pid = struct.unpack("=IHHII", pkt[off:off + 16])
        if ln < 16 or off + ln > len(pkt):
            break
        yield typ, flags, seq, pkt[off:off + ln]
        off += (ln + 3) & ~3


def ctrl_name(msg):
    # genl header (4) then attributes
    a = 20
    while a + 4 <= len(msg):
        ln, typ = struct.unpack("=HH", msg[a:a + 4])
        if ln < 4:
            break
        if typ & 0x3FFF == CTRL_ATTR_FAMILY_NAME:
            return msg[a + 4:a + ln].rstrip(b"\0")
        a += (ln + 3) & ~3
    return None


def extract(pcap, commands):
    cmds = [l.strip() for l in open(commands) if l.strip() and not l.startswith("#")]
    sections = {}  # index -> list of lines
    cur = None
    ipvs_family = None
    ipvs_seqs = set()  # (seq) of requests to the IPVS family in this section
    for pkt in packets(pcap):
        for typ, flags, seq, msg in messages(pkt):
            if typ == GENL_ID_CTRL:
                if flags & NLM_F_REQUEST:
                    name = ctrl_name(msg)
                    if name and name.startswith(MARK):
                        tag = name[len(MARK):].decode()
                        cur = None if tag == "end" else int(tag)
                        ipvs_seqs = set()
                elif ipvs_family is None and ctrl_name(msg) == b"IPVS":
                    # CTRL_ATTR_FAMILY_ID is attribute 1, a u16
                    a = 20
                    while a + 4 <= len(msg):
                        ln, t = struct.unpack("=HH", msg[a:a + 4])
                        if t == 1:
                            ipvs_family = struct.unpack("=H", msg[a + 4:a + 6])[0]
                        a += (ln + 3) & ~3
                continue
            if cur is None or ipvs_family is None:
                continue
            if typ == ipvs_family and flags & NLM_F_REQUEST:
                ipvs_seqs.add(seq)
                sections.setdefault(cur, []).append("> " + msg.hex())
            elif typ == ipvs_family or (typ in (NLMSG_ERROR, NLMSG_DONE) and seq in ipvs_seqs):
                sections.setdefault(cur, []).append("< " + msg.hex())
    out = []
    for i, c in enumerate(cmds):
        out.append("## " + c)
        out.extend(sections.get(i, []))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--mark":
        send_mark(sys.argv[2])
    elif len(sys.argv) == 3:
        sys.stdout.write(extract(sys.argv[1], sys.argv[2]))
    else:
        raise SystemExit(__doc__)
