#!/usr/bin/env python3
"""postern vs Postfix relay benchmark (driven by bench/run.sh; see bench/README.md).

Everything runs on loopback (127.0.4.0/24) and is torn down by PID at the end,
also on failure or Ctrl-C.

  127.0.4.1:25      smtp-sink            plain sink
  127.0.4.2:25      Postfix smtpd        STARTTLS sink (self-signed cert); before-queue
                                         proxy to the smtp-sink below, so nothing is queued
  127.0.4.3:10025   smtp-sink            counts what the STARTTLS sink accepted
  127.0.4.10:2525   postern              relay under test (fresh storage each run)
  127.0.4.11:25     Postfix              relay under test (fresh instance each run)

`bench.py resumption` (bench/run.sh resumption) measures TLS session resumption instead:

  127.0.4.4:25      Python TLS sink      STARTTLS, one message per connection (closes after
                                         the reply to DATA), counts full and resumed handshakes
  127.0.4.10:2525   postern              relay to it (PKIX against the sink's CA), with
                                         outbound.tlsResumption true and false
  127.0.4.10:8080   postern's /metrics   postern_outbound_tls_handshakes_total{kind}

`bench.py many` (bench/run.sh many): the many-destination benchmark, in many.py.
"""
import json
import os
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

N = int(os.environ.get("BENCH_MESSAGES", "5000"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SESSIONS = int(os.environ.get("BENCH_SESSIONS", "20"))
SIZE = int(os.environ.get("BENCH_SIZE", "4096"))
STALL = float(os.environ.get("BENCH_STALL", "60"))  # give up when the sink count stalls this long
LEGS = os.environ.get("BENCH_LEGS", "plain,starttls").split(",")
RELAYS = os.environ.get("BENCH_RELAYS", "postern,postfix").split(",")
KEEP = os.environ.get("BENCH_KEEP", "") not in ("", "0")
POSTERN_BIN = os.environ.get("POSTERN_BIN", "/var/cache/postern-release/release/postern")
RES_N = int(os.environ.get("BENCH_RESUMPTION_MESSAGES", "1000"))
RES_VERSIONS = os.environ.get("BENCH_TLS_VERSIONS", "1.3,1.2").split(",")

SINK_PLAIN = ("127.0.4.1", 25)
SINK_TLS = ("127.0.4.2", 25)
SINK_TLS_COUNTER = ("127.0.4.3", 10025)
POSTERN_ADDR = ("127.0.4.10", 2525)
POSTFIX_ADDR = ("127.0.4.11", 25)
SINK_ONE = ("127.0.4.4", 25)  # the resumption benchmark's sink: one message per connection
POSTERN_HTTP = ("127.0.4.10", 8080)
FROM, TO = "a@bench.test", "b@sink.test"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    pass


# ------------------------------------------------------------------ processes
def proc_start(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    f = s.rsplit(")", 1)[1].split()
    return None if f[0] in ("Z", "X") else f[19]  # a zombie is gone for our purposes


def proc_table():
    """{pid: (ppid, starttime)}"""
    t = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        f = s.rsplit(")", 1)[1].split()
        t[int(d)] = (int(f[1]), f[19])
    return t


def descendants(root, table=None):
    table = table or proc_table()
    kids = {}
    for p, (pp, _) in table.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in table:
            out.append(p)
        todo.extend(kids.get(p, []))
    return out


class Tracked:
    """A process tree we started: killed by PID (guarded by start time) on stop()."""

    def __init__(self, name, pid, stop_cmd=None, sig=signal.SIGTERM):
        self.name, self.pid, self.stop_cmd, self.sig = name, pid, stop_cmd, sig
        self.start = proc_start(pid)
        if self.start is None:
            raise Fail(f"{name} (pid {pid}) is not running")

    def alive(self):
        return self.start is not None and proc_start(self.pid) == self.start

    def stop(self):
        if not self.alive():
            return
        table = proc_table()
        victims = {p: table[p][1] for p in descendants(self.pid, table)}
        if self.stop_cmd:
            subprocess.run(self.stop_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            try:
                os.kill(self.pid, self.sig)
            except ProcessLookupError:
                pass
        for _ in range(100):
            if all(proc_start(p) != st for p, st in victims.items()):
                break
            time.sleep(0.1)
        for p, st in victims.items():
            if proc_start(p) == st:
                log(f"killing leftover pid {p} of {self.name}")
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.start = None


TRACKED = []
CHILDREN = []  # Popen objects we started directly (reaped at the end)


def spawn(name, argv, out_path, sig=signal.SIGTERM, **kw):
    f = open(out_path, "ab")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
    f.close()
    CHILDREN.append(p)
    t = Tracked(name, p.pid, sig=sig)
    TRACKED.append(t)
    return p, t


def wait_listen(addr, what, timeout=20):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(addr, timeout=1) as s:
                s.recv(512)  # the greeting
                return
        except OSError:
            time.sleep(0.1)
    raise Fail(f"{what} did not start listening on {addr[0]}:{addr[1]}")


def port_free(addr):
    import socket
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


# ------------------------------------------------------------------ sinks
def sink_count(path):
    """The last 'mesg=N' of an smtp-sink -c counter."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 200))
            tail = f.read().decode("ascii", "replace")
    except OSError:
        return 0
    m = re.findall(r"mesg=(\d+)", tail)
    return int(m[-1]) if m else 0


MASTER_CF = """\
{listen}  inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

PF_COMMON = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
maillog_file = {d}/maillog
mail_owner = postfix
setgid_group = postdrop
myhostname = {host}
mydomain = bench.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
relay_domains =
alias_maps =
alias_database =
# the smtpd listener binds its address in master.cf (Postfix refuses addresses that are
# not configured on an interface in inet_interfaces, and 127.0.4.x is only covered by lo's /8)
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_client_connection_count_limit = 0
smtpd_relay_restrictions = permit_mynetworks, reject
biff = no
"""


def postfix_instance(name, d, ip, extra):
    """Write and start a Postfix instance in directory d; return its Tracked master."""
    for sub in ("conf", "queue", "data"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    shutil.chown(f"{d}/data", "postfix")
    with open(f"{d}/conf/main.cf", "w") as f:
        f.write(f"# bench/bench.py: {name}\n")
        f.write(PF_COMMON.format(d=d, host=f"{name}.bench.test"))
        f.write(extra)
    with open(f"{d}/conf/master.cf", "w") as f:
        f.write(MASTER_CF.format(listen=f"{ip}:25"))
    r = subprocess.run(["postfix", "-c", f"{d}/conf", "start"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise Fail(f"postfix {name} failed to start: {r.stdout.decode(errors='replace')}")
    pidf = f"{d}/queue/pid/master.pid"
    for _ in range(100):
        if os.path.exists(pidf) and open(pidf).read().strip():
            break
        time.sleep(0.05)
    else:
        raise Fail(f"postfix {name}: no master.pid")
    t = Tracked(f"postfix {name}", int(open(pidf).read().strip()),
                stop_cmd=["postfix", "-c", f"{d}/conf", "stop"])
    TRACKED.append(t)
    wait_listen((ip, 25), f"postfix {name}")
    return t


def start_sinks(tmp):
    os.makedirs(f"{tmp}/sinks", exist_ok=True)
    spawn("smtp-sink plain", ["smtp-sink", "-u", "nobody", "-c", f"{SINK_PLAIN[0]}:{SINK_PLAIN[1]}", "1024"],
          f"{tmp}/sinks/plain.count", sig=signal.SIGKILL)
    spawn("smtp-sink tls-counter", ["smtp-sink", "-u", "nobody", "-c",
                                    f"{SINK_TLS_COUNTER[0]}:{SINK_TLS_COUNTER[1]}", "1024"],
          f"{tmp}/sinks/tls.count", sig=signal.SIGKILL)
    wait_listen(SINK_PLAIN, "smtp-sink (plain)")
    wait_listen(SINK_TLS_COUNTER, "smtp-sink (counter behind the STARTTLS sink)")
    key, crt = f"{tmp}/sinks/sink.key", f"{tmp}/sinks/sink.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=sink.bench.test",
                    "-addext", "subjectAltName=DNS:sink.bench.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o600)
    postfix_instance("tls-sink", f"{tmp}/pf-sink", SINK_TLS[0], f"""\
smtpd_tls_security_level = may
smtpd_tls_chain_files = {key}, {crt}
smtpd_tls_loglevel = 0
# accept with STARTTLS, queue nothing: the message goes straight to the counting smtp-sink
smtpd_proxy_filter = {SINK_TLS_COUNTER[0]}:{SINK_TLS_COUNTER[1]}
""")


# ------------------------------------------------------------------ relays
def start_postern(d, leg, data=None, http=False):
    os.makedirs(d, exist_ok=True)
    if leg == "plain":
        relay = {"host": SINK_PLAIN[0], "port": SINK_PLAIN[1], "tls": "none"}
    else:
        relay = {"host": SINK_TLS[0], "port": SINK_TLS[1], "tls": "starttls", "allowInvalidCerts": True}
    cfg = {
        "server": {"hostname": "postern.bench.test",
                   "listeners": {"smtp": {"bind": f"{POSTERN_ADDR[0]}:{POSTERN_ADDR[1]}", "protocol": "smtp"}}},
        "session": {"relayNetworks": ["127.0.0.0/8"]},
        "outbound": {"route": {"match": [], "else": "'sink'"}, "relays": {"sink": relay}},
        "storage": {"path": data or f"{d}/data"},
    }
    if http:
        cfg["server"]["listeners"]["http"] = {"bind": f"{POSTERN_HTTP[0]}:{POSTERN_HTTP[1]}",
                                              "protocol": "http"}
    with open(f"{d}/postern.json", "w") as f:
        json.dump(cfg, f, indent=1)
    _, t = spawn("postern", [POSTERN_BIN, "serve", "--config", f"{d}/postern.json"], f"{d}/postern.log")
    try:
        wait_listen(POSTERN_ADDR, "postern")
    except Fail:
        raise Fail("postern did not start; log:\n" + tail(f"{d}/postern.log"))
    return t, POSTERN_ADDR, f"{d}/postern.log"


def start_postfix_relay(d, leg):
    if leg == "plain":
        extra = f"relayhost = [{SINK_PLAIN[0]}]:{SINK_PLAIN[1]}\nsmtp_tls_security_level = none\n"
    else:
        extra = f"relayhost = [{SINK_TLS[0]}]:{SINK_TLS[1]}\nsmtp_tls_security_level = encrypt\n"
    extra += "smtpd_tls_security_level = none\n"
    t = postfix_instance("relay", d, POSTFIX_ADDR[0], extra)
    return t, POSTFIX_ADDR, f"{d}/maillog"


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


# ------------------------------------------------------------------ measurements
def make_body(size):
    hdr = f"From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: bench probe\r\n\r\n"
    line = "x" * 76 + "\r\n"
    body = hdr
    while len(body) < size:
        body += line
    return body.encode() + b".\r\n"


class Prober(threading.Thread):
    """One message per connection, back to back, while smtp-source runs: DATA-end -> 250 latency."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr, self.stop_evt = addr, threading.Event()
        self.lat, self.errors = [], 0
        self.body = make_body(SIZE)

    def run(self):
        while not self.stop_evt.is_set():
            try:
                s = smtplib.SMTP(self.addr[0], self.addr[1], local_hostname="probe.bench.test", timeout=120)
                s.ehlo()
                if s.mail(FROM)[0] != 250 or s.rcpt(TO)[0] not in (250, 251):
                    raise Fail("MAIL/RCPT refused")
                s.putcmd("data")
                if s.getreply()[0] != 354:
                    raise Fail("DATA refused")
                t0 = time.perf_counter()
                s.send(self.body)
                code, _ = s.getreply()
                t1 = time.perf_counter()
                if code != 250:
                    raise Fail(f"end of data: {code}")
                self.lat.append(t1 - t0)
                try:
                    s.quit()
                except Exception:
                    pass
            except Exception as e:
                self.errors += 1
                if self.errors <= 3:
                    log(f"probe: {e}")
                time.sleep(0.05)


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def cpu_seconds(root):
    """utime+stime of the tree, plus what its reaped children used (cutime+cstime of the root)."""
    tck = os.sysconf("SC_CLK_TCK")
    tot = 0
    for p in descendants(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fl = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tot += int(fl[11]) + int(fl[12]) + int(fl[13]) + int(fl[14])
    return tot / tck


def run_one(tmp, relay, leg, i):
    d = f"{tmp}/{relay}-{leg}-{i}"
    counter = f"{tmp}/sinks/plain.count" if leg == "plain" else f"{tmp}/sinks/tls.count"
    t, addr, logf = (start_postern if relay == "postern" else start_postfix_relay)(d, leg)
    sampler = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_sample", str(t.pid), f"{d}/rss"],
                               stdin=subprocess.DEVNULL)
    CHILDREN.append(sampler)
    TRACKED.append(Tracked("rss sampler", sampler.pid))
    try:
        time.sleep(0.3)
        c0 = sink_count(counter)
        cpu0 = cpu_seconds(t.pid)
        prober = Prober(addr)
        t0 = time.perf_counter()
        prober.start()
        src = subprocess.run(["smtp-source", "-s", str(SESSIONS), "-m", str(N), "-l", str(SIZE),
                              "-f", FROM, "-t", TO, f"{addr[0]}:{addr[1]}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t_acc = time.perf_counter() - t0
        prober.stop_evt.set()
        prober.join(130)
        if src.returncode != 0 or src.stdout.strip():
            raise Fail(f"smtp-source against {relay}: rc={src.returncode}: "
                       f"{src.stdout.decode(errors='replace')[-2000:]}\nrelay log:\n{tail(logf)}")
        total = N + len(prober.lat)
        last, last_t = sink_count(counter) - c0, time.perf_counter()
        while last < total:
            time.sleep(0.1)
            c = sink_count(counter) - c0
            now = time.perf_counter()
            if c != last:
                last, last_t = c, now
            elif now - last_t > STALL:
                raise Fail(f"{relay}/{leg}: the sink has {c} of {total} messages and nothing moved for "
                           f"{STALL:.0f} s\nrelay log:\n{tail(logf)}")
        t_e2e = time.perf_counter() - t0
        cpu = cpu_seconds(t.pid) - cpu0
    finally:
        sampler.send_signal(signal.SIGTERM)
        try:
            sampler.wait(10)
        except subprocess.TimeoutExpired:
            sampler.kill()
        t.stop()
    with open(f"{d}/rss") as f:
        rss, pss, nproc = (int(x) for x in f.read().split())
    if last > total:
        log(f"note: the sink counted {last - total} more than sent (duplicates?)")
    r = {
        "accept_rate": total / t_acc,
        "e2e_rate": total / t_e2e,
        "p50_ms": percentile(prober.lat, 50) * 1000,
        "p99_ms": percentile(prober.lat, 99) * 1000,
        "rss_mib": rss / 1024,
        "pss_mib": pss / 1024,
        "cpu_s": cpu,
        "t_acc": t_acc, "t_e2e": t_e2e, "probes": len(prober.lat), "probe_errors": prober.errors,
        "max_procs": nproc,
    }
    log(f"{relay:7s} {leg:8s} run {i}: accepted {total} in {t_acc:.2f} s ({r['accept_rate']:.0f}/s), "
        f"sink complete after {t_e2e:.2f} s ({r['e2e_rate']:.0f}/s), probe p50 {r['p50_ms']:.1f} ms "
        f"p99 {r['p99_ms']:.1f} ms (n={len(prober.lat)}, errors {prober.errors}), peak RSS "
        f"{r['rss_mib']:.1f} MiB (PSS {r['pss_mib']:.1f}) in <= {nproc} procs, CPU {cpu:.1f} s")
    if not KEEP:
        shutil.rmtree(d, ignore_errors=True)
    return r


def sample_main(root, out):
    """Subprocess: every 100 ms sum VmRSS (and Pss) over root and its descendants; write the peaks."""
    root = int(root)
    peak = [0, 0, 0]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        rss = pss = 0
        procs = descendants(root)
        for p in procs:
            try:
                with open(f"/proc/{p}/status") as f:
                    m = re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M)
                rss += int(m.group(1)) if m else 0
                with open(f"/proc/{p}/smaps_rollup") as f:
                    m = re.search(r"^Pss:\s+(\d+)", f.read(), re.M)
                pss += int(m.group(1)) if m else 0
            except OSError:
                pass
        peak = [max(peak[0], rss), max(peak[1], pss), max(peak[2], len(procs))]
        time.sleep(0.1)
    with open(out, "w") as f:
        f.write(f"{peak[0]} {peak[1]} {peak[2]}\n")


# ------------------------------------------------------------------ deep queue
DEEP_N = int(os.environ.get("BENCH_DEEP", "1000000"))
DEEP_SIZE = int(os.environ.get("BENCH_DEEP_SIZE", "1024"))
DEEP_DIR = os.environ.get("BENCH_DEEP_DIR", "/var/tmp/postern-deep")
# The deep queue's next attempts lie between DEEP_DELAY and DEEP_DELAY + a day after its fill, and a
# kept queue is used for at most FILL_MAX_AGE: nothing of it may fall due while it is measured (a
# queue kept across invocations with next attempts from an hour on once did, and the relays were
# measured delivering and deferring it).
DEEP_DELAY = 86400
FILL_MAX_AGE = 12 * 3600
PF_DEEP_DIR = os.environ.get("BENCH_PF_DEEP_DIR", "/var/tmp/postfix-deep")
IDLE = float(os.environ.get("BENCH_IDLE", "60"))
DRAIN_N = int(os.environ.get("BENCH_DRAIN", "100000"))
FILL_BIN = os.environ.get("BENCH_FILL_BIN", POSTERN_BIN)  # a postern with `fill-queue`


def fill(data, count, *extra):
    t0 = time.perf_counter()
    subprocess.run([FILL_BIN, "fill-queue", data, "--count", str(count), "--size", str(DEEP_SIZE), *extra],
                   check=True, stdin=subprocess.DEVNULL)
    log(f"filled {data} with {count} messages in {time.perf_counter() - t0:.0f} s")


def first_220(addr, t0, timeout=120):
    """Seconds from t0 until the server at addr sends its 220 greeting."""
    import socket
    while time.perf_counter() - t0 < timeout:
        try:
            with socket.create_connection(addr, timeout=5) as c:
                if c.recv(512).startswith(b"220"):
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.005)
    raise Fail(f"no 220 from {addr} within {timeout} s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def rss_tree_kib(pid):
    """VmRSS summed over pid and its descendants (Postfix is many processes)."""
    tot = 0
    for p in descendants(pid):
        try:
            tot += rss_kib(p)
        except (OSError, AttributeError):
            pass
    return tot


def start_deep_relay(relay, d, data):
    """postern on the store `data`, or Postfix on the queue directory `data` (see pf_fill)."""
    if relay == "postern":
        return start_postern(d, "plain", data=data, http=True)
    t = postfix_instance("relay", data, POSTFIX_ADDR[0], pf_deep_extra(SINK_PLAIN))
    return t, POSTFIX_ADDR, f"{data}/maillog"


def deep_one(tmp, name, data, relay="postern"):
    """The relay on the store (postern) or queue directory (Postfix) at `data`: start to first 220,
    RSS and CPU while idle, then the relay load of `run_one` (plain leg) and its peak RSS."""
    d = f"{tmp}/{name}"
    os.makedirs(d, exist_ok=True)
    addr = POSTERN_ADDR if relay == "postern" else POSTFIX_ADDR
    # Postfix's log in a kept queue directory holds earlier invocations' lines: check only ours
    pf_log = f"{data}/maillog"
    log_from = os.path.getsize(pf_log) if relay == "postfix" and os.path.exists(pf_log) else 0
    t0 = time.perf_counter()
    # the start helpers wait for the listener themselves; time the greeting from our own spawn instead
    holder = {}

    def go():
        holder["t"] = start_deep_relay(relay, d, data)
    th = threading.Thread(target=go, daemon=True)
    th.start()
    t220 = first_220(addr, t0)
    th.join(120)
    if "t" not in holder:
        raise Fail(f"{relay} did not start within 120 s")
    t, addr, logf = holder["t"]
    time.sleep(2)
    rss0 = rss_tree_kib(t.pid)
    cpu0 = cpu_seconds(t.pid)
    time.sleep(IDLE)
    idle_cpu = (cpu_seconds(t.pid) - cpu0) / IDLE
    rss_idle = rss_tree_kib(t.pid)
    counter = f"{tmp}/sinks/plain.count"
    sampler = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_sample", str(t.pid), f"{d}/rss"],
                               stdin=subprocess.DEVNULL)
    CHILDREN.append(sampler)
    TRACKED.append(Tracked("rss sampler", sampler.pid))
    try:
        c0 = sink_count(counter)
        cpu1 = cpu_seconds(t.pid)
        t1 = time.perf_counter()
        src = subprocess.run(["smtp-source", "-s", str(SESSIONS), "-m", str(N), "-l", str(SIZE),
                              "-f", FROM, "-t", TO, f"{addr[0]}:{addr[1]}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t_acc = time.perf_counter() - t1
        if src.returncode != 0 or src.stdout.strip():
            raise Fail(f"smtp-source: rc={src.returncode}: {src.stdout.decode(errors='replace')[-2000:]}")
        wait_sink(counter, c0, N, logf)
        t_e2e = time.perf_counter() - t1
        cpu = cpu_seconds(t.pid) - cpu1
        metrics = http_get(POSTERN_HTTP, "/metrics") if relay == "postern" else ""
        untouched_deep_queue(relay, metrics, logf, log_from, c0, counter)
    finally:
        sampler.send_signal(signal.SIGTERM)
        try:
            sampler.wait(10)
        except subprocess.TimeoutExpired:
            sampler.kill()
        t.stop()
    with open(f"{d}/rss") as f:
        rss, pss, _ = (int(x) for x in f.read().split())
    syncs = re.search(r"^postern_store_wal_syncs_total (\d+)", metrics, re.M)
    writes = re.search(r"^postern_store_synced_writes_total (\d+)", metrics, re.M)
    r = {"t220_s": t220, "rss_idle_mib": rss_idle / 1024, "rss_start_mib": rss0 / 1024,
         "idle_cpu_pct": idle_cpu * 100, "accept_rate": N / t_acc, "e2e_rate": N / t_e2e,
         "rss_load_mib": rss / 1024, "pss_load_mib": pss / 1024, "cpu_s": cpu,
         "wal_syncs": int(syncs.group(1)) if syncs else None,
         "synced_writes": int(writes.group(1)) if writes else None}
    log(f"{relay} {name}: first 220 after {t220:.3f} s, RSS {rss0 / 1024:.1f} MiB at start, {rss_idle / 1024:.1f} "
        f"after {IDLE:.0f} s idle, idle CPU {idle_cpu * 100:.2f} %; {N} msgs accepted at {r['accept_rate']:.0f}/s, "
        f"delivered at {r['e2e_rate']:.0f}/s, peak RSS {rss / 1024:.1f} MiB, CPU {cpu:.1f} s, "
        f"WAL syncs {r['wal_syncs']}")
    return r


def wait_sink(counter, c0, total, logf):
    last, last_t = sink_count(counter) - c0, time.perf_counter()
    while last < total:
        time.sleep(0.05)
        c = sink_count(counter) - c0
        now = time.perf_counter()
        if c != last:
            last, last_t = c, now
        elif now - last_t > STALL:
            raise Fail(f"the sink has {c} of {total} messages and nothing moved for {STALL:.0f} s\n"
                       f"log:\n{tail(logf)}")


def http_get(addr, path):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}{path}", timeout=10) as r:
            return r.read().decode(errors="replace")
    except Exception as e:
        log(f"GET {path}: {e}")
        return ""


def sink_capacity(tmp):
    """The plain sink's own rate: smtp-source straight into it, with as many sessions as postern
    opens to one destination (outbound.perDomainConcurrency, 8)."""
    counter = f"{tmp}/sinks/plain.count"
    c0 = sink_count(counter)
    t0 = time.perf_counter()
    subprocess.run(["smtp-source", "-s", "8", "-m", str(min(DRAIN_N, 50000)), "-l", str(DEEP_SIZE),
                    "-f", FROM, "-t", TO, f"{SINK_PLAIN[0]}:{SINK_PLAIN[1]}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    n = sink_count(counter) - c0
    return n / (time.perf_counter() - t0)


def drain_one(tmp):
    """DRAIN_N messages, all due at once (as after an outage): start postern on them and time
    until the sink has them all."""
    d = f"{tmp}/drain"
    data = f"{d}/data"
    os.makedirs(d, exist_ok=True)
    fill(data, DRAIN_N, "--recipient", TO, "--min-delay", "0", "--spread", "0")
    return timed_drain(tmp, d, "postern", lambda: start_postern(d, "plain", data=data))


def timed_drain(tmp, d, relay, start):
    """Starts a relay on its filled backlog (`start` returns its Tracked, address and log) and
    times it, from the start, until the sink has all DRAIN_N; removes `d` afterwards."""
    counter = f"{tmp}/sinks/plain.count"
    c0 = sink_count(counter)
    t0 = time.perf_counter()
    t, _, logf = start()
    try:
        cpu0 = cpu_seconds(t.pid)
        wait_sink(counter, c0, DRAIN_N, logf)
        el = time.perf_counter() - t0
        cpu = cpu_seconds(t.pid) - cpu0
    finally:
        t.stop()
    shutil.rmtree(d, ignore_errors=True)
    log(f"{relay} drain: {DRAIN_N} in {el:.1f} s = {DRAIN_N / el:.0f}/s, {relay} CPU {cpu:.1f} s")
    return {"drain_rate": DRAIN_N / el, "drain_s": el, "cpu_s": cpu}


# ------------------------------------------------------------------ Postfix's deferred queue
PF_DOWN = ("127.0.4.99", 25)  # nothing listens here: the destination that is down
DOWN_RCPT = "b@down.test"


def pf_deep_extra(relayhost):
    """Postfix relaying to `relayhost`, with down.test (the deep queue's domain) routed to PF_DOWN."""
    return (f"relayhost = [{relayhost[0]}]:{relayhost[1]}\n"
            f"transport_maps = inline:{{ {{down.test = smtp:[{PF_DOWN[0]}]:{PF_DOWN[1]}}} }}\n"
            "smtp_tls_security_level = none\nsmtpd_tls_security_level = none\n")


def pf_templates(tmp):
    """A deferred queue file for each of DOWN_RCPT and TO, written by Postfix itself: one message
    each through a Postfix whose every destination is down (connection refused)."""
    d = f"{tmp}/pf-template"
    t = postfix_instance("relay", d, POSTFIX_ADDR[0], pf_deep_extra(PF_DOWN))
    try:
        for rcpt in (DOWN_RCPT, TO):
            subprocess.run(["smtp-source", "-m", "1", "-l", str(DEEP_SIZE), "-f", FROM, "-t", rcpt,
                            f"{POSTFIX_ADDR[0]}:{POSTFIX_ADDR[1]}"], check=True, stdin=subprocess.DEVNULL)
        files = []
        for _ in range(600):
            files = [os.path.join(r, f) for r, _, fs in os.walk(f"{d}/queue/deferred") for f in fs]
            if len(files) == 2:
                break
            time.sleep(0.05)
        else:
            raise Fail(f"Postfix did not defer the two template messages:\n{tail(f'{d}/maillog')}")
        out = {}
        for path in files:
            with open(path, "rb") as f:
                body = f.read()
            out[DOWN_RCPT if DOWN_RCPT.encode() in body else TO] = body
    finally:
        t.stop()
    shutil.rmtree(d, ignore_errors=True)
    return out


def pf_fill(inst, template, count, due):
    """`count` copies of a deferred queue file in the Postfix instance directory `inst`, named as
    Postfix names them (5 hex digits of microseconds, then the inode number in hex, so that
    `postsuper` at start finds nothing to rename) in the hashed `deferred/X/` directories; the
    file's modification time is Postfix's next-attempt time: a minute ago when `due`, else spread
    over a day from DEEP_DELAY on, like the postern queue of `fill-queue`."""
    import pwd
    import random
    pw = pwd.getpwnam("postfix")
    deferred = f"{inst}/queue/deferred"
    for sub in [""] + list("0123456789ABCDEF"):
        os.makedirs(f"{deferred}/{sub}", exist_ok=True)
        os.chown(f"{deferred}/{sub}", pw.pw_uid, pw.pw_gid)
        os.chmod(f"{deferred}/{sub}", 0o700)
    t0, now = time.perf_counter(), time.time()
    scratch = f"{deferred}/.filling"
    for i in range(count):
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        os.write(fd, template)
        os.fchown(fd, pw.pw_uid, pw.pw_gid)
        ino = os.fstat(fd).st_ino
        os.close(fd)
        when = now - 60 if due else now + DEEP_DELAY + 86400 * i / count
        os.utime(scratch, (when, when))
        qid = f"{random.randrange(1000000):05X}{ino:X}"
        os.rename(scratch, f"{deferred}/{qid[0]}/{qid}")
    os.sync()
    log(f"filled {deferred} with {count} queue files in {time.perf_counter() - t0:.0f} s")


def pf_drain_one(tmp, template):
    """Postfix's side of drain_one: DRAIN_N deferred queue files due for the sink, Postfix started
    on them and told to flush (`postqueue -f`, as after an outage); timed until the sink has all."""
    d = f"{tmp}/pf-drain"
    pf_fill(d, template, DRAIN_N, due=True)

    def start():
        t = postfix_instance("relay", d, POSTFIX_ADDR[0], pf_deep_extra(SINK_PLAIN))
        subprocess.run(["postqueue", "-c", f"{d}/conf", "-f"], check=True, stdin=subprocess.DEVNULL)
        return t, POSTFIX_ADDR, f"{d}/maillog"
    return timed_drain(tmp, d, "postfix", start)


# ------------------------------------------------------------------ deep: the whole mode
DEEP_RELAYS = os.environ.get("BENCH_DEEP_RELAYS", "postern,postfix").split(",")


def filled_at(path):
    """When the deep queue at `path` was filled (its `.filled` holds the time), or None."""
    try:
        with open(f"{path}/.filled") as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return None


def deep_store(relay, templates):
    """The filled deep queue of `relay`, kept between invocations while younger than FILL_MAX_AGE
    (so that none of it falls due during an invocation), else filled anew."""
    path = f"{DEEP_DIR}-{DEEP_N}" if relay == "postern" else f"{PF_DEEP_DIR}-{DEEP_N}"
    at = filled_at(path)
    if at is None or time.time() - at > FILL_MAX_AGE:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        if relay == "postern":
            fill(f"{path}/data", DEEP_N, "--recipient", DOWN_RCPT, "--min-delay", str(DEEP_DELAY))
        else:
            pf_fill(path, templates[DOWN_RCPT], DEEP_N, due=False)
        with open(f"{path}/.filled", "w") as f:
            f.write(f"{time.time():.0f}\n")
    else:
        log(f"deep queue of {relay}: kept from {(time.time() - at) / 3600:.1f} h ago")
    return f"{path}/data" if relay == "postern" else path


def untouched_deep_queue(relay, metrics, logf, log_from, c0, counter):
    """Fails the run when the relay attempted anything but the measured load: a deep queue that
    fell due would be measured as delivering or deferring, not as lying in the queue. postern:
    its deliveries (any status) are exactly the load's, and so is the sink's count; Postfix: its
    log names no recipient of the deep queue."""
    if relay == "postern":
        attempts = sum(int(v) for v in re.findall(r"^postern_deliveries_total\{[^}]*\} (\d+)", metrics, re.M))
        extra = sink_count(counter) - c0 - N
        if attempts != N or extra:
            raise Fail(f"postern made {attempts} delivery attempts for {N} messages and the sink has {extra} "
                       "more: the deep queue fell due during the run")
    else:
        with open(logf, "rb") as f:
            f.seek(log_from)
            if f"to=<{DOWN_RCPT}>".encode() in f.read():
                raise Fail(f"Postfix attempted the deep queue ({DOWN_RCPT}) during the run: it fell due")


def deep_main(tmp):
    start_sinks(tmp)
    out = {}
    phases = os.environ.get("BENCH_DEEP_PHASES", "empty,deep,drain").split(",")
    templates = pf_templates(tmp) if "postfix" in DEEP_RELAYS else {}
    stores = {r: deep_store(r, templates) for r in DEEP_RELAYS if "deep" in phases}
    for i in range(1, RUNS + 1):  # interleaved: each relay empty then deep, run after run
        for relay in DEEP_RELAYS:
            if "empty" in phases:
                empty = f"{tmp}/{relay}-empty-{i}/data" if relay == "postern" else f"{tmp}/{relay}-empty-{i}/pf"
                out.setdefault(f"{relay}/empty", []).append(deep_one(tmp, f"empty-{i}", empty, relay))
            if "deep" in phases:
                out.setdefault(f"{relay}/deep", []).append(deep_one(tmp, f"deep-{i}", stores[relay], relay))
    if "drain" in phases:
        out["sink"] = [{"rate": sink_capacity(tmp)}]
        log(f"sink capacity (8 sessions): {out['sink'][0]['rate']:.0f}/s")
        for i in range(1, RUNS + 1):
            for relay in DEEP_RELAYS:
                r = drain_one(tmp) if relay == "postern" else pf_drain_one(tmp, templates[TO])
                out.setdefault(f"{relay}/drain", []).append(r)
    return out


def med_range(xs):
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]"


def deep_report(res):
    lines = [f"deep queue: {DEEP_N} deferred messages of {DEEP_SIZE} B; load {N} x {SIZE} B, "
             f"{SESSIONS} sessions; median [min-max] of {RUNS} runs", ""]
    keys = (("t220_s", "start to first 220 (s)"), ("rss_idle_mib", "RSS idle, sum (MiB)"),
            ("idle_cpu_pct", "idle CPU (%)"), ("accept_rate", "accept rate (msg/s)"),
            ("e2e_rate", "delivery rate to the sink (msg/s)"), ("rss_load_mib", "peak RSS under load, sum (MiB)"),
            ("pss_load_mib", "peak PSS under load, sum (MiB)"), ("cpu_s", "CPU under load (s)"))
    relays = [r for r in DEEP_RELAYS if f"{r}/empty" in res and f"{r}/deep" in res]
    if relays:
        head = "| metric | " + " | ".join(f"{r}: empty | {r}: deep | {r}: deep/empty" for r in relays) + " |"
        lines += [head, "|" + " --- |" * (1 + 3 * len(relays))]
        for key, name in keys:
            cells = []
            for r in relays:
                e = [x[key] for x in res[f"{r}/empty"]]
                dd = [x[key] for x in res[f"{r}/deep"]]
                me, md = statistics.median(e), statistics.median(dd)
                cells += [med_range(e), med_range(dd), f"{md / me:.2f}" if me else "-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for k in ("postern/empty", "postern/deep"):
        for r in res.get(k, []):
            if r.get("wal_syncs") is not None:
                lines.append(f"\n{k}: {r['wal_syncs']} WAL syncs for {r['synced_writes']} synced writes "
                             f"({N} messages accepted and delivered): {r['wal_syncs'] / N:.2f} syncs per "
                             f"message, {r['wal_syncs'] / max(r['synced_writes'], 1):.2f} per synced write")
    if "sink" in res:
        s = res["sink"][0]["rate"]
        lines += ["", f"drain: {DRAIN_N} due at once; the sink alone (smtp-source, 8 sessions): {s:.0f} msg/s", "",
                  "| relay | drain rate (msg/s) | drain / sink | CPU (s) |", "| --- | --- | --- | --- |"]
        for r in DEEP_RELAYS:
            runs = res.get(f"{r}/drain", [])
            if runs:
                rates = [x["drain_rate"] for x in runs]
                lines.append(f"| {r} | {med_range(rates)} | {statistics.median(rates) / s:.2f} | "
                             f"{med_range([x['cpu_s'] for x in runs])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ resumption
def tls_sink_main(host, port, cert, key, out, version):
    """Subprocess: a STARTTLS sink that takes one message per connection and then closes it, so
    that every message needs a new connection and a new TLS handshake. Appends
    `mesg=N full=F resumed=R` to `out` after each message (R: handshakes OpenSSL resumed)."""
    import socket
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    lock = threading.Lock()
    st = {"mesg": 0, "full": 0, "resumed": 0}
    outf = open(out, "a", buffering=1)
    srv = socket.create_server((host, int(port)), backlog=512)

    class Lines:
        def __init__(self, sock):
            self.sock, self.buf = sock, b""

        def line(self):
            while b"\n" not in self.buf:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            return line.rstrip(b"\r")

    def handle(sock):
        try:
            sock.sendall(b"220 sink.bench.test ESMTP\r\n")
            r = Lines(sock)
            r.line()  # EHLO
            sock.sendall(b"250-sink.bench.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            if not r.line().upper().startswith(b"STARTTLS") or r.buf:
                return
            sock.sendall(b"220 2.0.0 go ahead\r\n")
            tls = ctx.wrap_socket(sock, server_side=True)
            with lock:
                st["resumed" if tls.session_reused else "full"] += 1
            r = Lines(tls)
            while True:
                cmd = r.line().upper()
                if cmd.startswith((b"EHLO", b"HELO")):
                    tls.sendall(b"250-sink.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif cmd.startswith((b"MAIL", b"RCPT", b"RSET", b"NOOP")):
                    tls.sendall(b"250 2.0.0 ok\r\n")
                elif cmd.startswith(b"DATA"):
                    tls.sendall(b"354 go ahead\r\n")
                    while r.line() != b".":
                        pass
                    tls.sendall(b"250 2.0.0 taken; closing\r\n")
                    with lock:
                        st["mesg"] += 1
                        outf.write(f"mesg={st['mesg']} full={st['full']} resumed={st['resumed']}\n")
                    return
                elif cmd.startswith(b"QUIT"):
                    tls.sendall(b"221 bye\r\n")
                    return
                else:
                    tls.sendall(b"502 5.5.2 no\r\n")
        except (OSError, EOFError, ssl.SSLError):
            pass
        finally:
            sock.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def sink_stats(path):
    """(messages, full, resumed) of the last line of the resumption sink."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 200))
            tail_ = f.read().decode("ascii", "replace")
    except OSError:
        return 0, 0, 0
    m = re.findall(r"mesg=(\d+) full=(\d+) resumed=(\d+)", tail_)
    return tuple(int(x) for x in m[-1]) if m else (0, 0, 0)


def handshake_counts():
    """postern's postern_outbound_tls_handshakes_total by kind, from /metrics."""
    import socket
    with socket.create_connection(POSTERN_HTTP, timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        text = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            text += data
    counts = {"full": 0, "resumed": 0}
    for kind, n in re.findall(r'postern_outbound_tls_handshakes_total\{kind="(\w+)"\} (\d+)',
                              text.decode(errors="replace")):
        counts[kind] = int(n)
    return counts


def sink_pki(tmp):
    """A CA and the sink's certificate (IP SAN 127.0.4.4: postern checks the relay by its address)."""
    d = f"{tmp}/pki"
    os.makedirs(d, exist_ok=True)

    def run(*argv):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("openssl", "req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "30",
        "-subj", "/CN=bench CA")
    run("openssl", "req", *ec, "-keyout", f"{d}/sink.key", "-out", f"{d}/sink.csr",
        "-subj", "/CN=sink.bench.test")
    with open(f"{d}/ext", "w") as f:
        f.write(f"subjectAltName=IP:{SINK_ONE[0]},DNS:sink.bench.test\n"
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{d}/sink.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-out", f"{d}/sink.pem", "-days", "30", "-extfile", f"{d}/ext")
    with open(f"{d}/sink.pem") as a, open(f"{d}/ca.pem") as b, open(f"{d}/chain.pem", "w") as c:
        c.write(a.read() + b.read())
    return f"{d}/ca.pem", f"{d}/chain.pem", f"{d}/sink.key"


def start_postern_resumption(d, resumption, ca):
    os.makedirs(d, exist_ok=True)
    cfg = {
        "server": {"hostname": "postern.bench.test",
                   "listeners": {"smtp": {"bind": f"{POSTERN_ADDR[0]}:{POSTERN_ADDR[1]}", "protocol": "smtp"},
                                 "http": {"bind": f"{POSTERN_HTTP[0]}:{POSTERN_HTTP[1]}", "protocol": "http"}}},
        "session": {"relayNetworks": ["127.0.0.0/8"]},
        "outbound": {"route": {"match": [], "else": "'sink'"},
                     "relays": {"sink": {"host": SINK_ONE[0], "port": SINK_ONE[1], "tls": "starttls"}},
                     "caFile": ca, "tlsResumption": resumption},
        "storage": {"path": data or f"{d}/data"},
    }
    if http:
        cfg["server"]["listeners"]["http"] = {"bind": f"{POSTERN_HTTP[0]}:{POSTERN_HTTP[1]}",
                                              "protocol": "http"}
    with open(f"{d}/postern.json", "w") as f:
        json.dump(cfg, f, indent=1)
    _, t = spawn("postern", [POSTERN_BIN, "serve", "--config", f"{d}/postern.json"], f"{d}/postern.log")
    try:
        wait_listen(POSTERN_ADDR, "postern")
    except Fail:
        raise Fail("postern did not start; log:\n" + tail(f"{d}/postern.log"))
    return t, f"{d}/postern.log"


def run_resumption_one(tmp, version, resumption, i, ca, counter):
    d = f"{tmp}/resumption-{version}-{resumption}-{i}"
    t, logf = start_postern_resumption(d, resumption, ca)
    try:
        time.sleep(0.3)
        m0, f0, r0 = sink_stats(counter)
        cpu0 = cpu_seconds(t.pid)
        t0 = time.perf_counter()
        src = subprocess.run(["smtp-source", "-s", str(SESSIONS), "-m", str(RES_N), "-l", str(SIZE),
                              "-f", FROM, "-t", TO, f"{POSTERN_ADDR[0]}:{POSTERN_ADDR[1]}"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if src.returncode != 0 or src.stdout.strip():
            raise Fail(f"smtp-source: rc={src.returncode}: {src.stdout.decode(errors='replace')[-2000:]}")
        last, last_t = 0, time.perf_counter()
        while last < RES_N:
            time.sleep(0.1)
            c = sink_stats(counter)[0] - m0
            now = time.perf_counter()
            if c != last:
                last, last_t = c, now
            elif now - last_t > STALL:
                raise Fail(f"resumption {version}/{resumption}: the sink has {c} of {RES_N} messages "
                           f"and nothing moved for {STALL:.0f} s\nrelay log:\n{tail(logf)}")
        t_e2e = time.perf_counter() - t0
        cpu = cpu_seconds(t.pid) - cpu0
        hs = handshake_counts()
        m1, f1, r1 = sink_stats(counter)
    finally:
        t.stop()
    n = hs["full"] + hs["resumed"]
    r = {
        "messages": last, "full": hs["full"], "resumed": hs["resumed"],
        "handshakes_per_msg": n / last, "resumed_share": hs["resumed"] / n if n else 0.0,
        "cpu_ms_per_msg": cpu * 1000 / last, "cpu_s": cpu, "e2e_rate": last / t_e2e,
        "sink_full": f1 - f0, "sink_resumed": r1 - r0,
    }
    log(f"TLS {version} resumption {'on ' if resumption else 'off'} run {i}: {last} messages in "
        f"{t_e2e:.2f} s ({r['e2e_rate']:.0f}/s), handshakes full {hs['full']} resumed {hs['resumed']} "
        f"(sink: full {r['sink_full']} resumed {r['sink_resumed']}), postern CPU {cpu:.2f} s = "
        f"{r['cpu_ms_per_msg']:.3f} ms/msg")
    if not KEEP:
        shutil.rmtree(d, ignore_errors=True)
    return r


def resumption_main(tmp):
    """TLS 1.3 and 1.2, resumption on and off, interleaved RUNS times."""
    ca, chain, key = sink_pki(tmp)
    results = {}
    for version in RES_VERSIONS:
        counter = f"{tmp}/sink-one-{version}.count"
        p, t = spawn(f"tls sink {version}", [sys.executable, os.path.abspath(__file__), "_tls_sink",
                                             SINK_ONE[0], str(SINK_ONE[1]), chain, key, counter, version],
                     f"{tmp}/sink-one-{version}.log")
        wait_listen(SINK_ONE, f"the TLS sink ({version})")
        try:
            for i in range(1, RUNS + 1):
                for resumption in (True, False):
                    results.setdefault((version, resumption), []).append(
                        run_resumption_one(tmp, version, resumption, i, ca, counter))
        finally:
            t.stop()
    return results


def resumption_report(results):
    out = [f"{RES_N} messages x {SIZE} B per run, {SESSIONS} smtp-source sessions, every message on a new "
           f"connection (the sink closes after one), PKIX-verified relay; {RUNS} runs each; "
           "median [min-max]\n",
           "| TLS | resumption | handshakes per message | resumed (postern / sink) | postern CPU per message (ms) "
           "| end-to-end (msg/s) |",
           "| --- | --- | --- | --- | --- | --- |"]
    med = {}
    order = {v: i for i, v in enumerate(RES_VERSIONS)}
    for (version, resumption), rs in sorted(results.items(), key=lambda kv: (order.get(kv[0][0], 9),
                                                                             not kv[0][1])):
        def cell(key):
            xs = [r[key] for r in rs]
            return statistics.median(xs), f"{fmt(statistics.median(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]"
        cpu, cpu_s = cell("cpu_ms_per_msg")
        med[(version, resumption)] = cpu
        hs = cell("handshakes_per_msg")[1]
        share = statistics.median(r["resumed_share"] for r in rs) * 100
        sink = statistics.median(r["sink_resumed"] / max(1, r["sink_full"] + r["sink_resumed"]) for r in rs) * 100
        out.append(f"| {version} | {'on' if resumption else 'off'} | {hs} | {share:.0f} % / {sink:.0f} % "
                   f"| {cpu_s} | {cell('e2e_rate')[1]} |")
    out.append("")
    for version in RES_VERSIONS:
        on, off = med.get((version, True)), med.get((version, False))
        if on and off:
            out.append(f"- TLS {version}: resumption saves {off - on:.3f} ms of postern CPU per message "
                       f"({(off - on) / off * 100:.0f} % of the per-message total)")
    return "\n".join(out)


# ------------------------------------------------------------------ report
METRICS = [  # key, label, better
    ("accept_rate", "accept rate (msg/s)", "higher"),
    ("e2e_rate", "end-to-end rate (msg/s)", "higher"),
    ("p50_ms", "p50 accept latency (ms)", "lower"),
    ("p99_ms", "p99 accept latency (ms)", "lower"),
    ("rss_mib", "peak RSS, sum (MiB)", "lower"),
    ("pss_mib", "peak PSS, sum (MiB)", "lower"),
    ("cpu_s", "CPU time (s)", "lower"),
]


def fmt(x):
    if x != x:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def report(results):
    out = []
    out.append(f"{N} messages x {SIZE} B, {SESSIONS} smtp-source sessions (+1 latency probe session), "
               f"{RUNS} runs each; median [min-max]\n")
    for leg in LEGS:
        out.append(f"\n### outbound leg: {leg}\n")
        out.append("| metric | postern | Postfix | postern/Postfix |")
        out.append("| --- | --- | --- | --- |")
        for key, label, _ in METRICS:
            cells, med = [], {}
            for relay in ("postern", "postfix"):
                xs = [r[key] for r in results.get((relay, leg), [])]
                if xs:
                    med[relay] = statistics.median(xs)
                    cells.append(f"{fmt(med[relay])} [{fmt(min(xs))}-{fmt(max(xs))}]")
                else:
                    cells.append("-")
            ratio = (f"{med['postern'] / med['postfix']:.2f}"
                     if "postern" in med and "postfix" in med and med["postfix"] else "-")
            out.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    # targets of issue 11
    def med(relay, leg, key):
        xs = [r[key] for r in results.get((relay, leg), [])]
        return statistics.median(xs) if xs else None
    if "starttls" in LEGS and all(med(r, "starttls", "e2e_rate") for r in ("postern", "postfix")):
        out.append("\n### targets (issue 11, STARTTLS outbound leg)\n")
        e = med("postern", "starttls", "e2e_rate") / med("postfix", "starttls", "e2e_rate")
        p = med("postern", "starttls", "p99_ms") / med("postfix", "starttls", "p99_ms")
        m = med("postern", "starttls", "rss_mib") / med("postfix", "starttls", "rss_mib")
        out.append(f"- end-to-end >= 2x Postfix: {e:.2f}x -> {'MET' if e >= 2 else 'NOT MET'}")
        out.append(f"- p99 accept latency <= Postfix: {p:.2f}x -> {'MET' if p <= 1 else 'NOT MET'}")
        out.append(f"- peak RSS <= 1/2 Postfix: {m:.2f}x -> {'MET' if m <= 0.5 else 'NOT MET'}")
    return "\n".join(out)


def main():
    if os.geteuid() != 0:
        sys.exit("bench: needs root (ports 25 on 127.0.4.x, Postfix instances)")
    if "postern" in RELAYS and not os.access(POSTERN_BIN, os.X_OK):
        sys.exit(f"bench: no postern binary at {POSTERN_BIN} (set POSTERN_BIN)")
    mode = sys.argv[1] if len(sys.argv) > 1 else "relays"
    if mode not in ("relays", "resumption", "deep", "many"):
        sys.exit(f"bench: unknown mode {mode!r} (relays, resumption, deep, many)")
    if mode == "many":
        # many.py does `import bench`: let that be this module (one TRACKED list, one Fail class)
        sys.modules.setdefault("bench", sys.modules[__name__])
        import many
    addrs = (many.ADDRS if mode == "many"
             else (SINK_PLAIN, SINK_TLS, SINK_TLS_COUNTER, POSTERN_ADDR, POSTFIX_ADDR) if mode == "relays"
             else (SINK_PLAIN, SINK_TLS, SINK_TLS_COUNTER, POSTERN_ADDR, POSTERN_HTTP, POSTFIX_ADDR) if mode == "deep"
             else (SINK_ONE, POSTERN_ADDR, POSTERN_HTTP))
    busy = [a for a in addrs if not port_free(a)]
    if busy:
        sys.exit(f"bench: already in use: {busy} (another bench still running?)")
    tmp = tempfile.mkdtemp(prefix="postern-bench.", dir="/var/tmp")  # on disk, not tmpfs
    os.chmod(tmp, 0o755)  # Postfix daemons drop privileges and must traverse it

    def on_signal(signum, _):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    results, rc = {}, 0
    t_start = time.time()
    try:
        if mode == "many":
            results = many.main(tmp)
        elif mode == "resumption":
            log(f"work dir {tmp}; resumption: {RES_N} messages, {RUNS} runs, TLS {RES_VERSIONS}")
            results = resumption_main(tmp)
        elif mode == "deep":
            log(f"work dir {tmp}; deep queue {DEEP_N}, {N} messages, {RUNS} runs")
            results = deep_main(tmp)
        else:
            log(f"work dir {tmp}; {N} messages, {RUNS} runs, legs {LEGS}, relays {RELAYS}")
            start_sinks(tmp)
            for i in range(1, RUNS + 1):
                for leg in LEGS:
                    for relay in RELAYS:
                        results.setdefault((relay, leg), []).append(run_one(tmp, relay, leg, i))
    except Fail as e:
        log(f"error: {e}")
        rc = 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        rc = 130
    finally:
        for t in reversed(TRACKED):
            t.stop()
        for p in CHILDREN:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if KEEP:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if results:
        with open(os.environ.get("BENCH_JSON", os.devnull), "w") as f:
            json.dump(results if mode in ("deep", "many") else {f"{k[0]}/{k[1]}": v for k, v in results.items()},
                      f, indent=1)
        print(many.report(results) if mode == "many"
              else resumption_report(results) if mode == "resumption"
              else deep_report(results) if mode == "deep" else report(results))
    log(f"total {time.time() - t_start:.0f} s")
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_sample":
        sample_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "_tls_sink":
        tls_sink_main(*sys.argv[2:8])
    else:
        sys.exit(main())
