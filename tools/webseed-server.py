#!/usr/bin/env python3
"""A tiny HTTP server with byte ranges, for web-seed (BEP 19) tests: serves the files under ROOT
at /PATH (percent-decoded), answers `Range: bytes=FIRST-LAST` with 206 and Content-Range (several
ranges, as zsync asks, with multipart/byteranges), and can misbehave on purpose. python3 -m http.server does not do Range, hence this.

Usage: webseed-server.py ROOT HOST PORT [MODE [CERT KEY]]   (PORT 0: any free port; the port is
printed as "listening PORT" on the first line). Every request is logged to stdout as
"GET PATH RANGE". With CERT and KEY (PEM files) it serves HTTPS.

MODE, for hostile tests:
  ok            (default) as above
  corrupt       206 with the right headers and length, but every byte flipped
  ignore-range  200 with the whole file, whatever the Range says
  short         206 and Content-Range as asked, but a body (and Content-Length) one byte short
  status-503    503 to everything

Redirects, in any mode: /moved/PATH answers 307 with an absolute Location, PATH with a query
added (what an object store's signed URL looks like); /hop/N/PATH answers 302 to /hop/N-1/PATH
(a path-absolute Location) until N is 0, which serves PATH.
"""
import os, re, sys, threading, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

root, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "ok"
tls = sys.argv[5:7] if len(sys.argv) > 6 else None


log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range", "")
        # One write per line under a lock: the server's threads must not interleave their lines.
        with log_lock:
            sys.stdout.write("GET %s %s\n" % (self.path, rng))
            sys.stdout.flush()
        if mode == "status-503":
            return self.reply(503, b"busy\n")
        if self.path.startswith("/moved/"):
            location = "%s://%s%s?signature=0123abcd" % ("https" if tls else "http", self.headers.get("Host"), self.path[6:].split("?")[0])
            return self.reply(307, b"moved\n", {"Location": location})
        hop = re.fullmatch(r"/hop/(\d+)(/.*)", self.path)
        if hop and int(hop.group(1)) > 0:
            return self.reply(302, b"", {"Location": "/hop/%d%s" % (int(hop.group(1)) - 1, hop.group(2))})
        if hop:
            self.path = hop.group(2)
        path = os.path.realpath(os.path.join(root, urllib.parse.unquote(self.path.split("?")[0]).lstrip("/")))
        if not path.startswith(os.path.realpath(root)) or not os.path.isfile(path):
            return self.reply(404, b"not found\n")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            several = re.fullmatch(r"bytes=(\d+-\d+(?:,\s*\d+-\d+)+)", rng)
            if several and mode == "ok":
                return self.multipart(f, size, [tuple(map(int, part.strip().split("-"))) for part in several.group(1).split(",")])
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            if mode == "ignore-range" or not m:
                return self.reply(200, f.read())
            first = int(m.group(1))
            last = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if first > last:
                return self.reply(416, b"", {"Content-Range": "bytes */%d" % size})
            f.seek(first)
            body = f.read(last - first + 1)
        headers = {"Content-Range": "bytes %d-%d/%d" % (first, last, size)}
        if mode == "corrupt":
            body = bytes(b ^ 0xFF for b in body)
        if mode == "short":
            body = body[:-1]
        self.reply(206, body, headers)

    def multipart(self, f, size, ranges):
        """Several ranges in one request (zsync asks so): a multipart/byteranges answer."""
        boundary = "vmswarm-byteranges"
        body = b""
        for first, last in ranges:
            last = min(last, size - 1)
            if first > last:
                return self.reply(416, b"", {"Content-Range": "bytes */%d" % size})
            f.seek(first)
            body += b"\r\n--%s\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (
                boundary.encode(), first, last, size) + f.read(last - first + 1)
        body += b"\r\n--%s--\r\n" % boundary.encode()
        self.reply(206, body, {"Content-Type": "multipart/byteranges; boundary=" + boundary})

    def reply(self, status, body, headers={}):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


server = ThreadingHTTPServer((host, port), Handler)
if tls:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls[0], tls[1])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("listening %d" % server.server_address[1], flush=True)
server.serve_forever()
