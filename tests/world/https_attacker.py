#!/usr/bin/env python3
"""The HTTPS attacker of the postern test world, in front of the MTA-STS policy hosts
(Python standard library only).

Listens on ADDR:443. For each connection it peeks at the TLS ClientHello (without consuming
it), takes the SNI host name and reads that host's mode from the state file (`HOST|MODE`
lines; missing = pass):

  pass            TCP relay to the genuine web server (nginx), byte for byte
  redirect        TLS with the genuine certificate; every request is answered
                  `301 Location: https://mta-sts.attacker.test/.well-known/mta-sts.txt`
  wrong-cert      TLS with a world-CA certificate for mta-sts.elsewhere.test; the genuine
                  policy body
  changed-policy  genuine certificate; the policy says `mode: none` (the `_mta-sts` id is
                  unchanged)
  widen-mx        genuine certificate; the genuine policy plus `mx: mx.attacker.test`

`mta-sts.attacker.test` (the redirect target) is always served by the attacker itself:
world-CA certificate, an `enforce` policy naming only `mx.attacker.test`.
Each connection is logged on --log: `<time> https conn=N host=H mode=M event=E ...`
(connect, relay, tls-ok, tls-failed error=..., request path=..., response status=...).
"""
import argparse
import itertools
import os
import socket
import socketserver
import ssl
import struct
import threading
import time

COUNTER = itertools.count(1)
MODES = ("pass", "redirect", "wrong-cert", "changed-policy", "widen-mx")
ATTACKER_HOST = "mta-sts.attacker.test"


class Log:
    def __init__(self, path):
        self.path = path

    def __call__(self, line):
        data = ("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line)).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def read_mode(state, host):
    try:
        with open(state) as f:
            for line in f:
                p = line.strip().split("|")
                if len(p) >= 2 and p[0] == host:
                    return p[1] if p[1] in MODES else "pass"
    except OSError:
        pass
    return "pass"


def peek_sni(sock):
    """The SNI of the ClientHello waiting on sock (not consumed), or None."""
    data = b""
    deadline = time.time() + 5
    while time.time() < deadline:
        data = sock.recv(16384, socket.MSG_PEEK)
        if not data:
            return None
        if len(data) >= 5:
            if data[0] != 22:
                return None
            need = 5 + struct.unpack("!H", data[3:5])[0]
            if len(data) >= need:
                break
        time.sleep(0.01)
    try:
        p = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        p += 1 + data[p]  # session id
        p += 2 + struct.unpack("!H", data[p:p + 2])[0]  # cipher suites
        p += 1 + data[p]  # compression methods
        end = p + 2 + struct.unpack("!H", data[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            et, el = struct.unpack("!HH", data[p:p + 4])
            p += 4
            if et == 0:
                q = p + 2
                while q + 3 <= p + el:
                    nt, nl = data[q], struct.unpack("!H", data[q + 1:q + 3])[0]
                    if nt == 0:
                        return data[q + 3:q + 3 + nl].decode("ascii", "replace").lower()
                    q += 3 + nl
            p += el
    except (IndexError, struct.error):
        return None
    return None


def pump(src, dst):
    try:
        while True:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def policy_lines(body):
    return [l for l in body.replace(b"\r\n", b"\n").split(b"\n") if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--upstream", required=True, help="IP:PORT of nginx")
    ap.add_argument("--state", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--pki", required=True)
    ap.add_argument("--www", required=True, help="nginx content: WWW/<domain label>/.well-known/mta-sts.txt")
    a = ap.parse_args()
    log = Log(a.log)
    uh, up = a.upstream.rsplit(":", 1)
    ctxs, lock = {}, threading.Lock()

    def ctx(chain, key):
        with lock:
            if chain not in ctxs:
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                c.load_cert_chain(chain, key)
                ctxs[chain] = c
            return ctxs[chain]

    def genuine_body(host):
        label = host[len("mta-sts."):-len(".test")] if host.startswith("mta-sts.") and host.endswith(".test") else host
        with open(os.path.join(a.www, label, ".well-known", "mta-sts.txt"), "rb") as f:
            return f.read()

    def respond(host, mode, path):
        if host == ATTACKER_HOST:
            body = b"version: STSv1\r\nmode: enforce\r\nmx: mx.attacker.test\r\nmax_age: 86400\r\n"
            return 200, [], body
        if path != "/.well-known/mta-sts.txt":
            return 404, [], b"not found\n"
        if mode == "redirect":
            return 301, [("Location", "https://%s/.well-known/mta-sts.txt" % ATTACKER_HOST)], b"moved\n"
        if mode == "changed-policy":
            return 200, [], b"version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n"
        body = genuine_body(host)
        if mode == "widen-mx":
            lines = policy_lines(body)
            out = [l for l in lines if not l.startswith(b"max_age")] + [b"mx: mx.attacker.test"] + \
                [l for l in lines if l.startswith(b"max_age")]
            body = b"\r\n".join(out) + b"\r\n"
        return 200, [], body

    class H(socketserver.BaseRequestHandler):
        def handle(self):
            n = next(COUNTER)
            sock = self.request
            sock.settimeout(10)
            try:
                host = peek_sni(sock) or ""
            except OSError:
                return
            mode = "attacker" if host == ATTACKER_HOST else read_mode(a.state, host)
            L = lambda ev, extra="": log("https conn=%d host=%s mode=%s event=%s%s" % (n, host or "-", mode, ev, (" " + extra) if extra else ""))
            L("connect", "client=%s:%d" % self.client_address)
            if mode == "pass":
                try:
                    u = socket.create_connection((uh, int(up)), timeout=10)
                except OSError as e:
                    L("relay-failed", "error=%r" % str(e))
                    return
                L("relay", "upstream=%s" % a.upstream)
                sock.settimeout(None)
                u.settimeout(None)
                t = threading.Thread(target=pump, args=(u, sock), daemon=True)
                t.start()
                pump(sock, u)
                t.join(30)
                u.close()
                return
            p = a.pki
            if mode == "wrong-cert":
                c = ctx(os.path.join(p, "attacker", "mta-sts.elsewhere.test.chain.pem"), os.path.join(p, "attacker", "attacker.key"))
            elif mode == "attacker":
                c = ctx(os.path.join(p, "attacker", "mta-sts.attacker.test.chain.pem"), os.path.join(p, "attacker", "attacker.key"))
            else:
                c = ctx(os.path.join(p, host + ".chain.pem"), os.path.join(p, host + ".key"))
            try:
                t = c.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                L("tls-failed", "error=%r" % str(e))
                return
            L("tls-ok", "version=%s" % t.version())
            try:
                buf = b""
                while b"\r\n\r\n" not in buf and len(buf) < 65536:
                    d = t.recv(65536)
                    if not d:
                        break
                    buf += d
                reqline = buf.split(b"\r\n", 1)[0].decode("latin-1")
                parts = reqline.split()
                path = parts[1] if len(parts) >= 2 else "/"
                L("request", "path=%s" % path)
                status, headers, body = respond(host, mode, path)
                reason = {200: "OK", 301: "Moved Permanently", 404: "Not Found"}[status]
                head = "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n" % (
                    status, reason, len(body))
                head += "".join("%s: %s\r\n" % h for h in headers) + "\r\n"
                t.sendall(head.encode() + body)
                L("response", "status=%d bytes=%d" % (status, len(body)))
            except (OSError, ssl.SSLError, ValueError) as e:
                L("error", "error=%r" % str(e))
            finally:
                try:
                    t.close()
                except OSError:
                    pass

    class Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 64

    srv = Tcp((a.addr, a.port), H)
    log("https-start addr=%s:%d upstream=%s" % (a.addr, a.port, a.upstream))
    srv.serve_forever()


if __name__ == "__main__":
    main()
