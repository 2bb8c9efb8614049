# Helpers shared by the postern VM tests. Prepended to each test script,
# after `ADDR` (the machines' addresses, from default.nix).
#
# The assertions follow SPEC §2.3 and match the hermetic twins in
# tests/world/ (see nix/tests/README.md).
#
# The driver puts each node into the script's globals under its name (ns,
# resolver, postern, mx, …) next to its own (log, machines, …): no helper
# binds any of these names, not even as a parameter (nix/tests/lint/).

import re
import shlex

CONFIG = "/etc/postern/config.json"
MAILBOXES = "/var/spool/mail/alice /var/mail/alice"


def write_file(node, path, text, mode="0644"):
    node.succeed(
        f"install -D -m {mode} /dev/null {path} && printf '%s' {shlex.quote(text)} > {path}"
    )


# --------------------------------------------------------------- DNS

DS_LINE = re.compile(
    r"^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?DS\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9A-Fa-f ]+)$"
)


def ds_records(authoritative, zone):
    """The DS records of the zone's KSKs, as Knot's keymgr prints them."""
    out = authoritative.succeed(f"runuser -u knot -- keymgr {zone}. ds")
    records = []
    for line in out.splitlines():
        m = DS_LINE.match(line.strip())
        if m:
            records.append((m.group(2), m.group(3), m.group(4), m.group(5).replace(" ", "")))
    assert records, f"keymgr printed no DS record for {zone}: {out!r}"
    return records


def knsupdate(node, zone, commands, server="127.0.0.1", key=None):
    """One RFC 2136 UPDATE (one message: atomic). `key` is
    'alg:name:secret' for TSIG. Returns (exit status, output)."""
    script = (
        f"server {server}\nzone {zone}.\norigin {zone}.\n"
        + "\n".join(commands)
        + "\nsend\nanswer\nquit\n"
    )
    key_option = f"-y {shlex.quote(key)}" if key else ""
    return node.execute(f"printf '%s' {shlex.quote(script)} | knsupdate {key_option} 2>&1")


def bootstrap_dnssec(authoritative, validator, posterns, secure=(), bogus=()):
    """Knot has made keys for every zone at start: publish the DS records of
    the `secure` children of test. (labels: "dane-ok" is dane-ok.test.), a
    DS matching no key for the `bogus` ones (none for the insecure ones),
    then hand the anchor of test. to Unbound and to postern
    (`resolver.trustAnchors`)."""
    secure = [f"{label}.test" for label in secure]
    bogus = [f"{label}.test" for label in bogus]
    authoritative.wait_for_unit("knot.service")
    for zone in ["test", *secure, *bogus]:
        authoritative.wait_until_succeeds(f"dig @127.0.0.1 +short DNSKEY {zone}. | grep -q .")

    updates = []
    for zone in secure:
        for tag, alg, dtype, digest in ds_records(authoritative, zone):
            updates.append(f"add {zone}. 60 DS {tag} {alg} {dtype} {digest}")
    for zone in bogus:
        tag, alg, _, _ = ds_records(authoritative, zone)[0]
        updates.append(f"add {zone}. 60 DS {tag} {alg} 2 {'00' * 32}")
    if updates:
        status, out = knsupdate(authoritative, "test", updates)
        assert status == 0, f"DS update of test. failed: {out}"

    anchor = "".join(
        f"test. 3600 IN DS {tag} {alg} {dtype} {digest}\n"
        for tag, alg, dtype, digest in ds_records(authoritative, "test")
    )
    write_file(validator, "/var/lib/unbound/test.anchor", anchor)
    validator.succeed("systemctl start unbound.service")
    validator.wait_for_unit("unbound.service")
    validator.wait_until_succeeds("dig @127.0.0.1 +short SOA test. | grep -q ns1.test")
    for node in posterns:
        write_file(node, "/var/lib/postern-anchors/test.ds", anchor)
    return anchor


# The assert_* helpers take "TYPE NAME"; nix/tests/lint/check.py checks
# their literal queries against the zone files (common/zones.nix).


def dig(node, args):
    return node.succeed(f"dig @{ADDR['resolver']} +dnssec +tries=2 +time=3 {args}")


def dns_status(node, args):
    out = dig(node, args)
    status = re.search(r"status: (\w+)", out).group(1)
    flags = re.search(r";; flags:([^;]*);", out).group(1).split()
    return status, "ad" in flags, out


def assert_secure(node, args):
    """NOERROR (an answer, or NODATA: the name exists), validated (AD)."""
    status, ad, out = dns_status(node, args)
    assert status == "NOERROR" and ad, f"expected a secure answer to {args}:\n{out}"


def assert_secure_nxdomain(node, args):
    """NXDOMAIN, the denial validated (AD): no such name, proven."""
    status, ad, out = dns_status(node, args)
    assert status == "NXDOMAIN" and ad, f"expected a secure NXDOMAIN for {args}:\n{out}"


def assert_insecure(node, args):
    status, ad, out = dns_status(node, args)
    assert status == "NOERROR" and not ad, f"expected an insecure answer to {args}:\n{out}"


def assert_bogus(node, args):
    status, _, out = dns_status(node, args)
    assert status == "SERVFAIL", f"expected SERVFAIL (bogus) for {args}:\n{out}"


# --------------------------------------------------------------- postern

def start_postern(node):
    node.succeed("systemctl start postern.service")
    node.wait_for_unit("postern.service")
    node.wait_for_open_port(25)


def send_mail(node, rcpt, subject):
    node.succeed(
        "swaks --server 127.0.0.1:25 --ehlo client.postern.test"
        f" --from sender@postern.test --to {shlex.quote(rcpt)}"
        f" --header {shlex.quote('Subject: ' + subject)}"
        f" --body {shlex.quote('postern VM test: ' + subject)}"
    )


def queue(node):
    """`postern queue list --json`: the queued messages (envelopes)."""
    return json.loads(node.succeed(f"postern queue list --json --config {CONFIG}"))


def assert_queued(node, rcpt):
    """The message to rcpt is still in the queue (deferred, not bounced)."""
    q = json.dumps(queue(node))
    assert rcpt in q, f"{rcpt} is not in the queue: {q}"


def assert_not_queued(node, rcpt):
    q = json.dumps(queue(node))
    assert rcpt not in q, f"{rcpt} is still in the queue: {q}"


def queued_recipient(node, rcpt):
    """The queue entry of rcpt: (envelope, recipient), as `queue list --json`
    shows them (`attempts`; `status`, `errorKind`, `lastError`)."""
    for envelope in queue(node):
        for recipient in envelope["recipients"]:
            if recipient["address"] == rcpt:
                return envelope, recipient
    raise AssertionError(f"{rcpt} is not in the queue: {json.dumps(queue(node))}")


def assert_deferred(node, rcpt, error_kind, attempts=1):
    """rcpt is queued, deferred after at least `attempts` attempts, and its
    last error is of the kind SPEC §2 names (`last_error`)."""
    envelope, recipient = queued_recipient(node, rcpt)
    assert recipient["status"] == "deferred", envelope
    assert recipient.get("errorKind") == error_kind, envelope
    assert envelope["attempts"] >= attempts, envelope


def probe(node, domain):
    """`postern probe --json`; exits 1 when the verdict is defer/fail. It
    opens no store: it sees what DNS and HTTPS say now, not the daemon's
    cache."""
    _, out = node.execute(f"postern probe {domain} --config {CONFIG} --json")
    return json.loads(out)


def assert_verdict(node, domain, expected):
    verdict = probe(node, domain)["verdict"]
    ok = verdict.startswith(expected) if expected in ("defer", "fail") else verdict == expected
    assert ok, f"probe {domain}: verdict {verdict!r}, expected {expected!r}"


def journal(node, unit="postern.service", current=False):
    """The unit's journal (message text only); with `current`, only what
    its running invocation logged."""
    if not current:
        return node.succeed(f"journalctl -u {unit} -o cat")
    invocation = node.succeed(f"systemctl show -P InvocationID {unit}").strip()
    assert invocation, f"{unit} is not running"
    return node.succeed(f"journalctl -o cat _SYSTEMD_INVOCATION_ID={invocation}")


def wait_for_log_line(node, needles, current=False, timeout=300):
    """Wait until one line of postern's journal holds every needle; return it."""
    found = []

    def has_line(_last_try):
        for line in journal(node, current=current).splitlines():
            if all(n in line for n in needles):
                found.append(line)
                return True
        return False

    retry(has_line, timeout)
    return found[-1]


def wait_for_attempts(node, domain, count):
    """Wait until postern has logged `count` delivery attempts to domain."""
    node.wait_until_succeeds(
        "test $(journalctl -u postern.service -o cat"
        f" | grep -c {shlex.quote(domain)}) -ge {count}",
        timeout=300,
    )


# --------------------------------------------------------------- receivers

def mailbox_message(receiver, subject):
    box = receiver.succeed(f"cat {MAILBOXES} 2>/dev/null || true")
    for message in re.split(r"\n(?=From )", box):
        if f"\nSubject: {subject}\n" in message:
            return message
    return None


def wait_delivered(receiver, subject, tls):
    """Wait for the message and check whether it came over TLS (Postfix
    writes `(using TLSv1.x …)` into its Received header)."""
    receiver.wait_until_succeeds(
        f"grep -qs {shlex.quote('Subject: ' + subject)} {MAILBOXES}", timeout=300
    )
    message = mailbox_message(receiver, subject)
    header = message.split("\n\n", 1)[0]
    over_tls = re.search(r"\(using TLSv1\.[23] ", header) is not None
    assert over_tls == tls, (
        f"{subject}: delivered {'with' if over_tls else 'without'} TLS, expected "
        f"{'TLS' if tls else 'plaintext'}:\n{header}"
    )
    return header


def assert_not_delivered(receiver, subject):
    assert mailbox_message(receiver, subject) is None, f"{subject} was delivered"
