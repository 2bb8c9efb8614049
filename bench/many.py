"""Many-destination benchmark (bench/run.sh many; see bench/README.md).

The test world (tests/world/world.sh) with WORLD_EXTRA_DOMAINS generated destination
domains of four kinds (DANE, MTA-STS enforce, signed without TLSA, unsigned), every MX the
world's counting STARTTLS sink (tests/world/many_sink.py, 127.0.6-7.x). Two relays get the
same injected load, interleaved, each run from cold caches:

  127.0.4.30:2525   postern       the world's postern.json (validates DNSSEC itself against
                                  the world's Unbound; world CA for MTA-STS), fresh storage
  127.0.3.3:25      Postfix       the world's DANE relay (tests/world/world.sh postfix-relay-*:
                                  Unbound as its resolver in a private mount namespace), with
                                  connection caching on and MTA-STS from
  127.0.4.31:8461   postfix-mta-sts-resolver   (socketmap; same namespace trick; world CA)

The caller (run.sh) holds /tmp/postern-world.lock for the whole run.
"""
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import time

import bench
from bench import Fail, cpu_seconds, log, percentile, spawn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD_SH = os.path.join(ROOT, "tests", "world", "world.sh")
DOMAINS = int(os.environ.get("BENCH_MANY_DOMAINS", "200"))
PER_DOMAIN = int(os.environ.get("BENCH_MANY_PER_DOMAIN", "10"))
STS_VENV = os.environ.get("BENCH_STS_VENV", "/var/tmp/mta-sts-venv")
# not the relay benchmark's addresses (127.0.4.1-11), so that both can run on one machine
POSTERN_ADDR = ("127.0.4.30", 2525)
POSTFIX_ADDR = ("127.0.3.3", 25)  # the world's relay address (RELAY_IP)
STS_RESOLVER = ("127.0.4.31", 8461)
ADDRS = (POSTERN_ADDR, POSTFIX_ADDR, STS_RESOLVER)  # must be free at the start
# what each kind of domain demands of the relay: the level postern logs, the word Postfix logs
DEMANDS = {"dane": ("dane", "Verified"), "sts": ("mta-sts", "Verified"),
           "signed": (None, None), "plain": (None, None)}


def world(cmd, w, **env):
    r = subprocess.run(["bash", WORLD_SH, cmd, w], capture_output=True, text=True,
                       env={**os.environ, **{k: str(v) for k, v in env.items()}})
    if r.returncode != 0:
        raise Fail(f"world.sh {cmd}: {r.stderr.strip()[-2000:]}")


def read_env(w):
    env = {}
    with open(os.path.join(w, "world.env")) as f:
        for line in f:
            k, sep, v = line.strip().partition("=")
            if sep and not k.startswith("#"):
                env[k] = v
    return env


def unbound_queries(w):
    """Unbound's query counters: {"total": n, "A": n, "DNSKEY": n, ...} (bench/dns.sh reads the same)."""
    out = subprocess.run(["unbound-control", "-c", f"{w}/unbound/unbound.conf", "stats_noreset"],
                         capture_output=True, text=True, check=True).stdout
    q = {t: int(n) for t, n in re.findall(r"^num\.query\.type\.([A-Z0-9]+)=(\d+)", out, re.M)}
    q["total"] = int(re.search(r"^total\.num\.queries=(\d+)", out, re.M).group(1))
    return q


# ------------------------------------------------------------------ MTA-STS resolver for Postfix
def sts_venv():
    """postfix-mta-sts-resolver from PyPI in a venv under /var/tmp; None when it cannot be had."""
    daemon = os.path.join(STS_VENV, "bin", "mta-sts-daemon")
    if not os.access(daemon, os.X_OK):
        log(f"installing postfix-mta-sts-resolver into {STS_VENV}")
        r = subprocess.run(f"python3 -m venv {STS_VENV} && {STS_VENV}/bin/pip install -q "
                           "postfix-mta-sts-resolver", shell=True, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"postfix-mta-sts-resolver did not install ({r.stderr.strip()[-300:]}): "
                "Postfix runs WITHOUT MTA-STS")
            return None
    return daemon


def start_sts_resolver(tmp, w, daemon, run):
    """A fresh resolver (empty in-memory cache), resolving through the world's Unbound (its own
    mount namespace with the relay's resolv.conf) and trusting the world CA (SSL_CERT_FILE)."""
    cfg = os.path.join(tmp, "mta-sts-daemon.yml")
    with open(cfg, "w") as f:
        f.write(f"host: {STS_RESOLVER[0]}\nport: {STS_RESOLVER[1]}\nreuse_port: true\n"
                "cache:\n  type: internal\n  options:\n    cache_size: 10000\n"
                "default_zone:\n  strict_testing: false\n  timeout: 4\n")
    script = 'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" -v info'
    _, t = spawn("mta-sts-resolver",
                 ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                  f"{w}/postfix-relay/resolv.conf", daemon, cfg],
                 os.path.join(tmp, f"mta-sts-resolver-{run}.log"),
                 env={**os.environ, "SSL_CERT_FILE": f"{w}/pki/ca.pem"})
    wait_port(STS_RESOLVER, "postfix-mta-sts-resolver")
    return t


def wait_port(addr, what, timeout=20):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(addr, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise Fail(f"{what} did not start listening on {addr[0]}:{addr[1]}")


# ------------------------------------------------------------------ relays
def postfix_configure(w, with_sts):
    """The world's relay main.cf, changed to what a production relay would run: connection
    cache on (the world turns it off for one TLS log line per delivery), a TLS session cache
    (Debian's default), short backoff so that a deferral does not stall the run, and the
    MTA-STS socketmap."""
    settings = ["smtp_connection_cache_on_demand = yes", "smtp_tls_loglevel = 1",
                "smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache",
                "minimal_backoff_time = 5s", "maximal_backoff_time = 10s", "queue_run_delay = 5s"]
    if with_sts:
        settings.append(f"smtp_tls_policy_maps = socketmap:inet:{STS_RESOLVER[0]}:{STS_RESOLVER[1]}:postfix")
    subprocess.run(["postconf", "-c", f"{w}/postfix-relay/conf", "-e", *settings], check=True)


def start_postfix(tmp, w, run, daemon):
    # a message a stalled earlier run left behind must not add to this run's load
    subprocess.run(["postsuper", "-c", f"{w}/postfix-relay/conf", "-d", "ALL"], capture_output=True)
    for f in os.listdir(f"{w}/postfix-relay/data"):
        if f.startswith("smtp_scache"):
            os.remove(f"{w}/postfix-relay/data/{f}")  # cold TLS session cache
    sts = start_sts_resolver(tmp, w, daemon, run) if daemon else None
    world("postfix-relay-start", w)
    with open(f"{w}/postfix-relay/queue/pid/master.pid") as f:
        master = int(f.read().strip())
    return master, sts


def start_postern(tmp, w, run):
    with open(f"{w}/postern.json") as f:
        cfg = json.load(f)
    cfg["server"]["listeners"]["smtp"]["bind"] = f"{POSTERN_ADDR[0]}:{POSTERN_ADDR[1]}"
    cfg["storage"]["path"] = os.path.join(tmp, f"postern-data-{run}")
    path = os.path.join(tmp, f"postern-{run}.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    logf = os.path.join(tmp, f"postern-{run}.log")
    p, t = spawn("postern", [bench.POSTERN_BIN, "serve", "--config", path], logf,
                 env={**os.environ, "RUST_LOG": "info"})
    bench.wait_listen(POSTERN_ADDR, "postern", timeout=60)
    return p.pid, t, logf


# ------------------------------------------------------------------ load
def body(mid, rcpt):
    hdr = (f"From: <bench@client.test>\r\nTo: <{rcpt}>\r\nSubject: many-destination bench\r\n"
           f"X-Bench-Id: {mid}\r\n\r\n")
    line = "x" * 76 + "\r\n"
    return (hdr + line * max(1, (bench.SIZE - len(hdr)) // len(line))).encode()


async def _reply(reader):
    """One SMTP reply: (code, text of its last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise OSError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def _session(addr, jobs, accepted, errors):
    """One SMTP session taking messages from `jobs` until none are left. MAIL, RCPT and DATA go
    out in one write (RFC 2920; both relays offer PIPELINING): the injector costs the relays'
    machine as little as it can, so that it does not set the pace."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        want = [(220, "greeting")]
        writer.write(b"EHLO client.bench.test\r\n")
        want.append((250, "EHLO"))
        for code, what in want:
            got = await _reply(reader)
            if got[0] != code:
                raise OSError(f"{what}: {got[1]}")
        while jobs:
            mid, rcpt = jobs.pop()
            writer.write(f"MAIL FROM:<bench@client.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            replies = [await _reply(reader) for _ in range(3)]
            if [c for c, _ in replies] != [250, 250, 354]:
                errors.append(f"{rcpt}: {replies}")
                # end the transaction: an empty message if DATA was taken, else RSET
                writer.write(b".\r\n" if replies[2][0] == 354 else b"RSET\r\n")
                await _reply(reader)
                continue
            writer.write(body(mid, rcpt) + b".\r\n")  # no line of body() starts with "."
            code, text = await _reply(reader)
            if code != 250:
                errors.append(f"{rcpt}: {text}")
                continue
            accepted[mid] = time.time()
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()


def inject(addr, tag, domains):
    """PER_DOMAIN messages to each domain, one recipient each, domains interleaved, over
    bench.SESSIONS parallel SMTP sessions. Returns {id: accept time} (after the 250 to DATA)."""
    jobs = [(f"{tag}-{i}", f"u{i}@{domains[i % len(domains)][0]}.test")
            for i in range(len(domains) * PER_DOMAIN)]
    jobs.reverse()  # sessions pop from the end: the first job goes first
    accepted, errors = {}, []

    async def all_sessions():
        results = await asyncio.gather(*(_session(addr, jobs, accepted, errors)
                                         for _ in range(bench.SESSIONS)), return_exceptions=True)
        errors.extend(f"session: {r}" for r in results if isinstance(r, BaseException))
    asyncio.run(all_sessions())
    if errors:
        raise Fail(f"{len(errors)} messages not accepted, e.g. {errors[0]}")
    return accepted


def sink_lines(path, offset, tag):
    """The sink's lines since offset for this run: [(time, tls, rcpt, id)]."""
    out = []
    with open(path) as f:
        f.seek(offset)
        for line in f:
            m = re.match(r"(\S+) ip=\S+ tls=(\S+) rcpt=(\S+) id=(\S+)", line)
            if m and m.group(4).startswith(tag + "-"):
                out.append((float(m.group(1)), m.group(2), m.group(3), m.group(4)))
    return out


def wait_delivered(path, offset, tag, total):
    last, n, moved = [], -1, time.time()
    while True:
        last = sink_lines(path, offset, tag)
        if len({x[3] for x in last}) >= total:
            return last
        if len(last) != n:
            n, moved = len(last), time.time()
        elif time.time() - moved > bench.STALL:
            log(f"sink stalled at {len(last)}/{total}")
            return last
        time.sleep(0.2)


# ------------------------------------------------------------------ verification
def postern_levels(logf):
    """{message id: level} of postern's delivered attempts (its 'delivery attempt' log line)."""
    levels = {}
    with open(logf, errors="replace") as f:
        for line in f:
            if "delivery attempt" not in line or not re.search(r'\bresult="?delivered\b', line):
                continue
            d = re.search(r"\bdomain=\"?([^\s\"]+?)\.test\b", line)
            lv = re.search(r"\blevel=\"?([^\s\"]*)", line)
            if d and lv:
                levels.setdefault(d.group(1), []).append(lv.group(1))
    return levels


def postfix_levels(maillog, offset):
    """{domain: [trust word per delivered message]}: for each status=sent line, the trust word
    ('Verified', 'Trusted', 'Untrusted', 'Anonymous') of the latest TLS connection established
    to the same MX host before it ('none' if there was none: plaintext). A cached connection
    is logged once, when it is made."""
    last, levels = {}, {}
    with open(maillog, errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = re.search(r"(\w+) TLS connection established to ([^\[]+)\[", line)
            if m:
                last[m.group(2)] = m.group(1)
                continue
            m = re.search(r"to=<[^@>]*@([^>]+)>, relay=([^\[]+)\[.* status=sent", line)
            if m:
                levels.setdefault(m.group(1)[:-5] if m.group(1).endswith(".test") else m.group(1),
                                  []).append(last.get(m.group(2), "none"))
    return levels


def shortfalls(relay, kinds, arrived, total, levels):
    """Messages not delivered with the verification their domain demands: missing at the
    sink, or (DANE / MTA-STS domains) arrived without TLS, or logged by the relay at a lower
    level than the domain demands."""
    missing = total - len({x[3] for x in arrived})
    def dom(rcpt):
        return rcpt.split("@")[1][:-len(".test")]
    no_tls = sum(1 for x in arrived if x[1] == "no" and DEMANDS[kinds[dom(x[2])]][0])
    # every message that arrived for a demanding domain needs a relay log line at the level
    # demanded: a missing or unparsed line counts against the relay, not for it
    weak = 0
    for d, kind in kinds.items():
        want = DEMANDS[kind][0 if relay == "postern" else 1]
        if want:
            n = sum(1 for x in arrived if dom(x[2]) == d)
            weak += max(0, n - sum(1 for lv in levels.get(d, []) if lv == want))
    return {"missing": missing, "no_tls": no_tls, "weak": weak, "shortfalls": missing + no_tls + weak}


# ------------------------------------------------------------------ one run
def start_relay(tmp, w, relay, i, daemon):
    """Starts the relay from cold; returns its address, the roots of its processes (for CPU),
    and a function that stops it and returns its delivered levels per domain."""
    if relay == "postern":
        root, tracked, logf = start_postern(tmp, w, i)

        def stop():
            tracked.stop()
            return postern_levels(logf)
        return POSTERN_ADDR, [root], stop
    maillog = f"{w}/postfix-relay/maillog"
    moff = os.path.getsize(maillog) if os.path.exists(maillog) else 0
    master, sts = start_postfix(tmp, w, i, daemon)
    bench.wait_listen(POSTFIX_ADDR, "the Postfix relay")

    def stop():
        world("postfix-relay-stop", w)
        if sts:
            sts.stop()
        return postfix_levels(maillog, moff)
    return POSTFIX_ADDR, [master] + ([sts.pid] if sts else []), stop


class Counters:
    """Unbound's queries, the relay's and the sink's CPU: read at the start and the end of a run."""

    def __init__(self, w, roots):
        with open(f"{w}/pids/many-sink.pid") as f:
            self.sink = int(f.read().split()[0])
        self.w, self.roots = w, roots
        self.start = self.read()

    def read(self):
        return (unbound_queries(self.w), sum(cpu_seconds(r) for r in self.roots), cpu_seconds(self.sink))

    def since_start(self):
        (q0, c0, s0), (q1, c1, s1) = self.start, self.read()
        queries = {t: n - q0.get(t, 0) for t, n in q1.items() if n - q0.get(t, 0) > 0}
        return queries, c1 - c0, s1 - s0


def run_one(tmp, w, env, relay, i, domains, daemon):
    tag = f"{relay}{i}"
    total = len(domains) * PER_DOMAIN
    sink_log = env["WORLD_EXTRA_SINK_LOG"]
    world("flush-dns", w)
    addr, roots, stop = start_relay(tmp, w, relay, i, daemon)
    time.sleep(1)  # start-up lookups (postern's DNSSEC self-check, Postfix's dnssec_probe) ...
    world("flush-dns", w)  # ... are not part of the load, and leave nothing cached in Unbound
    soff = os.path.getsize(sink_log)
    counters = Counters(w, roots)
    t0 = time.time()
    accepted = inject(addr, tag, domains)
    t_acc = time.time()
    arrived = wait_delivered(sink_log, soff, tag, total)
    queries, cpu, sink_cpu = counters.since_start()
    levels = stop()
    kinds = {d: k for d, k, _ in domains}
    lat = [t - accepted[mid] for t, _, _, mid in arrived if mid in accepted]
    t_end = max((x[0] for x in arrived), default=time.time())
    delivered = len({x[3] for x in arrived})
    r = {"messages": total, "delivered": delivered,
         "accept_rate": total / (t_acc - t0), "e2e_rate": delivered / (t_end - t0),
         "dns_per_msg": queries.get("total", 0) / total,
         "dns_by_type_per_msg": {t: round(n / total, 2) for t, n in sorted(queries.items()) if t != "total"},
         "cpu_ms_per_msg": 1000 * cpu / total,
         "p99_s": percentile(lat, 99), "p50_s": percentile(lat, 50),
         # near 100 %: the one-process Python sink, not the relay, set the pace
         "sink_cpu_pct": 100 * sink_cpu / max(t_end - t0, 1e-9),
         **shortfalls(relay, kinds, arrived, total, levels)}
    log(f"run {i} {relay}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in r.items() if not isinstance(v, dict)))
    return r


def main(tmp):
    """Brings the world up, runs RUNS × (postern, Postfix), always takes the world down."""
    w = os.path.join(tmp, "world")
    daemon = sts_venv() if "postfix" in bench.RELAYS else None
    log(f"work dir {tmp}; {DOMAINS} domains x {PER_DOMAIN} messages, {bench.SESSIONS} sessions, "
        f"{bench.RUNS} runs, relays {bench.RELAYS}; Postfix MTA-STS: {'yes' if daemon else 'NO'}")
    results = {}
    try:
        world("up", w, WORLD_EXTRA_DOMAINS=DOMAINS)
        env = read_env(w)
        with open(env["WORLD_EXTRA_LIST"]) as f:
            domains = [tuple(line.split()) for line in f if line.strip()]
        postfix_configure(w, daemon is not None)
        for i in range(1, bench.RUNS + 1):
            for relay in bench.RELAYS:
                results.setdefault(relay, []).append(run_one(tmp, w, env, relay, i, domains, daemon))
    finally:
        for t in reversed(bench.TRACKED):
            t.stop()
        subprocess.run(["bash", WORLD_SH, "down", w], capture_output=True)
        if bench.KEEP:
            shutil.copytree(f"{w}/many", os.path.join(tmp, "sink"), dirs_exist_ok=True)
    results["_meta"] = {"domains": DOMAINS, "per_domain": PER_DOMAIN, "sessions": bench.SESSIONS,
                        "size": bench.SIZE, "postfix_mta_sts": daemon is not None, "machine": machine()}
    return results


def machine():
    """One line for the README: CPUs, memory, Postfix's version, the postern binary."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    pf = subprocess.run(["postconf", "-h", "mail_version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({model}), {mem / 2**20:.0f} GiB, Postfix {pf}, "
            f"postern {bench.POSTERN_BIN}")


METRICS = [  # key, label
    ("e2e_rate", "end-to-end rate (msg/s)"),
    ("accept_rate", "accept rate (msg/s)"),
    ("dns_per_msg", "DNS queries per message (Unbound)"),
    ("cpu_ms_per_msg", "CPU per message (ms; relay processes, + MTA-STS resolver for Postfix)"),
    ("p50_s", "p50 accept -> delivery (s)"),
    ("p99_s", "p99 accept -> delivery (s)"),
    ("sink_cpu_pct", "sink CPU (% of the run's wall time; ~100: the sink was the bottleneck)"),
    ("delivered", "delivered (of messages)"),
    ("shortfalls", "verification shortfalls"),
]


def report(results):
    meta = results["_meta"]
    out = [f"{meta['domains']} domains x {meta['per_domain']} messages x {meta['size']} B, "
           f"{meta['sessions']} sessions, {len(results.get('postern', results.get('postfix', [])))} "
           f"interleaved runs each; Postfix with MTA-STS (postfix-mta-sts-resolver): "
           f"{'yes' if meta['postfix_mta_sts'] else 'NO'}; median [min-max]",
           f"machine: {meta['machine']}\n",
           "| metric | postern | Postfix | postern/Postfix |", "| --- | --- | --- | --- |"]
    med = {}
    for key, label in METRICS:
        cells = []
        for relay in ("postern", "postfix"):
            xs = [r[key] for r in results.get(relay, [])]
            if xs:
                med[relay, key] = statistics.median(xs)
                cells.append(f"{bench.fmt(med[relay, key])} [{bench.fmt(min(xs))}-{bench.fmt(max(xs))}]")
            else:
                cells.append("-")
        a, b = med.get(("postern", key)), med.get(("postfix", key))
        out.append(f"| {label} | {cells[0]} | {cells[1]} | {f'{a / b:.2f}' if a is not None and b else '-'} |")
    sf = {relay: sum(r["shortfalls"] for r in results.get(relay, [])) for relay in ("postern", "postfix")}
    detail = {relay: {k: sum(r[k] for r in results.get(relay, [])) for k in ("missing", "no_tls", "weak")}
              for relay in ("postern", "postfix")}
    for relay in ("postern", "postfix"):
        runs = results.get(relay, [])
        types = sorted({t for r in runs for t in r["dns_by_type_per_msg"]})
        by = ", ".join(f"{t} {statistics.median(r['dns_by_type_per_msg'].get(t, 0) for r in runs):.2f}"
                       for t in types)
        if runs:
            out.append(f"\nDNS queries per message by type, {relay} (median): {by}")
    out.append(f"\nshortfalls over all runs: postern {detail['postern']}, Postfix {detail['postfix']}")
    if ("postern", "e2e_rate") in med and ("postfix", "e2e_rate") in med:
        e = med["postern", "e2e_rate"] / med["postfix", "e2e_rate"]
        out.append(f"\n- end-to-end rate >= 2x Postfix: {e:.2f}x -> {'MET' if e >= 2 else 'NOT MET'}")
        out.append(f"- zero verification shortfalls: postern {sf['postern']}, Postfix {sf['postfix']} -> "
                   f"{'MET' if sf['postern'] == 0 else 'NOT MET'} (postern)")
    return "\n".join(out)
