#!/usr/bin/env bash
# Cold-path DNS of a delivery to a new domain (see bench/README.md): how many
# queries postern sends to the validating resolver, and how long the first
# delivery takes, for domains of each kind in the test world (tests/world/).
# Unbound's query counter (unbound-control stats_noreset) is read before and
# after one message per domain; postern's in-process DNSSEC validation asks
# for DNSKEY/DS records itself, and those are counted too.
#
# Each first delivery's per-query timings (postern's debug target
# postern::dns::query) then go through bench/dns_chain.py: its DNS wall time
# against its longest chain of dependent round trips.
#
#   bench/dns.sh          (root; POSTERN_BIN=… to use another binary)
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ "$(id -u)" = 0 ] || { echo "bench/dns.sh: needs root (the test world)" >&2; exit 2; }
BIN=${POSTERN_BIN:-/var/cache/postern-release/release/postern}
[ -x "$BIN" ] || { echo "bench/dns.sh: no postern binary at $BIN (bench/run.sh builds it)" >&2; exit 2; }

S=$(mktemp -d /tmp/postern-dns-bench.XXXXXX)
chmod 755 "$S"
exec 9>/tmp/postern-world.lock
flock 9
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  bash tests/world/world.sh down "$S/world" >/dev/null 2>&1 || true
  rm -rf "$S"
}
trap cleanup EXIT
W="$S/world"
bash tests/world/world.sh up "$W" >"$S/up.log" 2>&1 || { cat "$S/up.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$W/world.env"
UC=(unbound-control -c "$W/unbound/unbound.conf")
queries() { "${UC[@]}" stats_noreset | sed -n 's/^total.num.queries=//p'; }
by_type() { "${UC[@]}" stats_noreset | sed -n 's/^num.query.type.\([A-Z0-9]*\)=/\1 /p' | sort; }
# "TYPE n" lines of $2 minus those of $1, as "TYPE n, TYPE n"
type_delta() {
  join -a2 -e0 -o 0,1.2,2.2 <(echo "$1") <(echo "$2") |
    awk '$3 - $2 > 0 { printf "%s%s %d", sep, $1, $3 - $2; sep = ", " }'
}

start_postern() {
  [ -n "$pid" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  POSTERN_LOG=info,postern::dns::query=debug \
    "$BIN" serve --config "$WORLD_POSTERN_CONFIG" >>"$S/postern.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    swaks --server "$WORLD_POSTERN_SMTP" --quit-after EHLO >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 3 # the start-up DNSSEC self-check, and its answers out of every cache (TTL ≤ 2 s here)
}

# one message to $1; waits for it in spool $2; prints "queries|by type|ms";
# appends "domain from_us to_us" to $S/windows (for bench/dns_chain.py)
deliver() {
  local domain=$1 spool=$2 n0 q0 t_before t0 t1 q1 t_after
  n0=$(ls "$spool" 2>/dev/null | wc -l)
  q0=$(queries); t_before=$(by_type); t0=$(date +%s%N)
  swaks --server "$WORLD_POSTERN_SMTP" --from bench@postern.test --to "user@$domain" \
    --header "Subject: dns bench" >/dev/null 2>&1
  for _ in $(seq 300); do
    [ "$(ls "$spool" 2>/dev/null | wc -l)" -gt "$n0" ] && break
    sleep 0.02
  done
  t1=$(date +%s%N)
  echo "$domain $((t0 / 1000)) $((t1 / 1000))" >>"$S/windows"
  sleep 0.3 # let late queries (TLS-RPT's _smtp._tls, if still running) be counted
  q1=$(queries); t_after=$(by_type)
  printf '%s|%s|%s' "$((q1 - q0))" "$(type_delta "$t_before" "$t_after")" "$(((t1 - t0) / 1000000))"
}

printf '| domain | kind | new process: queries | by type | ms | right after: queries | by type | ms |\n'
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for pair in dane-ok.test:dane-ok:"DNSSEC, TLSA 3 1 1" \
            insecure.test:insecure:"unsigned, no TLSA" \
            sts-enforce.test:sts-enforce:"unsigned, MTA-STS enforce" \
            nostarttls.test:nostarttls:"signed, no TLSA, no STARTTLS"; do
  domain=${pair%%:*}; rest=${pair#*:}; mx=${rest%%:*}; kind=${rest#*:}
  spool_var="MX_$(echo "$mx" | tr 'a-z-' 'A-Z_')_SPOOL"
  start_postern
  cold=$(deliver "$domain" "${!spool_var}")
  sed -n '$p' "$S/windows" >>"$S/first"
  warm=$(deliver "$domain" "${!spool_var}")
  printf '| %s | %s | %s | %s |\n' "$domain" "$kind" "${cold//|/ | }" "${warm//|/ | }"
done

printf '\nFirst deliveries: DNS wall time against the longest chain of dependent round trips (bench/dns_chain.py)\n\n'
while read -r domain from to; do
  printf '%s: ' "$domain"
  python3 bench/dns_chain.py "$S/postern.log" "$from" "$to" ${DNS_TIMELINE:+--timeline}
done <"$S/first"
