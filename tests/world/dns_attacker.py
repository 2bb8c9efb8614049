#!/usr/bin/env python3
"""The DNS attackers of the postern test world (Python standard library only).

Two listeners in one process, each UDP and TCP:

* the zone attacker (--zone-addr, `ns-atk.test`): the name server of the `atk-*` zones
  (Unbound has a stub-zone for each, pointing here). It forwards every query to Knot
  (--knot) unchanged, unless the state file (--zone-state) names a mode for the query's
  (NAME, TYPE) or (NAME, *):
    strip-rrsig     forward, then remove every RRSIG record from the answer
    forge           answer from the forged Knot (--forged): the same names with the
                    attacker's data, signed (signed zones) with keys outside the chain of trust
    forge-unsigned  the forged answer with its RRSIGs removed
    drop-dnssec     SERVFAIL for DNSKEY and DS queries of NAME; every other type passes
    servfail        SERVFAIL
    tc-no-tcp       over UDP: an empty answer with TC set; over TCP: the connection is closed
    delay [SECONDS] forward, but answer only after SECONDS (default 10)
* the AD attacker (--ad-addr): a recursive proxy in front of Unbound (--resolver). Its state
  file (--ad-state) has a mode (`pass`, `set-ad`: AD set on every answer, `clear-ad`: AD
  cleared on every answer) and a list of forged (NAME, TYPE): those are answered from the
  forged Knot, with RA and AD set whatever the mode.

State files are re-read whenever they change (checked at each query), so a change takes
effect for the next query. Lines: `NAME|TYPE|MODE[|ARG]` (zone) and `mode|MODE`,
`forge|NAME|TYPE` (ad); TYPE may be `*`. Every query that is not simply passed on is logged
as one line on --log: `<time> dns|ad name=... type=... mode=... proto=udp|tcp action=...`.
"""
import argparse
import os
import socket
import socketserver
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultdns import TYPES, fault_reply, parse_question, recv_exact  # noqa: E402

TYPE_NAMES = {v: k for k, v in TYPES.items()}
RRSIG, DNSKEY, DS = 46, 48, 43
NAME_RDATA = {2, 5, 12, 39}  # NS CNAME PTR DNAME: rdata is one (compressible) name


def read_name(msg, off):
    """Decompress the name at off: (uncompressed wire form, offset after the name)."""
    out, end, jumps = b"", None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        if n == 0:
            out += b"\x00"
            return out, (end if end is not None else off + 1)
        out += msg[off:off + 1 + n]
        off += 1 + n


def parse_rrs(msg, off, count):
    rrs = []
    for _ in range(count):
        name, off = read_name(msg, off)
        rtype, rclass, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rstart, rend = off, off + rdlen
        if rtype in NAME_RDATA:
            rdata, _ = read_name(msg, rstart)
        elif rtype == 15:  # MX
            rdata = msg[rstart:rstart + 2] + read_name(msg, rstart + 2)[0]
        elif rtype == 6:  # SOA
            m, o = read_name(msg, rstart)
            r, o = read_name(msg, o)
            rdata = m + r + msg[o:rend]
        elif rtype == 33:  # SRV
            rdata = msg[rstart:rstart + 6] + read_name(msg, rstart + 6)[0]
        else:  # RRSIG, NSEC, TLSA, ...: no compression inside (RFC 3597, 4034)
            rdata = msg[rstart:rend]
        rrs.append((name, rtype, rclass, ttl, rdata))
        off = rend
    return rrs, off


def strip_rrsigs(msg):
    """The message without RRSIG records in any section, names written uncompressed."""
    qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    question = msg[12:off]
    sections = []
    for count in (an, ns, ar):
        rrs, off = parse_rrs(msg, off, count)
        sections.append([r for r in rrs if r[1] != RRSIG])
    out = msg[0:4] + struct.pack("!HHHH", qd, *(len(s) for s in sections)) + question
    for s in sections:
        for name, rtype, rclass, ttl, rdata in s:
            out += name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata
    return out


def strip_additional(msg):
    """The message without its additional section, but for the OPT record.

    Knot puts the A records of MX targets into the additional section; a
    resolver caches them, and would then answer an attacked A query from
    that cache with the genuine data, past the attacker. An on-path attacker
    rewrites every answer, so this one drops what it cannot rewrite. The
    message is cut at a section boundary: compression pointers in the
    answer and authority sections (which point backwards) stay valid."""
    qd, an, ns, ar = struct.unpack("!HHHH", msg[4:12])
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    _, off = parse_rrs(msg, off, an)
    _, off = parse_rrs(msg, off, ns)
    rrs, _ = parse_rrs(msg, off, ar)
    opts = [r for r in rrs if r[1] == 41]
    out = msg[0:4] + struct.pack("!HHHH", qd, an, ns, len(opts)) + msg[12:off]
    for name, rtype, rclass, ttl, rdata in opts:
        out += name + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata
    return out


def set_flags(msg, on=0, off=0):
    flags = struct.unpack("!H", msg[2:4])[0]
    return msg[0:2] + struct.pack("!H", (flags | on) & ~off & 0xFFFF) + msg[4:]


AD, TC, RA = 0x0020, 0x0200, 0x0080


class StateFile:
    """A small text file, re-parsed when its mtime or size changes."""

    def __init__(self, path):
        self.path, self.key, self.lines, self.lock = path, None, [], threading.Lock()

    def get(self):
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return []
        with self.lock:
            if key != self.key:
                try:
                    with open(self.path) as f:
                        self.lines = [l.strip().split("|") for l in f if l.strip() and not l.startswith("#")]
                except OSError:
                    self.lines = []
                self.key = key
            return self.lines


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


def tname(t):
    return TYPE_NAMES.get(t, str(t))


def ask_udp(server, msg):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(4)
        s.connect(server)
        s.send(msg)
        while True:
            r = s.recv(65535)
            if r[0:2] == msg[0:2]:
                return r


def ask_tcp(server, msg):
    with socket.create_connection(server, timeout=4) as s:
        s.sendall(struct.pack("!H", len(msg)) + msg)
        n = struct.unpack("!H", recv_exact(s, 2))[0]
        return recv_exact(s, n)


def ask(server, msg, proto):
    r = ask_udp(server, msg) if proto == "udp" else ask_tcp(server, msg)
    if proto == "udp" and struct.unpack("!H", r[2:4])[0] & TC:
        r = ask_tcp(server, msg)  # the proxy itself follows TC, its client sees the whole answer
    return r


def udp_fit(query, reply):
    """Truncate a (rewritten) reply that no longer fits the client's UDP size: TC, no records."""
    limit = 512
    q = parse_question(query)
    if q:
        _, _, qend = q
        ar = struct.unpack("!H", query[10:12])[0]
        if ar and qend + 11 <= len(query) and query[qend] == 0 and query[qend + 1:qend + 3] == b"\x00\x29":
            limit = max(512, struct.unpack("!H", query[qend + 3:qend + 5])[0])
    if len(reply) <= limit:
        return reply
    q = parse_question(reply)
    return set_flags(reply[0:4] + struct.pack("!HHHH", 1, 0, 0, 0) + reply[12:q[2]], on=TC)


class ZoneAttacker:
    def __init__(self, knot, forged, state, log):
        self.knot, self.forged, self.state, self.log = knot, forged, state, log

    def mode(self, name, qtype):
        found = None
        for f in self.state.get():
            if len(f) >= 3 and f[0] == name:
                if f[1].upper() == tname(qtype):
                    return f
                if f[1] == "*":
                    found = f
        return found

    def answer(self, msg, proto):
        """The reply bytes, or None to send nothing (and close a TCP connection)."""
        r = self.answer_full(msg, proto)
        return None if r is None else strip_additional(r)

    def answer_full(self, msg, proto):
        q = parse_question(msg)
        if q is None:
            return ask(self.knot, msg, proto)
        name, qtype, qend = q
        m = self.mode(name, qtype)
        if m is None or m[2] == "pass":
            return ask(self.knot, msg, proto)
        mode = m[2]
        what = "name=%s type=%s mode=%s proto=%s" % (name, tname(qtype), mode, proto)
        if mode == "servfail" or (mode == "drop-dnssec" and qtype in (DNSKEY, DS)):
            self.log("dns %s action=servfail" % what)
            return fault_reply(msg, qend, 2)
        if mode == "drop-dnssec":
            return ask(self.knot, msg, proto)
        if mode == "tc-no-tcp":
            if proto == "tcp":
                self.log("dns %s action=tcp-closed" % what)
                return None
            self.log("dns %s action=truncated" % what)
            return set_flags(fault_reply(msg, qend, 0), on=TC | 0x0400)
        if mode == "delay":
            secs = float(m[3]) if len(m) > 3 and m[3] else 10.0
            self.log("dns %s action=delayed seconds=%g" % (what, secs))
            time.sleep(secs)
            return ask(self.knot, msg, proto)
        if mode in ("strip-rrsig", "forge", "forge-unsigned"):
            r = ask(self.forged if mode.startswith("forge") else self.knot, msg, proto)
            if mode != "forge":
                r = strip_rrsigs(r)
            if proto == "udp":
                r = udp_fit(msg, r)
            self.log("dns %s action=%s" % (what, {"forge": "forged", "forge-unsigned": "forged-unsigned",
                                                   "strip-rrsig": "rrsig-stripped"}[mode]))
            return r
        self.log("dns %s action=unknown-mode-passed" % what)
        return ask(self.knot, msg, proto)


class AdAttacker:
    def __init__(self, resolver, forged, state, log):
        self.resolver, self.forged, self.state, self.log = resolver, forged, state, log

    def answer(self, msg, proto):
        q = parse_question(msg)
        lines = self.state.get()
        mode = "pass"
        forged = False
        for f in lines:
            if len(f) >= 2 and f[0] == "mode":
                mode = f[1]
            if q and len(f) >= 3 and f[0] == "forge" and f[1] == q[0] and (f[2] == "*" or f[2].upper() == tname(q[1])):
                forged = True
        what = "name=%s type=%s mode=%s proto=%s" % (q[0] if q else "?", tname(q[1]) if q else "?", mode, proto)
        if forged:
            r = set_flags(ask(self.forged, msg, proto), on=AD | RA)
            self.log("ad %s action=forged-with-ad" % what)
            return r
        r = ask(self.resolver, msg, proto)
        if mode == "set-ad":
            r = set_flags(r, on=AD)
            self.log("ad %s action=ad-set" % what)
        elif mode == "clear-ad":
            r = set_flags(r, off=AD)
            self.log("ad %s action=ad-cleared" % what)
        return r


def serve(addr, port, handler, log, threads):
    class Udp(socketserver.BaseRequestHandler):
        def handle(self):
            msg, sock = self.request
            try:
                r = handler.answer(msg, "udp")
            except Exception as e:  # upstream timeout: no answer, like a dead server
                log("dns-error udp %s: %s" % (addr, e))
                return
            if r is not None:
                sock.sendto(r, self.client_address)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self):
            self.request.settimeout(30)
            try:
                while True:
                    n = struct.unpack("!H", recv_exact(self.request, 2))[0]
                    msg = recv_exact(self.request, n)
                    r = handler.answer(msg, "tcp")
                    if r is None:
                        return
                    self.request.sendall(struct.pack("!H", len(r)) + r)
            except (EOFError, OSError, struct.error, ValueError, IndexError):
                return

    class UdpServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
        daemon_threads = True
        allow_reuse_address = True

    class TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True

    for srv in (UdpServer((addr, port), Udp), TcpServer((addr, port), Tcp)):
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        threads.append(t)


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zone-addr", required=True)
    ap.add_argument("--ad-addr", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--knot", required=True, help="IP:PORT of the genuine authoritative server")
    ap.add_argument("--forged", required=True, help="IP:PORT of the forged authoritative server")
    ap.add_argument("--resolver", required=True, help="IP:PORT of the validating resolver")
    ap.add_argument("--zone-state", required=True)
    ap.add_argument("--ad-state", required=True)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    log = Log(a.log)
    threads = []
    serve(a.zone_addr, a.port, ZoneAttacker(hostport(a.knot), hostport(a.forged), StateFile(a.zone_state), log), log, threads)
    serve(a.ad_addr, a.port, AdAttacker(hostport(a.resolver), hostport(a.forged), StateFile(a.ad_state), log), log, threads)
    log("dns-start zone=%s ad=%s knot=%s forged=%s resolver=%s" % (a.zone_addr, a.ad_addr, a.knot, a.forged, a.resolver))
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
