#!/usr/bin/env python3
"""A first delivery's DNS time against its longest chain of dependent round trips.

    bench/dns_chain.py POSTERN_LOG FROM_US TO_US [--timeline]

POSTERN_LOG is postern's stderr with `POSTERN_LOG=info,postern::dns::query=debug`:
one "upstream DNS query" line per query postern sent to its resolver (src/dns.rs,
`log_query`): the query, the lookup it served, when it went out (µs since the
Unix epoch), its round-trip time, and how it ended (`answer`, `denial`,
`error`; `kept`: answered from the key cache, or `joined`: the same key query
of another lookup was on its way and its answer is shared — no round trip of
its own). Only queries
sent between FROM_US and TO_US count: bench/dns.sh passes the time it handed
one message to postern and the time the message arrived, and sends nothing
else meanwhile.

Printed (bench/README.md, "DNS on the cold path", defines them):

  wall   first query out -> last answer the connection waits for (every lookup
         except `_smtp._tls`, which TLS-RPT reads after the attempt);
  chain  the longest chain of dependent round trips, each query's own RTT:
           MX, `_mta-sts` TXT (and `_smtp._tls`) need nothing and start at 0;
           A/AAAA of an MX host need the MX answer (its first round trip);
           TLSA of a host needs the MX and both address lookups validated
             (RFC 7672 §2.2: only under a secure MX and secure addresses);
           a lookup is validated one round trip after its answer: the
             DNSKEY/DS/NS queries it makes all name zones the answer already
             shows (the signer and its parents up to the anchor), so RFC 4035
             lets them go out together; the longest of them counts. Answers
             from the key cache, or joined, cost nothing.
  ratio  wall / chain (target: <= 1.2);
  no query on the wire: the part of wall with no query outstanding, i.e.
         postern computing (DNSSEC validation, policy) rather than waiting.
"""
import re
import sys

LINE = re.compile(
    r'upstream DNS query.*?query=(?P<q>.+?) lookup=(?P<l>.+?) start_us=(?P<s>\d+) '
    r'rtt_us=(?P<r>\d+) result="?(?P<res>\w+)'
)


SENT = ("answer", "denial", "error")


def queries(path, lo, hi):
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.search(line)
            if not m:
                continue
            s, r = int(m["s"]), int(m["r"])
            if lo <= s <= hi:
                out.append({"q": m["q"], "lookup": m["l"], "start": s, "rtt": r, "res": m["res"]})
    out.sort(key=lambda x: x["start"])
    return out


def kind(lookup):
    name, _, rtype = lookup.rpartition(" ")
    if name.startswith("_smtp._tls."):
        return "tlsrpt"
    return rtype


def chain(qs):
    """Ideal completion time (µs) of each lookup under the rules above."""
    by_lookup = {}
    for q in qs:
        by_lookup.setdefault(q["lookup"], []).append(q)

    def own(lookup):
        """(RTT of the answer query, longest validation query) of a lookup."""
        answer, keys = 0, 0
        for q in by_lookup.get(lookup, []):
            rtt = q["rtt"] if q["res"] in SENT else 0
            if q["q"] == lookup:
                answer = max(answer, rtt)
            else:
                keys = max(keys, rtt)
        return answer, keys

    done = {}
    mx = [l for l in by_lookup if kind(l) == "MX"]
    mx_answer = max((own(l)[0] for l in mx), default=0)
    for l in by_lookup:
        if kind(l) in ("MX", "TXT", "tlsrpt"):
            a, k = own(l)
            done[l] = a + k
    for l in by_lookup:
        if kind(l) in ("A", "AAAA"):
            a, k = own(l)
            done[l] = mx_answer + a + k
    for l in by_lookup:
        if kind(l) == "TLSA":
            host = l.split(" ")[0].split(".", 2)[-1]  # _25._tcp.HOST
            deps = [done.get(x, 0) for x in mx]
            deps += [done.get(f"{host} {t}", 0) for t in ("A", "AAAA")]
            a, k = own(l)
            done[l] = max(deps, default=0) + a + k
    return done


def idle_time(qs, lo, hi):
    """µs of [lo, hi] with no query on the wire: postern computing
    (validation, policy), not waiting for DNS."""
    busy, end = 0, lo
    for q in sorted(qs, key=lambda q: q["start"]):
        s, e = max(q["start"], end), min(q["start"] + q["rtt"], hi)
        if e > s:
            busy += e - s
            end = e
    return (hi - lo) - busy


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    qs = queries(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    if not qs:
        sys.exit("dns_chain: no 'upstream DNS query' lines in that window "
                 "(was postern started with POSTERN_LOG=info,postern::dns::query=debug?)")
    t0 = qs[0]["start"]
    waited = [q for q in qs if kind(q["lookup"]) != "tlsrpt"]
    wall = max(q["start"] + q["rtt"] for q in waited) - t0
    done = chain(qs)
    longest = max((v for l, v in done.items() if kind(l) != "tlsrpt"), default=0)
    idle = idle_time(waited, t0, t0 + wall)
    sent = sum(1 for q in qs if q["res"] in SENT)
    shared = len(qs) - sent
    ratio = wall / longest if longest else float("nan")
    print(f"queries {sent} (+{shared} kept or joined) | wall {wall / 1000:.2f} ms | "
          f"chain {longest / 1000:.2f} ms | ratio {ratio:.2f} | "
          f"no query on the wire {idle / 1000:.2f} ms")
    if "--timeline" in sys.argv:
        for q in qs:
            print(f"  {(q['start'] - t0) / 1000:8.2f} ms  +{q['rtt'] / 1000:6.2f} ms  "
                  f"{q['res']:6}  {q['q']:40}  for {q['lookup']}")


if __name__ == "__main__":
    main()
