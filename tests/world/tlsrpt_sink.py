#!/usr/bin/env python3
"""HTTPS sink for TLS-RPT reports (RFC 8460 section 5.4) in the postern test world.

Every POST is stored as DIR/NNNN.body (the raw request body, e.g. gzip'd JSON) and
DIR/NNNN.json (method, path, headers, size, time), written atomically (the .json file
appears last, so a reader that sees it also sees the body). Answers 200 to any POST,
404 to anything else. Standard library only.
"""
import argparse, http.server, json, os, ssl, threading, time

class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "postern-world-tlsrpt/1"
    protocol_version = "HTTP/1.1"

    def _body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

    def do_POST(self):
        body = self._body()
        srv = self.server
        with srv.lock:
            srv.count += 1
            n = srv.count
        base = os.path.join(srv.dir, "%04d" % n)
        with open(base + ".body.tmp", "wb") as f:
            f.write(body)
        os.rename(base + ".body.tmp", base + ".body")
        meta = {"method": "POST", "path": self.path, "headers": dict(self.headers.items()),
                "contentType": self.headers.get("Content-Type", ""), "size": len(body),
                "time": time.time(), "client": self.client_address[0]}
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f, indent=1)
        os.rename(base + ".json.tmp", base + ".json")
        reply = b"report stored\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, fmt, *args):
        print("%s %s" % (self.client_address[0], fmt % args), flush=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    srv = http.server.ThreadingHTTPServer((a.addr, a.port), Handler)
    srv.dir, srv.lock = a.dir, threading.Lock()
    srv.count = len([x for x in os.listdir(a.dir) if x.endswith(".json")])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening on %s:%d" % (a.addr, a.port), flush=True)
    srv.serve_forever()

if __name__ == "__main__":
    main()
