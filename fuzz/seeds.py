#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/
(valid examples from the test suite, plus a few hand-made ones). The
committed corpora in fuzz/corpus/ are these plus what the fuzzer found,
minimized with `cargo fuzz cmin`. Run from the repository root."""
import base64, glob, hashlib, os, re, struct, subprocess

out = "fuzz/corpus"

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def unescape(s):
    return s.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t")

# smtp_inbound: the client side of every dialog in tests/dialogs
for path in sorted(glob.glob("tests/dialogs/*.dialog")):
    data = b""
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("c: "):
            data += line[3:].encode() + b"\r\n"
        elif line.startswith("c:"):
            data += line[2:].encode() + b"\r\n"
        elif line.startswith("c~ "):
            data += unescape(line[3:]).encode()
    if data:
        put("smtp_inbound", data)

# smtp_reply: server replies as real servers send them
for r in [
    "220 mx.example.org ESMTP Postfix\r\n",
    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <b@example.org>: Recipient address rejected\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    "421 4.3.2 Service not available, closing transmission channel\n",
    "250\r\n",
    "451-4.7.1 Greylisted\r\n451 4.7.1 try again later\r\n",
    "220 2.0.0 Ready to start TLS\r\n",
    "334 VXNlcm5hbWU6\r\n",
]:
    put("smtp_reply", r)

# mta_sts: policies (src/mta_sts/policy.rs tests) and TXT RRsets (txt.rs)
for p in [
    "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
    "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 604800",
    "version: STSv1\nmode: none\nmax_age: 0\n",
    "\ufeffversion: STSv1\nmode: enforce\nmx: mx.bücher.example\nmx: xn--mnchen-3ya.example.\nmax_age: 31557600\next.field: foo\n",
    "version: STSv1\nmode: enforce\nmax_age: 86400\nmx: *.mail.example.org\nmode: testing\n\n   \n",
]:
    put("mta_sts", p)
for t in [
    "v=STSv1; id=20160831085700Z;",
    "v=STSv1;id=abc",
    "v=STSv1 ; id=abc ; ",
    "v=STSv1; ext=foo:bar/1; id=x1; other.ext-1=!~",
    "v=spf1 -all\nv=STSv1; id=a1;\nhello",
    "v=STSv1; id=a;\nv=STSv1; id=b;",
    "v=STSv1; id=abc-def;",
]:
    put("mta_sts", t)

# tlsrpt_record: _smtp._tls TXT RRsets (RFC 8460 §3 examples)
for t in [
    "v=TLSRPTv1; rua=mailto:reports@example.com",
    "v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt",
    "v=TLSRPTv1;rua=mailto:reports@example.com,https://reporting.example.com/v1/tlsrpt",
    "v=TLSRPTv1; rua=mailto:a@example.org\nv=spf1 -all",
    "v=TLSRPTv1; rua=mailto:tlsrpt@example.org!10m",
]:
    put("tlsrpt_record", t)

# tlsrpt_received: the parser's committed corpus (valid and malformed
# reports, gzip'd and not, report mails)
for path in sorted(glob.glob("tests/data/tlsrpt-received/*")):
    if not path.endswith((".md", ".txt")):
        put("tlsrpt_received", open(path, "rb").read())

# config: tests/configs, configs from tests/check_config.rs, expressions
for path in sorted(glob.glob("tests/configs/*.json")):
    put("config", open(path, "rb").read())
src = open("tests/check_config.rs", encoding="utf-8").read()
for m in re.finditer(r'r#"(\{.*?\})"#', src, re.S):
    text = m.group(1)
    if "{{" in text:
        continue
    put("config", text)
for e in [
    "retry_num > 1 && last_error == 'tls'",
    "!(starts_with(mx, 'mx') || ends_with(rcpt_domain, '.example')) && contains(sender, '@')",
    "'disable-tls'",
    '{"match": [{"if": "retry_num > 0", "then": "\'a\'"}, {"if": "retry_num > 1", "then": "\'b\'"}], "else": "\'c\'"}',
    '{"match": [{"if": "mx == \'a\' || mx != \'b\'", "then": 5}], "else": 7}',
    "5m",
]:
    put("config", e)

# trust_anchors: DS and DNSKEY files (the root KSK-2017 DS; a fresh P-256 key)
root_ds = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n"
put("trust_anchors", root_ds)
try:
    pem = subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "ec", "-pubout", "-outform", "DER"], input=pem,
                         capture_output=True, check=True).stdout
    key = base64.b64encode(der[-64:]).decode()
    put("trust_anchors", f"example.org. 3600 IN DNSKEY 257 3 13 {key}\n")
    put("trust_anchors", f"$ORIGIN example.\n$TTL 3600\n; comment\n@ IN DNSKEY 257 3 ECDSAP256SHA256 (\n  {key[:40]}\n  {key[40:]} ) ; key\n"
        f"sub IN CLASS1 86400 DS 12345 13 2 (\n {'ab'*32} )\n\tDS 1 13 1 {'cd'*20}\n")
except Exception as e:
    print("no openssl key:", e)
put("trust_anchors", "test. DS 1 ED25519 4 " + "0" * 96 + "\n")

# rfc2136_answer: a verify-mode byte (odd: TSIG to hickory's verifier;
# even: taken as verified), then a DNS message answering UPDATE id 0x2136
def answer(rcode, tsig=False, ident=0x2136):
    flags = 0x8000 | (5 << 11) | (rcode & 0xF)
    zone = b"\x07example\x03org\x00" + struct.pack(">HH", 6, 1)
    ar = 0
    extra = b""
    if tsig:
        ar = 1
        alg = b"\x0bhmac-sha256\x00"
        mac = bytes(32)
        rdata = alg + struct.pack(">HIH", 0, 1_700_000_000, 300) + struct.pack(">H", len(mac)) + mac \
            + struct.pack(">HHH", ident, 16 if rcode == 9 else 0, 0)
        extra = b"\x08fuzz-key\x00" + struct.pack(">HHIH", 250, 255, 0, len(rdata)) + rdata
    return struct.pack(">HHHHHH", ident, flags, 1, 0, 0, ar) + zone + extra
for mode in (0, 1):
    for rcode in (0, 2, 5, 7, 8, 9, 10):
        put("rfc2136_answer", bytes([mode]) + answer(rcode))
    put("rfc2136_answer", bytes([mode]) + answer(0, tsig=True))
    put("rfc2136_answer", bytes([mode]) + answer(9, tsig=True))
    put("rfc2136_answer", bytes([mode]) + answer(0, ident=1))
