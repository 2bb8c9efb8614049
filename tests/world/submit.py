#!/usr/bin/env python3
"""Submits one message with ESMTP parameters, over STARTTLS when asked.

swaks (20201014, Debian's) cannot add parameters to MAIL FROM or RCPT TO, so
the tests that need REQUIRETLS, RET, ENVID, NOTIFY or ORCPT submit with
Python's smtplib instead. The message is read from stdin as bytes and sent
unchanged (8-bit included). Prints the final reply as `CODE TEXT` and exits
0 when the message was accepted, 1 when it was refused.

usage: submit.py HOST:PORT FROM TO [--tls] [--mail-opt OPT]... [--rcpt-opt OPT]...
"""
import argparse
import smtplib
import ssl
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("sender")
    ap.add_argument("rcpt")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--mail-opt", action="append", default=[])
    ap.add_argument("--rcpt-opt", action="append", default=[])
    a = ap.parse_args()
    host, port = a.server.rsplit(":", 1)
    message = sys.stdin.buffer.read()
    with smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        if a.tls:
            ctx = ssl.create_default_context()
            # the submission hop is not what these tests examine
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s.starttls(context=ctx)
            s.ehlo()
        code, text = s.mail(a.sender, a.mail_opt)
        if code != 250:
            print(code, text.decode(errors="replace"))
            return 1
        code, text = s.rcpt(a.rcpt, a.rcpt_opt)
        if code not in (250, 251):
            print(code, text.decode(errors="replace"))
            return 1
        code, text = s.data(message)
        print(code, text.decode(errors="replace"))
        return 0 if code == 250 else 1


if __name__ == "__main__":
    sys.exit(main())
