#!/usr/bin/env python3
"""A tiny HTTP server with byte ranges, for web-seed (BEP 19) tests: serves the files under ROOT
at /PATH (percent-decoded), answers `Range: bytes=FIRST-LAST` with 206 and Content-Range, and
can misbehave on purpose. python3 -m http.server does not do Range, hence this.

Usage: webseed-server.py ROOT HOST PORT [MODE [CERT KEY]]   (PORT 0: any free port; the port is
printed as "listening PORT" on the first line). Every request is logged to stdout as
"GET PATH RANGE". With CERT and KEY (PEM files) it serves HTTPS.

MODE, for hostile tests:
  ok            (default) as above
  corrupt       206 with the right headers and length, but every byte flipped
  ignore-range  200 with the whole file, whatever the Range says
  short         206 and Content-Range as asked, but a body (and Content-Length) one byte short
  status-503    503 to everything
"""
import os, re, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

root, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "ok"
tls = sys.argv[5:7] if len(sys.argv) > 6 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range", "")
        print("GET %s %s" % (self.path, rng), flush=True)
        if mode == "status-503":
            return self.reply(503, b"busy\n")
        path = os.path.realpath(os.path.join(root, urllib.parse.unquote(self.path.split("?")[0]).lstrip("/")))
        if not path.startswith(os.path.realpath(root)) or not os.path.isfile(path):
            return self.reply(404, b"not found\n")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
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
