#!/usr/bin/env python3
"""BEP 15 announce load for tools/bench-tracker: SOCKETS UDP sockets (each its own client address,
so per-source caps and connection ids are per socket), each with WINDOW announces in flight, for
SECONDS. Peers and torrents as in the HTTP load: 100,000 peer ids over the info-hashes of HASHFILE.
Prints one RESULT line: answered announces per second, refusals (error answers), lost datagrams.

Usage: udp-announce-load.py HOST PORT SECONDS SOCKETS WINDOW HASHFILE
"""
import random, selectors, socket, struct, sys, time

host, port, seconds, sockets, window, hashfile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
hashes = [bytes.fromhex(line.strip()) for line in open(hashfile) if line.strip()]
MAGIC = 0x41727101980


def connect(sock):
    for attempt in range(10):
        tid = random.getrandbits(32)
        sock.send(struct.pack(">QII", MAGIC, 0, tid))
        sock.settimeout(1)
        try:
            while True:
                data = sock.recv(2048)
                if len(data) >= 16 and struct.unpack(">II", data[:8]) == (0, tid):
                    return struct.unpack(">Q", data[8:16])[0]
        except socket.timeout:
            continue
    raise SystemExit("udp-announce-load: no connect answer from %s:%d" % (host, port))


clients = []
selector = selectors.DefaultSelector()
for i in range(sockets):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.connect((host, port))
    cid = connect(sock)
    sock.setblocking(False)
    client = {"sock": sock, "cid": cid, "flight": 0, "last": time.monotonic()}
    clients.append(client)
    selector.register(sock, selectors.EVENT_READ, client)

tid = 0


def send(client):
    global tid
    tid = (tid + 1) & 0xFFFFFFFF
    n = random.randrange(100000)
    packet = struct.pack(">QII", client["cid"], 1, tid) + hashes[n % len(hashes)] + b"-BN0001-%012d" % n + struct.pack(
        ">qqqIIIiH", 0, 0 if n % 4 == 0 else 1000, 0, 0, 0, n, 50, 1024 + n % 60000)
    try:
        client["sock"].send(packet)
        client["flight"] += 1
    except (BlockingIOError, ConnectionRefusedError):
        pass


answered = refused = lost = 0
for client in clients:
    for _ in range(window):
        send(client)
start = time.monotonic()
end = start + seconds
next_check = start + 0.5
while True:
    now = time.monotonic()
    if now >= end:
        break
    for key, _ in selector.select(timeout=0.2):
        client = key.data
        while True:
            try:
                data = key.fileobj.recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                break
            client["flight"] -= 1
            client["last"] = now
            action = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else 99
            if action == 1:
                answered += 1
            else:
                refused += 1
            send(client)
    if now >= next_check:
        next_check = now + 0.5
        for client in clients:  # a datagram lost in a full buffer: refill the window
            if now - client["last"] > 1:  # nothing for a second: what is in flight is lost
                lost += max(0, client["flight"])
                client["flight"] = 0
                client["last"] = now
                for _ in range(window):
                    send(client)
elapsed = time.monotonic() - start
print("RESULT refused=%d rps=%.1f requests=%d lost=%d" % (refused, answered / elapsed, answered + refused, lost))
