#!/usr/bin/python3
"""A seeder under attack by real processes (issue 15), for AttackTests and tools/bench-attack.

  seed-attack.py attack INFO_HASH PIECES PIECE_LENGTH PORT READERS IDLE
      READERS peers from 127.0.0.10 on (8 per address) handshake with the fast extension, send
      have-none, interested and then 30 random requests every 0.2 s up to 450, and never read (a
      4 KiB receive buffer); IDLE connections from 127.0.0.100 on (16 per address) never send a
      byte, and each one the seeder closes is opened again a second later. Runs until killed; prints
      "attacking" once every connection is made, then a line of counts every second.
  seed-attack.py honest TORRENT FOLDER ADDRESS PORT SEEDER_ADDRESS SEEDER_PORT
      libtorrent (python3-libtorrent; TCP only, no encryption, no DHT/LSD/UPnP) downloads from the
      one peer SEEDER and prints "done in S s after the connection (T s from the start), the first
      piece F s after it": libtorrent waits a few seconds before its first connection, the same with
      or without an attack, so the transfer is timed from the connection. Gives up after 60 s. Every 0.5 s it prints
      "progress T BYTES PEERS" (seconds since the connection, bytes verified, peers), which shows
      whether an attack delays the start (an unchoke) or slows the whole transfer.
"""
import random, select, socket, struct, sys, time


def attack(info_hash, pieces, piece_length, port, readers, idle):
    ih = bytes.fromhex(info_hash)

    def handshake(i):
        return bytes([19]) + b"BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0, 0, 4]) + ih + ("-AT0000-%012d" % i).encode()

    conns = []
    for i in range(readers):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.%d" % (10 + i // 8), 0))
        s.settimeout(1)
        s.connect(("127.0.0.1", port))
        s.sendall(handshake(i) + struct.pack(">IB", 1, 0x0f) + struct.pack(">IB", 1, 2))
        conns.append(s)

    def dial(i):
        s = socket.socket()
        s.bind(("127.0.0.%d" % (100 + i // 16), 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        return s

    idles = [dial(i) for i in range(idle)]
    print("attacking", flush=True)
    rng = random.Random(1)
    sent = [0] * readers
    blocks = piece_length // 16384
    reopened = 0
    last = time.time()
    while True:
        for i, s in enumerate(conns):
            if s is None or sent[i] >= 450:
                continue
            batch = b"".join(struct.pack(">IBIII", 13, 6, rng.randrange(pieces), rng.randrange(blocks) * 16384, 16384) for _ in range(30))
            try:
                s.sendall(batch)
                sent[i] += 30
            except OSError:
                conns[i] = None
        if time.time() - last >= 1:
            last = time.time()
            readable, _, _ = select.select(idles, [], [], 0)
            for s in readable:
                try:
                    gone = s.recv(1) == b""
                except OSError:
                    gone = True
                if gone:
                    i = idles.index(s)
                    s.close()
                    idles[i] = dial(i)
                    reopened += 1
            print("readers open %d, idle reopened %d" % (sum(1 for c in conns if c is not None), reopened), flush=True)
        time.sleep(0.2)


def honest(torrent, folder, address, port, seeder, seeder_port):
    import libtorrent as lt
    s = lt.session({"listen_interfaces": "%s:%s" % (address, port), "enable_dht": False, "enable_lsd": False,
                    "enable_upnp": False, "enable_natpmp": False, "allow_multiple_connections_per_ip": True,
                    "enable_outgoing_utp": False, "enable_incoming_utp": False,
                    "out_enc_policy": 2, "in_enc_policy": 2})
    h = s.add_torrent({"ti": lt.torrent_info(torrent), "save_path": folder})
    t0 = time.time()
    connected = first = None
    shown = 0.0
    h.connect_peer((seeder, int(seeder_port)))
    while time.time() - t0 < 60:
        st = h.status()
        now = time.time()
        if connected is None and st.num_peers > 0:
            connected = now
        if first is None and st.total_wanted_done > 0:
            first = now
        if connected is not None and now - connected >= shown:
            print("progress %.2f %d %d" % (now - connected, st.total_wanted_done, st.num_peers), flush=True)
            shown += 0.5
        if st.is_seeding:
            print("done in %.3f s after the connection (%.3f s from the start), the first piece %.3f s after it"
                  % (now - (connected or t0), now - t0, (first or now) - (connected or t0)), flush=True)
            return
        time.sleep(0.02)
    print("not done after 60 s", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "attack":
        attack(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]))
    elif len(sys.argv) == 8 and sys.argv[1] == "honest":
        honest(*sys.argv[2:8])
    else:
        sys.exit(__doc__)
