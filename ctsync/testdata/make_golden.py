#!/usr/bin/env python3
"""Golden frames of the ctsync wire protocol, one file per message type.

Written from the layouts documented in ctsync/src/wire/{frame,message,record,
crypto}.rs with nothing but the Python standard library (struct, hmac,
hashlib): a second, independent implementation of the encoding, the key
derivation (HKDF-SHA256, RFC 5869) and the MAC (HMAC-SHA-256-128). The Rust
test tests/golden.rs decodes every file to the message it expects and
re-encodes that message to the same bytes.

Format: hex, one field per line; '#' starts a comment (to the end of the
line). Regenerate with: python3 ctsync/testdata/make_golden.py
"""

import hashlib
import hmac
import ipaddress
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# The key file content (trimmed) and the two nonces of the golden session:
# frames go from the node with NONCE_TX to the node with NONCE_RX.
KEY_FILE = b"ctsync golden test key, not a secret\n"
NONCE_TX = bytes(range(0x01, 0x11))
NONCE_RX = bytes(range(0xA0, 0xB0))


def hkdf_extract(salt, ikm):
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def hkdf_expand32(prk, info):
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


PRK = hkdf_extract(b"director-ctsync-v1", KEY_FILE.strip())
HELLO_KEY = hkdf_expand32(PRK, b"hello")
FRAME_KEY = hkdf_expand32(PRK, b"frames" + NONCE_TX + NONCE_RX)

TYPES = {
    "hello": 1,
    "heartbeat": 2,
    "ack": 3,
    "upsert": 4,
    "delete": 5,
    "bulk_start": 6,
    "bulk_end": 7,
    "digest_request": 8,
    "digest": 9,
    "resync_request": 10,
    "role": 11,
    "goodbye": 12,
}


class Fields:
    """Bytes with a comment per field."""

    def __init__(self):
        self.parts = []

    def add(self, data, comment):
        self.parts.append((bytes(data), comment))
        return self

    def extend(self, other):
        self.parts.extend(other.parts)
        return self

    def bytes(self):
        return b"".join(p for p, _ in self.parts)


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def addr(a):
    return ipaddress.ip_address(a).packed


def l4(kind, *v):
    if kind == "none":
        return 0, b"\0\0\0\0", "L4 none"
    if kind == "ports":
        return 1, u16(v[0]) + u16(v[1]), f"L4 ports {v[0]} -> {v[1]}"
    if kind == "icmp":
        return 2, u16(v[0]) + u8(v[1]) + u8(v[2]), f"L4 ICMP id {v[0]} type {v[1]} code {v[2]}"
    raise ValueError(kind)


def entry(family, proto, orig, reply, status, timeout, mark, zone, tcp=None):
    """orig / reply: (src, dst, l4 tuple from l4())."""
    f = Fields()
    ko, lo, co = orig[2]
    kr, lr, cr = reply[2]
    f.add(u8(family) + u8(proto) + u8((ko << 4) | kr) + u8(1 if tcp else 0),
          f"family {family}, proto {proto}, L4 kinds {ko}/{kr}, flags{' TCP' if tcp else ''}")
    f.add(u16(zone) + u16(0), f"zone {zone}, reserved")
    f.add(u32(status), f"status {status:#x}")
    f.add(u32(timeout), f"timeout {timeout} s")
    f.add(u32(mark), f"mark {mark}")
    f.add(addr(orig[0]) + addr(orig[1]), f"original {orig[0]} -> {orig[1]}")
    f.add(lo, "original " + co)
    f.add(addr(reply[0]) + addr(reply[1]), f"reply {reply[0]} -> {reply[1]}")
    f.add(lr, "reply " + cr)
    if tcp:
        state, wso, wsr, flo, flr = tcp
        f.add(bytes([state, wso, wsr, flo, flr, 0, 0, 0]),
              f"TCP state {state}, wscale {wso}/{wsr}, flags {flo:#x}/{flr:#x}, reserved")
    return f


def key(family, proto, zone, orig):
    f = Fields()
    ko, lo, co = orig[2]
    f.add(u8(family) + u8(proto) + u8(ko << 4) + u8(0), f"family {family}, proto {proto}, L4 kind {ko}")
    f.add(u16(zone) + u16(0), f"zone {zone}, reserved")
    f.add(addr(orig[0]) + addr(orig[1]), f"original {orig[0]} -> {orig[1]}")
    f.add(lo, "original " + co)
    return f


def scope(buckets):
    b = bytearray(32)
    for i in buckets:
        b[i // 8] |= 1 << (i % 8)
    return bytes(b)


def frame(name, kind, seq, payload, title):
    mac_key = HELLO_KEY if kind == TYPES["hello"] else FRAME_KEY
    body = payload.bytes()
    header = Fields()
    header.add(b"CT" + u8(1) + u8(kind), f"magic 'CT', version 1, type {kind} ({name.split('.')[0]})")
    header.add(u32(len(body)), f"payload length {len(body)}")
    header.add(u64(seq), f"sequence number {seq}")
    signed = header.bytes() + body
    tag = hmac.new(mac_key, signed, hashlib.sha256).digest()[:16]
    key_name = "Hello key" if kind == TYPES["hello"] else "frame key (tx nonce -> rx nonce)"
    lines = [
        f"# {title}",
        "# produced by ctsync/testdata/make_golden.py (Python stdlib HMAC/HKDF,",
        "# independent of the Rust encoder); '#' starts a comment",
    ]
    for data, comment in header.parts + payload.parts:
        lines.append(f"{data.hex():<40} # {comment}" if data else f"# (empty) {comment}")
    lines.append(f"{tag.hex():<40} # MAC: HMAC-SHA256, {key_name}, first 16 bytes")
    with open(os.path.join(HERE, name), "w") as fh:
        fh.write("\n".join(lines) + "\n")


V4_TCP = entry(
    4, 6,
    ("198.51.100.7", "192.0.2.100", l4("ports", 40000, 80)),
    ("10.0.1.11", "198.51.100.7", l4("ports", 8080, 40000)),
    status=0x2E, timeout=431999, mark=7, zone=3,
    tcp=(3, 7, 9, 0x23, 0x33),
)
V6_UDP = entry(
    6, 17,
    ("2001:db8::7", "2001:db8:100::1", l4("ports", 5353, 53)),
    ("2001:db8:1::11", "2001:db8::7", l4("ports", 53, 5353)),
    status=0x0A, timeout=120, mark=0, zone=0,
)
V6_ICMP = entry(
    6, 58,
    ("2001:db8::7", "2001:db8:100::1", l4("icmp", 77, 128, 0)),
    ("2001:db8:100::1", "2001:db8::7", l4("icmp", 77, 129, 0)),
    status=0x08, timeout=30, mark=0xFFFFFFFF, zone=65535,
)


def main():
    hello = Fields()
    hello.add(u8(1) + u16(0) + u8(5), "role 1 (master), reserved, node id length 5")
    hello.add(u32(1 << 20), "max payload 1048576")
    hello.add(NONCE_TX, "nonce")
    hello.add(b"lb-01", "node id 'lb-01'")
    frame("hello.hex", 1, 0, hello, "Hello from lb-01 (master), MAC under the Hello key")

    frame("heartbeat.hex", 2, 1, Fields(), "Heartbeat (the key confirmation when first)")

    frame("ack.hex", 3, 2, Fields().add(u64(41), "cumulative ack 41"), "Ack")

    up = Fields().add(u32(1), "count 1")
    up.extend(V4_TCP)
    frame("upsert_ipv4_tcp.hex", 4, 3, up, "Upsert: one IPv4 TCP DNAT entry with protoinfo (52 bytes)")

    up = Fields().add(u32(2), "count 2")
    up.extend(V6_UDP).extend(V6_ICMP)
    frame("upsert_ipv6.hex", 4, 4, up, "Upsert: an IPv6 UDP and an ICMPv6 entry (92 bytes each)")

    dl = Fields().add(u32(2), "count 2")
    dl.extend(key(4, 6, 3, ("198.51.100.7", "192.0.2.100", l4("ports", 40000, 80))))
    dl.extend(key(6, 58, 65535, ("2001:db8::7", "2001:db8:100::1", l4("icmp", 77, 128, 0))))
    frame("delete.hex", 5, 5, dl, "Delete: an IPv4 key (20 bytes) and an IPv6 key (44 bytes)")

    bs = Fields().add(u32(7), "generation 7").add(scope(range(256)), "scope: all 256 buckets")
    frame("bulk_start.hex", 6, 6, bs, "BulkStart of a full resync")

    bs = Fields().add(u32(8), "generation 8").add(scope([0, 9, 255]), "scope: buckets 0, 9, 255")
    frame("bulk_start_partial.hex", 6, 7, bs, "BulkStart of a partial resync")

    be = Fields().add(u32(7), "generation 7").add(u32(1000), "entries sent 1000")
    be.add(u64(0x0123456789ABCDEF), "digest fold")
    frame("bulk_end.hex", 7, 8, be, "BulkEnd")

    frame("digest_request.hex", 8, 9, Fields().add(u32(3), "id 3"), "DigestRequest")

    dg = Fields().add(u32(3), "id 3").add(u16(256) + u16(0), "256 buckets, reserved")
    for i in range(256):
        dg.add(u32(i) + u64(i * 0x0101010101010101), f"bucket {i}: count {i}, sum")
    frame("digest.hex", 9, 10, dg, "Digest: bucket i holds i entries, sum i * 0x0101010101010101")

    rr = Fields().add(u8(1) + b"\0\0\0", "reason 1 (digest mismatch), reserved")
    rr.add(scope([17, 200]), "scope: buckets 17, 200")
    frame("resync_request.hex", 10, 11, rr, "ResyncRequest")

    frame("role.hex", 11, 12, Fields().add(u8(1) + u8(1) + b"\0\0", "role 1 (master), flags: confirm, reserved"),
          "Role of a new master, asking the peer to confirm once drained")

    frame("goodbye.hex", 12, 13, Fields().add(u8(1) + b"\0\0\0", "reason 1 (shutdown), reserved"), "Goodbye")


if __name__ == "__main__":
    main()
