#!/usr/bin/env python3
"""A DNS fault proxy for the postern test world (Python standard library only).

Listens on ADDR:PORT (UDP and TCP) and forwards every query unchanged to the upstream
server (Knot), returning its reply unchanged -- except for queries whose question is
one of the --fault NAME/TYPE pairs: those are answered at once with --rcode (SERVFAIL or
REFUSED) and no data. With `--fault mx-indeterminate.test/DNSKEY`, the zone's MX and
every other record are served as usual, but its keys cannot be fetched, so a validator
can neither prove nor disprove the data: DNSSEC *indeterminate*, not bogus.

The fault answer echoes the question and, when the query had EDNS, an OPT record (with the
DO bit copied), so the resolver does not conclude that the server lacks EDNS.
Each faulted query is logged as one line on stderr.

Usage: faultdns.py --addr 127.0.1.4 --port 53 --upstream 127.0.1.1:53 \
           --fault mx-indeterminate.test/DNSKEY [--fault ...] [--rcode servfail|refused]
"""
import argparse
import socket
import socketserver
import struct
import sys
import threading
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28,
         "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "TLSA": 52}
RCODES = {"servfail": 2, "refused": 5}


def parse_question(msg):
    """(qname lower-case without the final dot, qtype, end offset of the question) or None."""
    if len(msg) < 12 or struct.unpack("!H", msg[4:6])[0] != 1:
        return None
    i, labels = 12, []
    while True:
        if i >= len(msg):
            return None
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:  # no compression in a question
            return None
        labels.append(msg[i + 1:i + 1 + n].decode("ascii", "replace").lower())
        i += 1 + n
    if i + 4 > len(msg):
        return None
    qtype = struct.unpack("!H", msg[i:i + 2])[0]
    return ".".join(labels), qtype, i + 4


def query_opt(msg, qend):
    """The DO bit of the query's OPT record (the first additional record): None without EDNS."""
    ns, ar = struct.unpack("!HH", msg[8:12])
    i = qend
    if ns != 0 or ar == 0 or i + 11 > len(msg):
        return None
    if msg[i] != 0 or struct.unpack("!H", msg[i + 1:i + 3])[0] != 41:
        return None
    return bool(struct.unpack("!I", msg[i + 5:i + 9])[0] & 0x8000)


def fault_reply(msg, qend, rcode):
    qid, flags = struct.unpack("!HH", msg[0:4])
    rd = flags & 0x0100
    opcode = flags & 0x7800
    do = query_opt(msg, qend)
    out = struct.pack("!HHHHHH", qid, 0x8000 | opcode | rd | rcode, 1, 0, 0, 0 if do is None else 1)
    out += msg[12:qend]
    if do is not None:
        out += b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000 if do else 0, 0)
    return out


class Proxy:
    def __init__(self, upstream, faults, rcode, log):
        self.upstream = upstream
        self.faults = faults
        self.rcode = rcode
        self.log = log
        self.lock = threading.Lock()

    def fault(self, msg):
        q = parse_question(msg)
        if q is None:
            return None
        name, qtype, qend = q
        if (name, qtype) in self.faults:
            with self.lock:
                self.log.write("%.3f fault %s %s -> rcode %d\n" % (time.time(), name, qtype, self.rcode))
                self.log.flush()
            return fault_reply(msg, qend, self.rcode)
        return None

    def forward_udp(self, msg):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.connect(self.upstream)
            s.send(msg)
            qid = msg[0:2]
            while True:
                r = s.recv(65535)
                if r[0:2] == qid:
                    return r

    def forward_tcp(self, msg):
        with socket.create_connection(self.upstream, timeout=3) as s:
            s.sendall(struct.pack("!H", len(msg)) + msg)
            n = struct.unpack("!H", recv_exact(s, 2))[0]
            return recv_exact(s, n)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--upstream", required=True, help="IP:PORT")
    ap.add_argument("--fault", action="append", default=[], help="NAME/TYPE, e.g. example.test/DNSKEY")
    ap.add_argument("--rcode", choices=sorted(RCODES), default="servfail")
    a = ap.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    faults = set()
    for f in a.fault:
        name, t = f.rsplit("/", 1)
        faults.add((name.lower().rstrip("."), TYPES[t.upper()] if not t.isdigit() else int(t)))
    proxy = Proxy((host, int(port)), faults, RCODES[a.rcode], sys.stderr)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self):
            msg, sock = self.request
            try:
                r = proxy.fault(msg) or proxy.forward_udp(msg)
            except Exception as e:  # upstream timeout: no answer, like a dead server
                sys.stderr.write("udp forward failed: %s\n" % e)
                return
            sock.sendto(r, self.client_address)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(10)
            try:
                while True:
                    n = struct.unpack("!H", recv_exact(self.request, 2))[0]
                    msg = recv_exact(self.request, n)
                    r = proxy.fault(msg) or proxy.forward_tcp(msg)
                    self.request.sendall(struct.pack("!H", len(r)) + r)
            except (EOFError, OSError, struct.error):
                return

    class UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
        daemon_threads = True
        allow_reuse_address = True

    class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    udp = UdpServer((a.addr, a.port), Udp)
    tcp = TcpServer((a.addr, a.port), Tcp)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    sys.stderr.write("faultdns on %s:%d -> %s, faults %s, rcode %s\n"
                     % (a.addr, a.port, a.upstream, sorted(a.fault), a.rcode))
    sys.stderr.flush()
    tcp.serve_forever()


if __name__ == "__main__":
    main()
