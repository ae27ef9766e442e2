"""The paper's tree as a reference row for tools/bench-distribution: a binary tree of TCP streams in
which a node starts forwarding to its children once THRESHOLD bytes have arrived (the paper: 50 MB),
then goes on forwarding as the rest arrives.

  paper-tree.py source FILE CHILD...                       send FILE to each child (HOST:PORT) at once
  paper-tree.py node PORT FILE SIZE THRESHOLD DONE CHILD... accept the parent's stream into FILE; touch
                                                           DONE when SIZE bytes are in; forward to each
                                                           child from THRESHOLD on; exit when all are sent
"""
import os, socket, sys, threading, time


def connect(child):
    host, port = child.rsplit(":", 1)
    deadline = time.time() + 30
    while True:
        try:
            conn = socket.create_connection((host, int(port)), timeout=5)
            conn.settimeout(None)
            return conn
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


class Progress:
    def __init__(self):
        self.received = 0
        self.cond = threading.Condition()

    def advance(self, n):
        with self.cond:
            self.received += n
            self.cond.notify_all()

    def wait_beyond(self, offset, at_least=0):
        with self.cond:
            self.cond.wait_for(lambda: self.received > offset and self.received >= at_least)
            return self.received


def forward(path, size, progress, threshold, child):
    conn = connect(child)
    progress.wait_beyond(0, min(threshold, size))
    sent = 0
    with open(path, "rb") as f, conn:
        while sent < size:
            available = progress.wait_beyond(sent)
            sent += conn.sendfile(f, sent, available - sent)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)


def source(path, children):
    size = os.path.getsize(path)
    progress = Progress()
    progress.advance(size)
    threads = [threading.Thread(target=forward, args=(path, size, progress, 0, c)) for c in children]
    for t in threads: t.start()
    for t in threads: t.join()


def node(port, path, size, threshold, done, children):
    size, threshold = int(size), int(threshold)
    progress = Progress()
    with socket.create_server(("0.0.0.0", int(port))) as server:
        threads = [threading.Thread(target=forward, args=(path, size, progress, threshold, c)) for c in children]
        with open(path, "wb") as out:
            out.truncate(0)
            parent, _ = server.accept()
            for t in threads: t.start()
            with parent:
                while chunk := parent.recv(1 << 20):
                    out.write(chunk)
                    out.flush()
                    progress.advance(len(chunk))
        open(done, "w").close()
        for t in threads: t.join()


if __name__ == "__main__":
    if sys.argv[1] == "source":
        source(sys.argv[2], sys.argv[3:])
    else:
        node(*sys.argv[2:7], sys.argv[7:])
