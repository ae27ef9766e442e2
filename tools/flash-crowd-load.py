#!/usr/bin/env python3
"""A flash crowd for tools/bench-flash-crowd: NODES distinct nodes announce `event=started` for one
torrent, spread evenly over SPREAD seconds, one TCP connection each (`Connection: close`), at most
INFLIGHT at once. Each node has its own peer id and its own source address (127.x.y.z: loopback
takes any 127/8 address as a source), so a tracker sees 10,000 hosts, as it would in a data centre.

Prints one RESULT line: answered and failed announces, the crowd's duration, latency p50/p99 (connect
to the answer's end), and how the answers spread the crowd over itself: for each node, how many
answers listed it (max, mean, max/mean, Gini), and the share of all listings that went to the first
1 % of announcers (a tracker that hands its first peers to everyone gives them about half).

The nodes are shared out over WORKERS processes (node i in process i mod WORKERS), because one
Python process cannot open more than about 1,500 connections a second here.

Usage: flash-crowd-load.py HOST PORT INFOHASH_HEX [NODES=10000] [SPREAD=3] [INFLIGHT=800] [NUMWANT=50] [WORKERS=2]
"""
import asyncio, multiprocessing, sys, time, urllib.parse

host, port, infohash = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
nodes = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
spread = float(sys.argv[5]) if len(sys.argv) > 5 else 3.0
inflight = int(sys.argv[6]) if len(sys.argv) > 6 else 800
numwant = int(sys.argv[7]) if len(sys.argv) > 7 else 50
workers = int(sys.argv[8]) if len(sys.argv) > 8 else 2


def address(i):
    """Node i's source address: 250 per /24, from 127.10.0.1 on (40 /24s for 10,000 nodes)."""
    block = i // 250
    return "127.%d.%d.%d" % (10 + block // 256, block % 256, i % 250 + 1)


index_of = {bytes(int(part) for part in address(i).split(".")): i for i in range(nodes)}
quoted_hash = urllib.parse.quote_from_bytes(infohash, safe="")


class Announce(asyncio.Protocol):
    def __init__(self, request, done):
        self.request, self.done, self.data = request, done, bytearray()

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(bytes(self.data))


def peers_of(body):
    """The compact `peers` string of a bencoded answer (a plain scan: enough for both trackers)."""
    at = body.find(b"5:peers")
    if at < 0:
        return None
    at += 7
    colon = body.find(b":", at)
    if colon < 0 or not body[at:colon].isdigit():
        return None
    length = int(body[at:colon])
    return body[colon + 1:colon + 1 + length]


async def node(i, start, gate, results, listed):
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    async with gate:
        path = ("/announce?info_hash=%s&peer_id=-FC0001-%012d&port=6881&uploaded=0&downloaded=0&left=1000"
                "&event=started&compact=1&numwant=%d" % (quoted_hash, i, numwant))
        request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, host, port)).encode()
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        done = loop.create_future()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: Announce(request, done), host, port, local_addr=(address(i), 0)), 10)
            response = await asyncio.wait_for(done, 10)
            transport.close()
        except Exception as error:  # refused, reset, timed out: a failure, counted
            results.append((None, repr(error)))
            return
        elapsed = time.monotonic() - began
        head, _, body = response.partition(b"\r\n\r\n")
        peers = peers_of(body)
        if not head.startswith(b"HTTP/1.1 200") or b"failure reason" in body or peers is None or len(peers) % 6:
            results.append((None, head[:40].decode(errors="replace") + " " + body[:80].decode(errors="replace")))
            return
        for at in range(0, len(peers), 6):
            j = index_of.get(peers[at:at + 4])
            if j is not None:
                listed[j] += 1
        results.append((elapsed, len(peers) // 6))


def gini(values):
    values = sorted(values)
    n, total = len(values), sum(values)
    if total == 0:
        return 0.0
    return sum((2 * (k + 1) - n - 1) * v for k, v in enumerate(values)) / (n * total)


async def crowd(worker, t0):
    gate = asyncio.Semaphore(max(1, inflight // workers))
    results, listed = [], [0] * nodes
    await asyncio.gather(*(node(i, t0 + spread * i / nodes, gate, results, listed) for i in range(worker, nodes, workers)))
    return results, listed, time.monotonic()


def run_worker(worker, t0, queue):
    queue.put(asyncio.run(crowd(worker, t0)))


def main():
    t0 = time.monotonic() + 0.5  # CLOCK_MONOTONIC is shared by the forked workers
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=run_worker, args=(w, t0, queue)) for w in range(workers)]
    for process in processes:
        process.start()
    parts = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    results = [r for part in parts for r in part[0]]
    listed = [sum(part[1][j] for part in parts) for j in range(nodes)]
    duration = max(part[2] for part in parts) - t0
    latencies = sorted(r[0] for r in results if r[0] is not None)
    failures = [r[1] for r in results if r[0] is None]
    for reason in sorted(set(failures))[:5]:
        print("flash-crowd-load: failure: %s (%d)" % (reason, failures.count(reason)), file=sys.stderr)
    pct = lambda p: latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0
    mean = sum(listed) / nodes
    first = max(1, nodes // 100)
    early = sum(listed[:first]) / max(1, sum(listed))
    handed = sum(r[1] for r in results if r[0] is not None) / max(1, len(latencies))
    print("RESULT nodes=%d answered=%d failures=%d duration_s=%.2f rate=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f "
          "peers_per_answer=%.1f max_listed=%d mean_listed=%.1f max_over_mean=%.2f gini=%.3f early_share=%.4f never_listed=%d"
          % (nodes, len(latencies), len(failures), duration, len(latencies) / duration, pct(50), pct(99),
             latencies[-1] * 1000 if latencies else 0, handed, max(listed), mean, max(listed) / mean if mean else 0,
             gini(listed), early, sum(1 for x in listed if x == 0)))


main()
