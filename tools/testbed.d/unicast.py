"""Unicast baseline for tools/bench-distribution: one TCP stream per receiver, one receiver after another.

  unicast.py recv PORT FILE          accept one connection, write what arrives to FILE, exit 0
  unicast.py send FILE HOST:PORT...  send FILE to each receiver in turn; the next one starts when the
                                     previous receiver has written everything and closed
"""
import os, socket, sys, time


def recv(port, path):
    with socket.create_server(("0.0.0.0", int(port))) as server:
        conn, _ = server.accept()
    with conn, open(path, "wb") as out:
        while chunk := conn.recv(1 << 20):
            out.write(chunk)


def send(path, receivers):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for receiver in receivers:
            host, port = receiver.rsplit(":", 1)
            deadline = time.time() + 30
            while True:
                try:
                    conn = socket.create_connection((host, int(port)), timeout=5)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
            with conn:
                conn.settimeout(None)
                conn.sendfile(f, 0, size)
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # EOF once the receiver has closed its file


if __name__ == "__main__":
    {"recv": recv, "send": lambda path, *rest: send(path, rest)}[sys.argv[1]](*sys.argv[2:])
