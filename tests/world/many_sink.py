#!/usr/bin/env python3
"""Counting STARTTLS sink for the world's extra destination domains (WORLD_EXTRA_DOMAINS).

One asyncio process listens on every extra MX address, offers STARTTLS with one certificate
(world CA, naming every extra MX host), takes every message and queues nothing. Per accepted
recipient it appends one line to --log:

    <unix time> ip=<address connected to> tls=<TLSv1.x|no> rcpt=<address> id=<X-Bench-Id or ->

so that a benchmark can check that every message arrived, over TLS where its domain demands it,
and when. Python standard library only.
"""
import argparse
import asyncio
import re
import ssl
import time

BENCH_ID = re.compile(rb"^X-Bench-Id:\s*(\S+)", re.I | re.M)


class Sink:
    def __init__(self, ctx, log):
        self.ctx, self.log = ctx, log

    async def session(self, reader, writer):
        ip = writer.get_extra_info("sockname")[0]
        tls = "no"
        try:
            writer.write(b"220 sink.many.test ESMTP\r\n")
            mail, rcpts = None, []
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith((b"EHLO", b"HELO")):
                    ext = b"250-PIPELINING\r\n250-8BITMIME\r\n" + (b"250 STARTTLS\r\n" if tls == "no" else b"250 SIZE\r\n")
                    writer.write(b"250-sink.many.test\r\n" + ext)
                elif cmd == b"STARTTLS" and tls == "no":
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(self.ctx)
                    tls = writer.get_extra_info("ssl_object").version()
                    mail, rcpts = None, []
                elif cmd.startswith(b"MAIL"):
                    mail, rcpts = line, []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif cmd.startswith(b"RCPT"):
                    rcpts.append(line.split(b":", 1)[1].strip().split()[0].strip(b"<>").decode("ascii", "replace"))
                    writer.write(b"250 2.1.5 ok\r\n")
                elif cmd == b"DATA":
                    if mail is None or not rcpts:
                        writer.write(b"503 5.5.1 no recipients\r\n")
                        continue
                    writer.write(b"354 go ahead\r\n")
                    head = await self.read_data(reader)
                    m = BENCH_ID.search(head)
                    mid = m.group(1).decode("ascii", "replace") if m else "-"
                    now = time.time()
                    for r in rcpts:
                        self.log.write(f"{now:.6f} ip={ip} tls={tls} rcpt={r} id={mid}\n")
                    self.log.flush()
                    writer.write(b"250 2.0.0 taken\r\n")
                    mail, rcpts = None, []
                elif cmd.startswith((b"RSET", b"NOOP")):
                    mail, rcpts = (None, []) if cmd.startswith(b"RSET") else (mail, rcpts)
                    writer.write(b"250 2.0.0 ok\r\n")
                elif cmd == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 not implemented\r\n")
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def read_data(reader):
        """The message up to the lone dot; returns its header (all the sink looks at)."""
        head, in_head = [], True
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            if line in (b".\r\n", b".\n"):
                return b"".join(head)
            if in_head:
                if line in (b"\r\n", b"\n"):
                    in_head = False
                else:
                    head.append(line)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=25)
    ap.add_argument("addrs", nargs="+")
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    sink = Sink(ctx, open(a.log, "a"))
    servers = [await asyncio.start_server(sink.session, ip, a.port, backlog=256, limit=1 << 20)
               for ip in a.addrs]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
