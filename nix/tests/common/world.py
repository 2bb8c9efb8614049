# Helpers shared by the postern VM tests. Prepended to each test script,
# after `ADDR` (the machines' addresses, from default.nix).
#
# The assertions follow SPEC §2.3 and match the hermetic twins in
# tests/world/ (see nix/tests/README.md).

import re
import shlex

CONFIG = "/etc/postern/config.json"
MAILBOXES = "/var/spool/mail/alice /var/mail/alice"


def write_file(machine, path, text, mode="0644"):
    machine.succeed(
        f"install -D -m {mode} /dev/null {path} && printf '%s' {shlex.quote(text)} > {path}"
    )


# --------------------------------------------------------------- DNS

DS_LINE = re.compile(
    r"^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?DS\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9A-Fa-f ]+)$"
)


def ds_records(ns, zone):
    """The DS records of the zone's KSKs, as Knot's keymgr prints them."""
    out = ns.succeed(f"runuser -u knot -- keymgr {zone}. ds")
    records = []
    for line in out.splitlines():
        m = DS_LINE.match(line.strip())
        if m:
            records.append((m.group(2), m.group(3), m.group(4), m.group(5).replace(" ", "")))
    assert records, f"keymgr printed no DS record for {zone}: {out!r}"
    return records


def knsupdate(machine, zone, commands, server="127.0.0.1", key=None):
    """One RFC 2136 UPDATE (one message: atomic). `key` is
    'alg:name:secret' for TSIG. Returns (exit status, output)."""
    script = (
        f"server {server}\nzone {zone}.\norigin {zone}.\n"
        + "\n".join(commands)
        + "\nsend\nanswer\nquit\n"
    )
    key_option = f"-y {shlex.quote(key)}" if key else ""
    return machine.execute(f"printf '%s' {shlex.quote(script)} | knsupdate {key_option} 2>&1")


def bootstrap_dnssec(ns, resolver, posterns, secure=(), bogus=()):
    """Knot has made keys for every zone at start: publish the DS records of
    the `secure` children of test. (labels: "dane-ok" is dane-ok.test.), a
    DS matching no key for the `bogus` ones (none for the insecure ones),
    then hand the anchor of test. to Unbound and to postern
    (`resolver.trustAnchors`)."""
    secure = [f"{label}.test" for label in secure]
    bogus = [f"{label}.test" for label in bogus]
    ns.wait_for_unit("knot.service")
    for zone in ["test", *secure, *bogus]:
        ns.wait_until_succeeds(f"dig @127.0.0.1 +short DNSKEY {zone}. | grep -q .")

    updates = []
    for zone in secure:
        for tag, alg, dtype, digest in ds_records(ns, zone):
            updates.append(f"add {zone}. 60 DS {tag} {alg} {dtype} {digest}")
    for zone in bogus:
        tag, alg, _, _ = ds_records(ns, zone)[0]
        updates.append(f"add {zone}. 60 DS {tag} {alg} 2 {'00' * 32}")
    if updates:
        status, out = knsupdate(ns, "test", updates)
        assert status == 0, f"DS update of test. failed: {out}"

    anchor = "".join(
        f"test. 3600 IN DS {tag} {alg} {dtype} {digest}\n"
        for tag, alg, dtype, digest in ds_records(ns, "test")
    )
    write_file(resolver, "/var/lib/unbound/test.anchor", anchor)
    resolver.succeed("systemctl start unbound.service")
    resolver.wait_for_unit("unbound.service")
    resolver.wait_until_succeeds("dig @127.0.0.1 +short SOA test. | grep -q ns1.test")
    for p in posterns:
        write_file(p, "/var/lib/postern-anchors/test.ds", anchor)
    return anchor


def dig(machine, args):
    return machine.succeed(f"dig @{ADDR['resolver']} +dnssec +tries=2 +time=3 {args}")


def dns_status(machine, args):
    out = dig(machine, args)
    status = re.search(r"status: (\w+)", out).group(1)
    flags = re.search(r";; flags:([^;]*);", out).group(1).split()
    return status, "ad" in flags, out


def assert_secure(machine, args):
    status, ad, out = dns_status(machine, args)
    assert status == "NOERROR" and ad, f"expected a secure answer to {args}:\n{out}"


def assert_insecure(machine, args):
    status, ad, out = dns_status(machine, args)
    assert status == "NOERROR" and not ad, f"expected an insecure answer to {args}:\n{out}"


def assert_bogus(machine, args):
    status, _, out = dns_status(machine, args)
    assert status == "SERVFAIL", f"expected SERVFAIL (bogus) for {args}:\n{out}"


# --------------------------------------------------------------- postern

def start_postern(postern):
    postern.succeed("systemctl start postern.service")
    postern.wait_for_unit("postern.service")
    postern.wait_for_open_port(25)


def send_mail(postern, rcpt, subject):
    postern.succeed(
        "swaks --server 127.0.0.1:25 --ehlo client.postern.test"
        f" --from sender@postern.test --to {shlex.quote(rcpt)}"
        f" --header {shlex.quote('Subject: ' + subject)}"
        f" --body {shlex.quote('postern VM test: ' + subject)}"
    )


def queue(postern):
    return json.loads(postern.succeed(f"postern queue list --json --config {CONFIG}"))


def assert_queued(postern, rcpt):
    """The message to rcpt is still in the queue (deferred, not bounced)."""
    q = json.dumps(queue(postern))
    assert rcpt in q, f"{rcpt} is not in the queue: {q}"


def assert_not_queued(postern, rcpt):
    q = json.dumps(queue(postern))
    assert rcpt not in q, f"{rcpt} is still in the queue: {q}"


def probe(postern, domain):
    """`postern probe --json`; exits 1 when the verdict is defer/fail."""
    _, out = postern.execute(f"postern probe {domain} --config {CONFIG} --json")
    return json.loads(out)


def assert_verdict(postern, domain, expected):
    verdict = probe(postern, domain)["verdict"]
    ok = verdict.startswith(expected) if expected in ("defer", "fail") else verdict == expected
    assert ok, f"probe {domain}: verdict {verdict!r}, expected {expected!r}"


def wait_for_attempts(postern, domain, count):
    """Wait until postern has logged `count` delivery attempts to domain."""
    postern.wait_until_succeeds(
        f"test $(journalctl -u postern.service -o cat | grep -c {shlex.quote(domain)}) -ge {count}",
        timeout=300,
    )


# --------------------------------------------------------------- receivers

def mailbox_message(mx, subject):
    box = mx.succeed(f"cat {MAILBOXES} 2>/dev/null || true")
    for message in re.split(r"\n(?=From )", box):
        if f"\nSubject: {subject}\n" in message:
            return message
    return None


def wait_delivered(mx, subject, tls):
    """Wait for the message and check whether it came over TLS (Postfix
    writes `(using TLSv1.x …)` into its Received header)."""
    mx.wait_until_succeeds(
        f"grep -qs {shlex.quote('Subject: ' + subject)} {MAILBOXES}", timeout=300
    )
    message = mailbox_message(mx, subject)
    header = message.split("\n\n", 1)[0]
    over_tls = re.search(r"\(using TLSv1\.[23] ", header) is not None
    assert over_tls == tls, (
        f"{subject}: delivered {'with' if over_tls else 'without'} TLS, expected "
        f"{'TLS' if tls else 'plaintext'}:\n{header}"
    )
    return header


def assert_not_delivered(mx, subject):
    assert mailbox_message(mx, subject) is None, f"{subject} was delivered"
