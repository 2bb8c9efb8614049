#!/usr/bin/env bash
# postern test world: a small DNSSEC-signed internet on loopback.
#
#   world.sh up STATEDIR          start everything (runs `down` first if STATEDIR holds a world)
#   world.sh down STATEDIR        stop every process `up` started, by PID
#   world.sh selftest STATEDIR    check the running world (no postern involved)
#   world.sh status STATEDIR      which of the world's processes are alive
#   world.sh stop-nginx|start-nginx STATEDIR      MTA-STS web server (prove policy caching)
#   world.sh stop-tlsrpt|start-tlsrpt STATEDIR    HTTPS TLS-RPT report sink
#   world.sh stop-mx|start-mx STATEDIR ID         one receiving Postfix (ID as in WORLD_MX_IDS)
#   world.sh flush-dns STATEDIR                   empty Unbound's caches
#   world.sh attack STATEDIR smtp DOMAIN MODE | https HOST MODE | dns NAME TYPE MODE [SECONDS]
#            | ad MODE [NAME TYPE] | reset | show      switch the attackers (README "Attacks")
#   world.sh postfix-relay-start|postfix-relay-stop STATEDIR   Postfix as a DANE relay (reference)
#   world.sh postfix-relay-send STATEDIR RCPT [SECONDS]
#            send one message through that relay; prints one line: delivered: ... |
#            deferred: REASON | bounced: REASON (exit 0), or timeout: ... | error: ... (exit 1)
#
#   WORLD_EXTRA_DOMAINS=N world.sh up STATEDIR    also N generated destination domains (bench/run.sh many;
#            README "Extra destination domains"); unset or 0: the world is exactly the default one
#
# Needs root. Only 127.0.1.0/24 .. 127.0.3.0/24 and 127.0.5.0/24 are used (and 127.0.6-7.x with
# WORLD_EXTRA_DOMAINS); nothing leaves loopback.
# See tests/world/README.md for addresses, zones and the intended outcome of each domain.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
umask 022

WORLD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# ---------------------------------------------------------------- addresses
KNOT_IP=127.0.1.1          # ns1.test: authoritative for test. and every child zone
RESOLVER_IP=127.0.1.2      # Unbound, validating, trust anchor = test.
LAME_NS_IP=127.0.1.3       # ns-lame.test: a second knotd with no zones, REFUSED to everything
FAULT_NS_IP=127.0.1.4      # ns-fault.test: faultdns.py, forwards to Knot but SERVFAILs chosen queries
NGINX_IP=127.0.3.1         # mta-sts.<domain> for every MTA-STS domain (SNI)
TLSRPT_IP=127.0.3.2        # tlsrpt.test: HTTPS sink for TLS-RPT POSTs
RELAY_IP=127.0.3.3         # relay.test: Postfix as a sending DANE relay, the reference (started on demand)
ATK_NS_IP=127.0.1.5        # ns-atk.test: dns_attacker.py, the name server of the atk-* zones (forwards to Knot)
KNOT_ATK_IP=127.0.1.8      # Knot's second address: the only one it answers for the atk-* zones on (the attacker's upstream)
FORGED_NS_IP=127.0.1.6     # ns-forged.test: a third knotd serving the attacker's forged copies of the atk-* zones
AD_PROXY_IP=127.0.1.7      # dns_attacker.py's AD attacker: a recursive proxy in front of Unbound
HTTPS_ATK_IP=127.0.3.4     # https_attacker.py: mta-sts.atk-sts-*.test and mta-sts.attacker.test
ATTACKER_MX_IP=127.0.5.10  # mx.attacker.test: the attacker's own MX (smtp_attacker.py, always mitm-attacker-domain)
ATTACKER_MX_HOST=mx.attacker.test
POSTERN_IP=127.0.0.1       # postern's own listener (mx.postern.test)
POSTERN_PORT=2525
REQUIRETLS_IP=127.0.2.24   # mx.requiretls.test: nothing listens here; the tests start a second postern (REQUIRETLS)
REQUIRETLS_HOST=mx.requiretls.test
CLIENT_CERT_BASE=mx.postern.test-client   # pki/<base>.{pem,chain.pem,key}: postern's outbound client certificate
TSIG_NAME=world-key.
TSIG_ALG=hmac-sha256
TLSRPT_MAILTO="mailto:tlsrpt@reports.test"
TLSRPT_HTTPS="https://tlsrpt.test/v1/report"
STS_ID="world1"
DKIM_SELECTOR="world"       # world._domainkey.postern.test: postern's TLS-RPT signing key

# Receiving MTAs: id | ip | host name | certificate | behaviour
#   certificate: ca (test CA, name = host), wrongname (test CA, other name),
#                self (self-signed, right name), multi:<n1>,<n2> (test CA, several names), none
#   behaviour:   tls (STARTTLS offered), plain (no STARTTLS), badtls (TLS 1.0/1.1 only),
#                reject (only ok@ accepted, others 550 5.1.1), tempfail (only ok@ accepted, others 450),
#                legacy (STARTTLS, but neither 8BITMIME nor DSN; asks for a client certificate)
MX_TABLE="
dane-ok|127.0.2.1|mx.dane-ok.test|ca|tls
dane-bad|127.0.2.2|mx.dane-bad.test|ca|tls
insecure|127.0.2.3|mx.insecure.test|ca|tls
bogus|127.0.2.4|mx.bogus.test|ca|tls
sts-enforce|127.0.2.5|mx.sts-enforce.test|ca|tls
sts-testing|127.0.2.6|mx.sts-testing.test|ca|tls
sts-mxmismatch|127.0.2.7|mx.sts-mxmismatch.test|ca|tls
nostarttls|127.0.2.8|mx.nostarttls.test|none|plain
wrongname|127.0.2.9|mx.wrongname.test|wrongname|tls
dane-cname|127.0.2.10|mx.dane-cname.test|ca|tls
implicit-mx|127.0.2.11|implicit-mx.test|ca|tls
dane-pkix|127.0.2.12|mx.dane-pkix.test|ca|tls
tlsa-servfail|127.0.2.13|mx.tlsa-servfail.test|ca|tls
rcpt-reject|127.0.2.14|mx.rcpt-reject.test|ca|reject
rcpt-tempfail|127.0.2.15|mx.rcpt-tempfail.test|ca|tempfail
badtls|127.0.2.16|mx.badtls.test|ca|badtls
invalidcert|127.0.2.17|mx.invalidcert.test|self|tls
reports|127.0.2.18|mx.reports.test|ca|tls
dane-ta|127.0.2.19|mx.dane-ta.test|ca|tls
sts-fetch|127.0.2.20|mx.sts-redirect.test|multi:mx.sts-redirect.test,mx.sts-404.test,mx.sts-ctype.test,mx.sts-big.test,mx.sts-badcert.test|tls
tlsa-cname-bogus|127.0.2.21|mx.tlsa-cname-bogus.test|ca|tls
addr-bogus|127.0.2.22|mx2.bogus.test|ca|tls
atk-genuine|127.0.2.23|mx2.atk-dane-ee.test|multi:mx1.atk-dane-ee.test,mx2.atk-dane-ee.test,mx1.atk-dane-ta.test,mx2.atk-dane-ta.test,mx1.atk-sts-enforce.test,mx2.atk-sts-enforce.test,mx1.atk-sts-testing.test,mx2.atk-sts-testing.test,mx1.atk-opp.test,mx2.atk-opp.test|tls
legacy|127.0.2.25|mx.legacy.test|ca|legacy
"

# Zones served by Knot. signed = child has DS in test.; insecure = no DS (provably insecure);
# bogus = signed, but the DS in test. matches no key of the child.
SIGNED_ZONES="dane-ok dane-bad dane-cname dane-pkix dane-ta dane-sts implicit-mx tlsa-servfail
 nostarttls wrongname badtls invalidcert null-mx rcpt-reject rcpt-tempfail reports postern
 tlsa-cname-bogus addr-bogus requiretls legacy"
INSECURE_ZONES="insecure sts-enforce sts-testing sts-testing-badcert sts-mxmismatch sts-invalidcert sts-wrongname
 sts-redirect sts-404 sts-ctype sts-big sts-badcert"
BOGUS_ZONES="bogus"
# indeterminate = signed, with a correct DS in test., but delegated to the fault proxy, which
# answers SERVFAIL to the zone's DNSKEY queries: the data cannot be validated, nor shown bogus.
INDETERMINATE_ZONES="mx-indeterminate"
# Destinations under attack (tests/world/README.md, "Attacks"): domain label | kind | address of
# mx1.<d> (the SMTP attacker, in front of the genuine MTA atk-genuine); mx2.<d> is atk-genuine
# itself. Their name server is the DNS attacker (NS ns-atk.test, Unbound stub-zone).
ATK_TABLE="
atk-dane-ee|signed|127.0.5.1
atk-dane-ta|signed|127.0.5.2
atk-sts-enforce|insecure|127.0.5.3
atk-sts-testing|insecure|127.0.5.4
atk-opp|insecure|127.0.5.5
"
atk_rows() { printf '%s\n' "$ATK_TABLE" | sed '/^$/d'; }
ATK_SIGNED_ZONES="atk-dane-ee atk-dane-ta"
ATK_INSECURE_ZONES="atk-sts-enforce atk-sts-testing atk-opp"
ATK_ZONES="$ATK_SIGNED_ZONES $ATK_INSECURE_ZONES"
ATK_STS_DOMAINS="atk-sts-enforce atk-sts-testing"   # policies on nginx; mta-sts.<d> -> the HTTPS attacker
ATK_GENUINE=atk-genuine
# the attacker's own (properly signed) domain: mx.attacker.test, mta-sts.attacker.test
SIGNED_ZONES="$SIGNED_ZONES attacker"
# MTA-STS domains (each gets _mta-sts TXT and mta-sts.<d> -> nginx)
STS_DOMAINS="sts-enforce sts-testing sts-testing-badcert sts-mxmismatch sts-invalidcert sts-wrongname dane-sts
 sts-redirect sts-404 sts-ctype sts-big sts-badcert"


# ---------------------------------------------------------------- extra destination domains
# WORLD_EXTRA_DOMAINS=N (opt-in, for the many-destination benchmark): N more domains
# m<NNN>-<kind>.test, the kinds in turn: dane (signed, TLSA 3 1 1), sts (unsigned, MTA-STS
# enforce), signed (signed, no TLSA), plain (unsigned, nothing). Each has one MX,
# mx.<domain>, at its own loopback address (127.0.6.1 ..., then 127.0.7.x), where one counting
# STARTTLS sink (many_sink.py) listens. The sink's certificate is from the world CA and names
# every extra MX host, so it satisfies each kind's policy: the DANE zones publish TLSA 3 1 1 of
# its key, the MTA-STS policies list the MX host, whose name the certificate carries.
WORLD_EXTRA_DOMAINS=${WORLD_EXTRA_DOMAINS:-0}
EXTRA_KINDS="dane sts signed plain"
EXTRA_ROWS=""   # domain-label|kind|ip per line
extra_init() {
  local n=$WORLD_EXTRA_DOMAINS i kind label ip
  case $n in ''|*[!0-9]*) die "WORLD_EXTRA_DOMAINS must be a number, not '$n'";; esac
  [ "$n" -le 500 ] || die "WORLD_EXTRA_DOMAINS: at most 500"
  for ((i = 1; i <= n; i++)); do
    set -- $EXTRA_KINDS; shift $(( (i - 1) % 4 )); kind=$1
    label=$(printf 'm%03d-%s' "$i" "$kind")
    if [ $i -le 250 ]; then ip=127.0.6.$i; else ip=127.0.7.$((i - 250)); fi
    EXTRA_ROWS+="$label|$kind|$ip"$'\n'
    case $kind in
      dane|signed) SIGNED_ZONES="$SIGNED_ZONES $label" ;;
      sts) INSECURE_ZONES="$INSECURE_ZONES $label"; STS_DOMAINS="$STS_DOMAINS $label" ;;
      plain) INSECURE_ZONES="$INSECURE_ZONES $label" ;;
    esac
  done
}
extra_rows() { printf '%s' "$EXTRA_ROWS"; }
extra_zone_body() { # zone-label
  local z=$1 kind ip
  IFS='|' read -r _ kind ip < <(extra_rows | grep "^$z|")
  mx_rr "$z.test" "$ip"
  case $kind in
    dane) echo "_25._tcp.mx TLSA $(tlsa_of many-mx)" ;;
    sts) sts_txt ;;
  esac
}
extra_pki() { # the sink's one certificate, naming every extra MX host
  local names="" z
  while IFS='|' read -r z _ _; do names="${names:+$names,}mx.$z.test"; done < <(extra_rows)
  gen_leaf many-mx ca "$names"
}
extra_policies() { # www/<d>/.well-known/mta-sts.txt for the extra MTA-STS domains
  local z kind
  while IFS='|' read -r z kind _; do
    [ "$kind" = sts ] && sts_policy enforce "mx.$z.test" > "$S/www/$z/.well-known/mta-sts.txt"
  done < <(extra_rows)
  true
}
start_extra_sink() {
  local z ip listen=()
  mkdir -p "$S/many"
  extra_rows | sed 's/|/ /g' > "$S/many/domains"
  while IFS='|' read -r z _ ip; do listen+=("$ip"); done < <(extra_rows)
  "$(world_python)" "$WORLD_DIR/many_sink.py" --cert "$S/pki/many-mx.chain.pem" --key "$S/pki/many-mx.key" \
    --log "$S/many/sink.log" --port 25 "${listen[@]}" </dev/null >>"$S/many/sink.err" 2>&1 &
  record_pid many-sink "$!"
  while IFS='|' read -r z _ ip; do wait_tcp "$ip" 25 "the extra domains' sink"; done < <(extra_rows | tail -1)
}

log() { printf 'world: %s\n' "$*" >&2; }
T0=$(date +%s%N)
phase() { # after each start-up step: timing with WORLD_VERBOSE=1; WORLD_FAIL_AFTER=<step> fails there (tests the teardown)
  [ -n "${WORLD_VERBOSE:-}" ] && log "$(( ($(date +%s%N) - T0) / 1000000 )) ms: $*"
  [ "${WORLD_FAIL_AFTER:-}" != "$1" ] || die "failing after $1 (WORLD_FAIL_AFTER)"
  return 0
}
die() { printf 'world: error: %s\n' "$*" >&2; exit 2; }

mx_rows() { printf '%s\n' "$MX_TABLE" | sed '/^$/d'; }
mx_field() { # id fieldno
  mx_rows | awk -F'|' -v id="$1" -v f="$2" '$1 == id { print $f }'
}
envname() { printf '%s' "$1" | tr 'a-z.-' 'A-Z__'; }

# ---------------------------------------------------------------- packages
ensure_packages() {
  local missing=() pair bin pkg
  for pair in knotd:knot knotc:knot keymgr:knot kdig:knot-dnsutils knsupdate:knot-dnsutils \
              unbound:unbound unbound-control:unbound postfix:postfix smtp-sink:postfix \
              nginx:nginx swaks:swaks dig:bind9-dnsutils nsupdate:bind9-dnsutils \
              openssl:openssl curl:curl python3:python3 ss:iproute2 gzip:gzip; do
    bin=${pair%%:*}; pkg=${pair#*:}
    command -v "$bin" >/dev/null 2>&1 || missing+=("$pkg")
  done
  # swaks only recommends Net::SSLeay, without which `swaks --tls` cannot work
  /usr/bin/perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || missing+=(libnet-ssleay-perl)
  [ ${#missing[@]} -eq 0 ] && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}) and not root to install them"
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get"
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Never let the packages start their system-wide daemons (postfix on *:25 would
  # collide with the world's MTAs): the standard policy-rc.d switch, removed afterwards.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
  local rc=0
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >&2 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || die "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------- processes
# A pid file under STATEDIR/pids holds "PID STARTTIME"; STARTTIME (from /proc/PID/stat)
# guards against killing a recycled PID.
proc_start() { # pid -> starttime or empty
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }; set -- $s; printf '%s' "${20}"
}
proc_ppid() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; set -- $s; printf '%s' "$2"; }
record_pid() { # name pid
  local st; st=$(proc_start "$2"); [ -n "$st" ] || die "$1 (pid $2) is not running"
  echo "$2 $st" > "$S/pids/$1.pid"
}
# one snapshot of the process table: "pid ppid starttime" per line
proc_table() {
  awk 'FNR == 1 { line = $0; sub(/^.*\) /, "", line); split(line, f, " ");
                  pid = FILENAME; sub(/^\/proc\//, "", pid); sub(/\/stat$/, "", pid);
                  print pid, f[2], f[20] }' /proc/[0-9]*/stat 2>/dev/null || true
}
# stop_pidfiles FILE...: SIGTERM each recorded process (if it is still the same process),
# wait up to 5 s for it and all its descendants to go, SIGKILL whatever is left, remove the files.
stop_pidfiles() {
  local table f pid st p s
  table=$(proc_table)
  local -A kids=() start=() victims=()
  while read -r p pp s; do kids[$pp]="${kids[$pp]:-} $p"; start[$p]=$s; done <<< "$table"
  local -a roots=() queue=()
  for f in "$@"; do
    [ -f "$f" ] || continue
    read -r pid st < "$f" || true
    rm -f "$f"
    [ -n "${pid:-}" ] && [ "${start[$pid]:-}" = "${st:-x}" ] || continue
    roots+=("$pid"); queue=("$pid")
    while [ ${#queue[@]} -gt 0 ]; do
      p=${queue[0]}; queue=("${queue[@]:1}")
      victims[$p]=${start[$p]}
      for s in ${kids[$p]:-}; do queue+=("$s"); done
    done
  done
  [ ${#roots[@]} -gt 0 ] || return 0
  kill -TERM "${roots[@]}" 2>/dev/null || true
  local i alive
  for i in $(seq 1 50); do
    alive=0
    for p in "${!victims[@]}"; do [ "$(proc_start "$p")" = "${victims[$p]}" ] && { alive=1; break; }; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for p in "${!victims[@]}"; do
    if [ "$(proc_start "$p")" = "${victims[$p]}" ]; then
      log "killing leftover pid $p ($(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-60))"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
}
stop_pidfile() { stop_pidfiles "$1"; }
pidfile_alive() { # pidfile
  local pid st; [ -f "$1" ] || return 1; read -r pid st < "$1" || return 1
  [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$st" ]
}
wait_tcp() { # ip port what
  local i
  for i in $(seq 1 100); do
    ss -Hltn "src $1 and sport = :$2" 2>/dev/null | grep -q . && return 0
    sleep 0.1
  done
  die "$3 did not start listening on $1:$2"
}

# ---------------------------------------------------------------- conflicts
check_conflicts() {
  local port proto lines
  for port in 25 53 443; do
    for proto in t u; do
      [ $proto = u ] && [ $port != 53 ] && continue
      lines=$(ss -Hln$proto -p "sport = :$port" 2>/dev/null || true)
      [ -n "$lines" ] || continue
      # wildcard listeners collide with every specific address on Linux
      if printf '%s\n' "$lines" | awk '{print $4}' | grep -qE '^(0\.0\.0\.0|\*|\[::\]):'; then
        if [ $port = 25 ] && command -v systemctl >/dev/null && systemctl is-active --quiet postfix 2>/dev/null; then
          log "the system postfix listens on *:25 and would collide with the world's MTAs: stopping it (systemctl stop postfix)"
          systemctl stop postfix || true
          sleep 0.5
          lines=$(ss -Hln$proto -p "sport = :$port" 2>/dev/null || true)
        fi
        if printf '%s\n' "$lines" | awk '{print $4}' | grep -qE '^(0\.0\.0\.0|\*|\[::\]):'; then
          die "something listens on the wildcard address, port $port, which collides with the world's loopback servers; stop it first:
$lines"
        fi
      fi
      if printf '%s\n' "$lines" | awk '{print $4}' | grep -qE '^127\.0\.[1235]\.'; then
        die "port $port on 127.0.1-3.x or 127.0.5.x is already in use (another world still up? run world.sh down on its state dir):
$lines"
      fi
    done
  done
}

# ---------------------------------------------------------------- PKI
PKI_DAYS=825
gen_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$S/pki/ca.key" -out "$S/pki/ca.pem" -days 3650 -subj "/O=postern test world/CN=postern test world CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null
}
# gen_leaf FILEBASE KIND NAME[,NAME...]   KIND: ca | self
gen_leaf() {
  local base=$1 kind=$2 names=$3 san="" n cn
  for n in ${names//,/ }; do san="${san:+$san,}DNS:$n"; done
  cn=${names%%,*}
  local -a signer=()
  [ "$kind" = ca ] && signer=(-CA "$S/pki/ca.pem" -CAkey "$S/pki/ca.key")
  openssl req -x509 "${signer[@]}" -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$S/pki/$base.key" -out "$S/pki/$base.pem" -days $PKI_DAYS -subj "/CN=$cn" \
    -set_serial "0x$(openssl rand -hex 12)" \
    -addext "subjectAltName=$san" -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
  chmod 600 "$S/pki/$base.key"
  if [ "$kind" = ca ]; then cat "$S/pki/$base.pem" "$S/pki/ca.pem" > "$S/pki/$base.chain.pem"
  else cp "$S/pki/$base.pem" "$S/pki/$base.chain.pem"; fi
}
# gen_attacker_cert FILEBASE KIND NAME[,NAME...]: like gen_leaf, in pki/attacker/, with the one attacker key
gen_attacker_cert() {
  local base=$1 kind=$2 names=$3 san="" n cn A="$S/pki/attacker"
  for n in ${names//,/ }; do san="${san:+$san,}DNS:$n"; done
  cn=${names%%,*}
  local -a signer=()
  [ "$kind" = ca ] && signer=(-CA "$S/pki/ca.pem" -CAkey "$S/pki/ca.key")
  openssl req -x509 "${signer[@]}" -key "$A/attacker.key" -out "$A/$base.pem" -days $PKI_DAYS -subj "/CN=$cn" \
    -set_serial "0x$(openssl rand -hex 12)" \
    -addext "subjectAltName=$san" -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature" -addext "extendedKeyUsage=serverAuth,clientAuth" 2>/dev/null
  if [ "$kind" = ca ]; then cat "$A/$base.pem" "$S/pki/ca.pem" > "$A/$base.chain.pem"
  else cp "$A/$base.pem" "$A/$base.chain.pem"; fi
}
# The attacker's certificates, all on one key (so one forged TLSA 3 1 1 matches each of them):
# self-signed for each mx1.<atk domain>; test-CA-signed for names the attacker does not own
# (mx.elsewhere.test, mta-sts.elsewhere.test) and for its own (mx.attacker.test, mta-sts.attacker.test).
make_attacker_pki() {
  local A="$S/pki/attacker" d pids=() p
  mkdir -p "$A"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$A/attacker.key" 2>/dev/null
  chmod 600 "$A/attacker.key"
  for d in $ATK_ZONES; do gen_attacker_cert "self-mx1.$d.test" self "mx1.$d.test" & pids+=($!); done
  for d in mx.elsewhere.test mx.attacker.test mta-sts.elsewhere.test mta-sts.attacker.test; do
    gen_attacker_cert "$d" ca "$d" & pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "attacker certificate generation failed"; done
}
attacker_tlsa() { echo "3 1 1 $(openssl pkey -in "$S/pki/attacker/attacker.key" -pubout -outform DER | sha256sum | cut -d' ' -f1)"; }
spki_sha256() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1; }
cert_sha256() { openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1; }

make_pki() {
  mkdir -p "$S/pki"
  gen_ca
  # the attacker's certificates are independent of the rest: made alongside
  { make_attacker_pki; for d in $ATK_STS_DOMAINS; do gen_leaf "mta-sts.$d.test" ca "mta-sts.$d.test"; done; } \
    > "$S/pki/attacker-pki.err" 2>&1 &
  local atk_pid=$!
  local id ip host cert beh
  while IFS='|' read -r id ip host cert beh; do
    case $cert in
      ca) gen_leaf "$host" ca "$host" ;;
      self) gen_leaf "$host" self "$host" ;;
      wrongname) gen_leaf "$host" ca "mx.somewhere-else.test" ;;
      multi:*) gen_leaf "$host" ca "${cert#multi:}" ;;
      none) ;;
    esac
  done < <(mx_rows)
  local d
  for d in $STS_DOMAINS; do
    if [ "$d" = sts-badcert ]; then gen_leaf "mta-sts.$d.test" self "mta-sts.$d.test"
    else gen_leaf "mta-sts.$d.test" ca "mta-sts.$d.test"; fi
  done
  gen_leaf nginx-default.test ca nginx-default.test
  gen_leaf tlsrpt.test ca tlsrpt.test
  gen_leaf mx.postern.test ca mx.postern.test
  # postern's outbound client certificate: the same name, its own key
  gen_leaf "$CLIENT_CERT_BASE" ca mx.postern.test
  # the second postern the tests start at $REQUIRETLS_IP (no MX_TABLE row: the world runs nothing there)
  gen_leaf "$REQUIRETLS_HOST" ca "$REQUIRETLS_HOST"
  if [ "$WORLD_EXTRA_DOMAINS" -gt 0 ]; then extra_pki; fi
  wait "$atk_pid" || die "the attacker's certificates: $(cat "$S/pki/attacker-pki.err")"
  openssl genpkey -algorithm ed25519 -out "$S/pki/dkim.key" 2>/dev/null
  chmod 600 "$S/pki/dkim.key"
}

# ---------------------------------------------------------------- DNS
SOA_TAIL="1 3600 600 86400 5"
zone_head() { # zone [ns]
  printf '$ORIGIN %s.\n$TTL 60\n@ SOA ns1.test. hostmaster.%s. %s\n@ NS %s\n' "$1" "$1" "$SOA_TAIL" "${2:-ns1.test.}"
}
tlsrpt_txt() { # rua...
  local r="" x; for x in "$@"; do r="${r:+$r,}$x"; done
  printf '_smtp._tls TXT "v=TLSRPTv1; rua=%s"\n' "$r"
}
mx_ip() { mx_field "$1" 2; }
sts_txt() { printf '_mta-sts TXT "v=STSv1; id=%s;"\nmta-sts A %s\n' "$STS_ID" "$NGINX_IP"; }
mx_rr() { # zone ip -> MX + A for mx.<zone>
  printf '@ MX 10 mx.%s.\nmx A %s\n' "$1" "$2"
}
std_mx() { mx_rr "$1" "$(mx_ip "$2")"; } # zone id
tlsa_of() { echo "3 1 1 $(spki_sha256 "$S/pki/$1.pem")"; }
dane_tlsa() { echo "_25._tcp.mx TLSA $(tlsa_of "mx.$1")"; } # zone -> TLSA 3 1 1 of mx.<zone>'s key
NOMATCH_HASH=$(printf 'postern test world: this TLSA record matches nothing' | sha256sum | cut -d' ' -f1)

write_child_zone() { # zone-label
  local z=$1 f="$S/knot/zones/$1.test.zone" ns=ns1.test.
  case " $INDETERMINATE_ZONES " in *" $z "*) ns=ns-fault.test. ;; esac
  case " $ATK_ZONES " in *" $z "*) ns=ns-atk.test. ;; esac
  {
    zone_head "$z.test" "$ns"
    case $z in
      dane-ok)
        std_mx dane-ok.test dane-ok
        dane_tlsa dane-ok.test
        tlsrpt_txt "$TLSRPT_MAILTO" ;;
      dane-bad)
        std_mx dane-bad.test dane-bad
        echo "_25._tcp.mx TLSA 3 1 1 $NOMATCH_HASH"
        tlsrpt_txt "$TLSRPT_MAILTO" "$TLSRPT_HTTPS" ;;
      dane-cname)   # RFC 7672 2.2.2: the TLSA owner name is an alias
        std_mx dane-cname.test dane-cname
        echo "_25._tcp.mx CNAME tlsa-target.dane-cname.test."
        echo "tlsa-target TLSA $(tlsa_of mx.dane-cname.test)" ;;
      dane-pkix)    # only PKIX-TA / PKIX-EE records: unusable for SMTP (RFC 7672 3.1.3)
        std_mx dane-pkix.test dane-pkix
        echo "_25._tcp.mx TLSA 1 1 1 $(spki_sha256 "$S/pki/mx.dane-pkix.test.pem")"
        echo "_25._tcp.mx TLSA 0 0 1 $(cert_sha256 "$S/pki/ca.pem")" ;;
      dane-ta)      # DANE-TA: the test CA's key; the MX serves leaf + CA
        std_mx dane-ta.test dane-ta
        echo "_25._tcp.mx TLSA 2 1 1 $(spki_sha256 "$S/pki/ca.pem")" ;;
      dane-sts)     # DANE and an MTA-STS enforce policy: DANE wins; MX is mx.dane-ok.test
        echo "@ MX 10 mx.dane-ok.test."
        sts_txt ;;
      implicit-mx)  # no MX: the domain itself is the MX host (RFC 5321 5.1)
        echo "@ A $(mx_ip implicit-mx)"
        echo "_25._tcp TLSA $(tlsa_of implicit-mx.test)" ;;
      tlsa-servfail) # _tcp.mx is delegated (insecurely) to a lame server: TLSA lookups SERVFAIL fast
        std_mx tlsa-servfail.test tlsa-servfail
        echo "_tcp.mx NS ns-lame.test."
        tlsrpt_txt "$TLSRPT_MAILTO" ;;
      nostarttls)
        std_mx nostarttls.test nostarttls
        tlsrpt_txt "$TLSRPT_MAILTO" ;;
      wrongname)
        std_mx wrongname.test wrongname
        tlsrpt_txt "$TLSRPT_HTTPS" ;;
      badtls)
        std_mx badtls.test badtls
        tlsrpt_txt "$TLSRPT_MAILTO" ;;
      invalidcert)
        std_mx invalidcert.test invalidcert
        tlsrpt_txt "$TLSRPT_MAILTO" ;;
      null-mx)      # RFC 7505
        echo "@ MX 0 ." ;;
      rcpt-reject) std_mx rcpt-reject.test rcpt-reject ;;
      rcpt-tempfail) std_mx rcpt-tempfail.test rcpt-tempfail ;;
      reports)      # reports to itself: a report about report mail would loop
        std_mx reports.test reports; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      postern)      # postern's own domain; TLSA for mx.postern.test is published by the tests
        mx_rr postern.test "$POSTERN_IP"
        # the key postern DKIM-signs its TLS reports with (RFC 8463 ed25519)
        printf '%s._domainkey TXT "v=DKIM1; k=ed25519; p=%s"\n' "$DKIM_SELECTOR" \
          "$(openssl pkey -in "$S/pki/dkim.key" -pubout -outform DER | tail -c 32 | base64 -w0)" ;;
      insecure)     # unsigned: this TLSA must be ignored (it matches nothing)
        std_mx insecure.test insecure
        echo "_25._tcp.mx TLSA 3 1 1 $NOMATCH_HASH" ;;
      bogus)
        std_mx bogus.test bogus
        dane_tlsa bogus.test
        # the MX host of addr-bogus.test: A only, so its AAAA NODATA proof is bogus too
        echo "mx2 A $(mx_ip addr-bogus)"
        # the target of tlsa-cname-bogus.test's TLSA CNAME; matches that MX's key, so only
        # DNSSEC makes it unusable
        echo "tlsa-cname-target TLSA $(tlsa_of mx.tlsa-cname-bogus.test)" ;;
      tlsa-cname-bogus)  # secure MX and A; the TLSA owner is a CNAME into the bogus zone
        std_mx tlsa-cname-bogus.test tlsa-cname-bogus
        echo "_25._tcp.mx CNAME tlsa-cname-target.bogus.test."; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      addr-bogus)   # secure MX whose host lives in the bogus zone: its A/AAAA answers are bogus
        echo "@ MX 10 mx2.bogus.test."; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      requiretls)   # DANE for a second postern (REQUIRETLS) that the tests start at $REQUIRETLS_IP
        mx_rr requiretls.test "$REQUIRETLS_IP"
        dane_tlsa requiretls.test ;;
      legacy)       # DANE-valid Postfix without REQUIRETLS, 8BITMIME, DSN; asks for a client certificate
        std_mx legacy.test legacy
        dane_tlsa legacy.test ;;
      mx-indeterminate)  # the MX itself is fine, but the zone's DNSKEY cannot be fetched
        echo "@ MX 10 mx.dane-ok.test." ;;
      sts-enforce)
        std_mx sts-enforce.test sts-enforce; sts_txt; tlsrpt_txt "$TLSRPT_HTTPS" ;;
      sts-testing)
        std_mx sts-testing.test sts-testing; sts_txt; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      sts-mxmismatch)
        std_mx sts-mxmismatch.test sts-mxmismatch; sts_txt; tlsrpt_txt "$TLSRPT_HTTPS" ;;
      sts-invalidcert)
        echo "@ MX 10 mx.invalidcert.test."; sts_txt; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      sts-testing-badcert)  # testing; the MX matches, but its certificate is self-signed
        echo "@ MX 10 mx.invalidcert.test."; sts_txt; tlsrpt_txt "$TLSRPT_MAILTO" ;;
      sts-wrongname)  # enforce; the MX's certificate (test CA) is for another name
        echo "@ MX 10 mx.wrongname.test."; sts_txt; tlsrpt_txt "$TLSRPT_HTTPS" ;;
      sts-redirect|sts-404|sts-ctype|sts-big|sts-badcert)
        printf '@ MX 10 mx.%s.test.\nmx A %s\n' "$z" "$(mx_ip sts-fetch)"
        sts_txt; tlsrpt_txt "$TLSRPT_HTTPS" ;;
      atk-dane-ee|atk-dane-ta|atk-sts-enforce|atk-sts-testing|atk-opp)
        atk_zone_body "$z" ;;
      m[0-9][0-9][0-9]-*) extra_zone_body "$z" ;;   # WORLD_EXTRA_DOMAINS
      attacker)     # the attacker's own domain, properly signed, with DANE for its own MX
        printf '@ MX 10 %s.\nmx A %s\n' "$ATTACKER_MX_HOST" "$ATTACKER_MX_IP"
        echo "_25._tcp.mx TLSA $(attacker_tlsa)"
        printf 'mta-sts A %s\n_mta-sts TXT "v=STSv1; id=attacker1;"\n' "$HTTPS_ATK_IP" ;;
      *) die "no zone content for $z" ;;
    esac
  } > "$f"
}
atk_field() { atk_rows | awk -F'|' -v id="$1" -v f="$2" '$1 == id { print $f }'; }
# A destination under attack: mx1 (pref 10) = the SMTP attacker's address for it, mx2 (pref 20)
# = the genuine MTA; both names are on the genuine MTA's certificate.
atk_zone_body() { # zone-label
  local z=$1 g; g=$(mx_field "$ATK_GENUINE" 3)
  printf '@ MX 10 mx1.%s.test.\n@ MX 20 mx2.%s.test.\nmx1 A %s\nmx2 A %s\n' "$z" "$z" "$(atk_field "$z" 3)" "$(mx_ip "$ATK_GENUINE")"
  case $z in
    atk-dane-ee) echo "_25._tcp.mx1 TLSA $(tlsa_of "$g")"; echo "_25._tcp.mx2 TLSA $(tlsa_of "$g")" ;;
    atk-dane-ta) local ta; ta="2 1 1 $(spki_sha256 "$S/pki/ca.pem")"; echo "_25._tcp.mx1 TLSA $ta"; echo "_25._tcp.mx2 TLSA $ta" ;;
    atk-sts-enforce|atk-sts-testing) printf '_mta-sts TXT "v=STSv1; id=%s;"\nmta-sts A %s\n' "$STS_ID" "$HTTPS_ATK_IP" ;;
  esac
  tlsrpt_txt "$TLSRPT_MAILTO"
}
# The attacker's copy of an atk-* zone, served by the forged Knot ($FORGED_NS_IP): same names,
# the attacker's data; signed (for the signed zones) with keys that are not in test.'s DS set.
write_forged_zone() { # zone-label
  {
    zone_head "$1.test" ns-atk.test.
    printf '@ MX 10 %s.\nmx1 A %s\nmx2 A %s\n' "$ATTACKER_MX_HOST" "$ATTACKER_MX_IP" "$ATTACKER_MX_IP"
    echo "_25._tcp.mx1 TLSA $(attacker_tlsa)"
    echo "_25._tcp.mx2 TLSA $(attacker_tlsa)"
    printf '_mta-sts TXT "v=STSv1; id=forged1;"\nmta-sts A %s\n' "$HTTPS_ATK_IP"
    printf '_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@attacker.test"\n'
  } > "$S/forged/zones/$1.test.zone"
}
make_forged_dns() {
  local F="$S/forged" z
  mkdir -p "$F/zones" "$F/db"
  cat > "$F/knot.conf" <<EOF
# generated by tests/world/world.sh: the attacker's forged copies of the atk-* zones
server:
    listen: $FORGED_NS_IP@53
    rundir: $F
    pidfile: $F/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: $F/knot.log
    any: warning
database:
    storage: $F/db
policy:
  - id: forged
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
    nsec3: off
template:
  - id: default
    storage: $F/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
  - id: signed
    storage: $F/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    dnssec-signing: on
    dnssec-policy: forged
zone:
EOF
  for z in $ATK_SIGNED_ZONES; do printf '  - domain: %s.test.\n    template: signed\n' "$z"; done >> "$F/knot.conf"
  for z in $ATK_INSECURE_ZONES; do printf '  - domain: %s.test.\n' "$z"; done >> "$F/knot.conf"
  for z in $ATK_SIGNED_ZONES; do
    keymgr -c "$F/knot.conf" "$z.test." generate algorithm=ecdsap256sha256 ksk=yes zsk=yes >/dev/null
  done
  for z in $ATK_ZONES; do write_forged_zone "$z"; done
}
start_forged() {
  local F="$S/forged" i z q=() want got
  knotd -c "$F/knot.conf" -d </dev/null >>"$F/knot.log" 2>&1 || die "forged knotd failed to start (see $F/knot.log)"
  for i in $(seq 1 100); do [ -s "$F/knot.pid" ] && break; sleep 0.05; done
  record_pid forged "$(cat "$F/knot.pid")"
  wait_tcp "$FORGED_NS_IP" 53 "forged knotd"
  for z in $ATK_SIGNED_ZONES; do q+=("$z.test." SOA); done
  want=$(( ${#q[@]} / 2 ))
  for i in $(seq 1 200); do
    got=$(kdig @"$FORGED_NS_IP" +norec +dnssec +noall +answer "${q[@]}" 2>/dev/null | awk '$4 == "RRSIG" && $5 == "SOA"' | wc -l)
    [ "$got" -ge "$want" ] && return 0
    sleep 0.05
  done
  die "forged knotd did not sign its zones in 10 s (see $F/knot.log)"
}

write_knot_conf() {
  local z
  {
    cat <<EOF
# generated by tests/world/world.sh
server:
    listen: [ $KNOT_IP@53, $KNOT_ATK_IP@53 ]
    rundir: $S/knot
    pidfile: $S/knot/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: $S/knot/knot.log
    any: info
database:
    storage: $S/knot/db
key:
  - id: $TSIG_NAME
    algorithm: $TSIG_ALG
    secret: $(cat "$S/dns/tsig.secret")
acl:
  - id: tsig-update
    key: $TSIG_NAME
    action: update
# The atk-* zones are answered only on $KNOT_ATK_IP, where the DNS attacker forwards:
# a resolver that asked $KNOT_IP directly (Unbound does, to recover from a bogus answer,
# and Knot would answer for the child itself) would get the genuine data past the attacker.
mod-queryacl:
  - id: via-attacker
    interface: $KNOT_ATK_IP
policy:
  - id: world
    algorithm: ecdsap256sha256
    single-type-signing: on
    manual: on
    nsec3: off
template:
  - id: default
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    semantic-checks: off
  - id: signed
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    dnssec-signing: on
    dnssec-policy: world
    acl: tsig-update
  - id: parent
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    dnssec-signing: on
    dnssec-policy: world
  - id: unsigned
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    acl: tsig-update
  - id: atk-signed
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    dnssec-signing: on
    dnssec-policy: world
    module: mod-queryacl/via-attacker
  - id: atk-unsigned
    storage: $S/knot/zones
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    module: mod-queryacl/via-attacker
zone:
  - domain: test.
    template: parent
EOF
    for z in $SIGNED_ZONES $BOGUS_ZONES $INDETERMINATE_ZONES; do printf '  - domain: %s.test.\n    template: signed\n' "$z"; done
    for z in $INSECURE_ZONES; do printf '  - domain: %s.test.\n    template: unsigned\n' "$z"; done
    for z in $ATK_SIGNED_ZONES; do printf '  - domain: %s.test.\n    template: atk-signed\n' "$z"; done
    for z in $ATK_INSECURE_ZONES; do printf '  - domain: %s.test.\n    template: atk-unsigned\n' "$z"; done
  } > "$S/knot/knot.conf"
}

make_dns() {
  mkdir -p "$S/dns" "$S/knot/zones" "$S/knot/db"
  openssl rand -base64 32 > "$S/dns/tsig.secret"
  chmod 600 "$S/dns/tsig.secret"
  printf 'key "%s" {\n\talgorithm %s;\n\tsecret "%s";\n};\n' "${TSIG_NAME%.}" "$TSIG_ALG" "$(cat "$S/dns/tsig.secret")" > "$S/dns/tsig.key"
  chmod 600 "$S/dns/tsig.key"
  write_knot_conf
  # the forged Knot's keys and zones (needs the attacker key only), alongside the world's keys
  make_forged_dns > "$S/dns/forged.err" 2>&1 &
  local forged_pid=$!
  local K="keymgr -c $S/knot/knot.conf" z
  # One CSK per signed zone, generated before Knot starts, so the DS set in test. and the
  # trust anchor are known up front and start-up needs no second phase.
  $K test. generate algorithm=ecdsap256sha256 ksk=yes zsk=yes >/dev/null
  for z in $SIGNED_ZONES $BOGUS_ZONES $INDETERMINATE_ZONES $ATK_SIGNED_ZONES; do
    $K "$z.test." generate algorithm=ecdsap256sha256 ksk=yes zsk=yes >/dev/null
  done
  # trust anchors for test.: DNSKEY form (postern.json) and DS form (Unbound)
  $K test. dnskey | sed 's/ DNSKEY / 3600 IN DNSKEY /' > "$S/dns/trust-anchors.dnskey"
  $K test. ds | awk '$5 == 2' | sed 's/ DS / 3600 IN DS /' > "$S/dns/trust-anchors.ds"
  [ -s "$S/dns/trust-anchors.dnskey" ] && [ -s "$S/dns/trust-anchors.ds" ] || die "keymgr produced no anchor for test."
  for z in $SIGNED_ZONES $INSECURE_ZONES $BOGUS_ZONES $INDETERMINATE_ZONES $ATK_ZONES; do write_child_zone "$z"; done
  # the parent zone, with the delegations
  {
    zone_head test
    echo "ns1 A $KNOT_IP"
    echo "ns-lame A $LAME_NS_IP"
    echo "ns-fault A $FAULT_NS_IP"
    echo "ns-atk A $ATK_NS_IP"
    echo "ns-forged A $FORGED_NS_IP"
    echo "ad-proxy A $AD_PROXY_IP"
    echo "resolver A $RESOLVER_IP"
    echo "tlsrpt A $TLSRPT_IP"
    echo "nginx-default A $NGINX_IP"
    for z in $SIGNED_ZONES $INSECURE_ZONES $BOGUS_ZONES; do echo "$z NS ns1.test."; done
    # delegated to the fault proxy (glue ns-fault above), with a correct DS
    for z in $INDETERMINATE_ZONES; do echo "$z NS ns-fault.test."; done
    # the destinations under attack: delegated to the DNS attacker (glue ns-atk above)
    for z in $ATK_ZONES; do echo "$z NS ns-atk.test."; done
    for z in $SIGNED_ZONES $INDETERMINATE_ZONES $ATK_SIGNED_ZONES; do $K "$z.test." ds | awk '$5 == 2' | sed 's/\.test\. DS / DS /'; done
    # bogus.test.: a well-formed DS for its key tag and algorithm whose digest matches no key
    local tag; tag=$($K bogus.test. ds | awk '$5 == 2 { print $3; exit }')
    echo "bogus DS $tag 13 2 $(printf 'postern test world: bogus' | sha256sum | cut -d' ' -f1)"
  } > "$S/knot/zones/test.zone"
  wait "$forged_pid" || die "the forged zones: $(cat "$S/dns/forged.err")"
}

start_knot() {
  knotc -c "$S/knot/knot.conf" conf-check >/dev/null 2>"$S/knot/conf-check.err" \
    || die "knot.conf invalid: $(cat "$S/knot/conf-check.err")"
  knotd -c "$S/knot/knot.conf" -d </dev/null >>"$S/knot/knot.log" 2>&1 || die "knotd failed to start (see $S/knot/knot.log)"
  local i
  for i in $(seq 1 100); do [ -s "$S/knot/knot.pid" ] && break; sleep 0.05; done
  record_pid knot "$(cat "$S/knot/knot.pid")"
  wait_tcp "$KNOT_IP" 53 knotd
  # every zone must be loaded (and the signed ones signed) before the resolver asks for them
  local z q=(test. SOA) want got
  for z in $SIGNED_ZONES $BOGUS_ZONES $INDETERMINATE_ZONES; do q+=("$z.test." SOA); done
  local qa=()
  for z in $ATK_SIGNED_ZONES; do qa+=("$z.test." SOA); done
  want=$(( (${#q[@]} + ${#qa[@]}) / 2 ))
  # 10 s for the default world; Knot signs the extra zones too (WORLD_EXTRA_DOMAINS)
  for i in $(seq 1 $((200 + 4 * WORLD_EXTRA_DOMAINS))); do
    got=$( { kdig @"$KNOT_IP" +norec +dnssec +noall +answer "${q[@]}"; kdig @"$KNOT_ATK_IP" +norec +dnssec +noall +answer "${qa[@]}"; } 2>/dev/null | awk '$4 == "RRSIG" && $5 == "SOA"' | wc -l)
    [ "$got" -ge "$want" ] && return 0
    sleep 0.05
  done
  die "knotd did not load and sign all zones in $((10 + WORLD_EXTRA_DOMAINS / 5)) s (see $S/knot/knot.log)"
}

# A lame server: serves no zone, so it answers REFUSED at once (a dead address would make
# the resolver wait for timeouts). _tcp.mx.tlsa-servfail.test is delegated to it.
start_lame() {
  mkdir -p "$S/lame"
  cat > "$S/lame/knot.conf" <<EOC
server:
    listen: $LAME_NS_IP@53
    rundir: $S/lame
    pidfile: $S/lame/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: $S/lame/knot.log
    any: warning
database:
    storage: $S/lame
EOC
  knotd -c "$S/lame/knot.conf" -d </dev/null >>"$S/lame/knot.log" 2>&1 || die "lame knotd failed to start"
  local i
  for i in $(seq 1 100); do [ -s "$S/lame/knot.pid" ] && break; sleep 0.05; done
  record_pid lame "$(cat "$S/lame/knot.pid")"
  wait_tcp "$LAME_NS_IP" 53 "lame knotd"
}

# The fault proxy (faultdns.py): the name server of the INDETERMINATE_ZONES. It forwards every
# query to Knot unchanged, except the zones' DNSKEY queries, which it answers with SERVFAIL.
start_faultdns() {
  pidfile_alive "$S/pids/faultdns.pid" && return 0
  mkdir -p "$S/faultdns"
  local py z faults=(); py=$(command -v python3)
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  for z in $INDETERMINATE_ZONES; do faults+=(--fault "$z.test/DNSKEY"); done
  "$py" "$WORLD_DIR/faultdns.py" --addr "$FAULT_NS_IP" --port 53 --upstream "$KNOT_IP:53" \
    --rcode servfail "${faults[@]}" </dev/null >>"$S/faultdns/faultdns.log" 2>&1 &
  record_pid faultdns "$!"
  wait_tcp "$FAULT_NS_IP" 53 "the DNS fault proxy"
}

# ---------------------------------------------------------------- attackers
# State files (one line per attacked key; missing = pass), written by `world.sh attack` and
# read by the attackers at each new connection or query; one event log; captured mail.
attack_init() { mkdir -p "$S/attack/captured"; touch "$S/attack/"{smtp,https,dns,ad}.state "$S/attack/attacker.log"; }
world_python() { if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else command -v python3; fi; }
start_dns_attacker() {
  pidfile_alive "$S/pids/dns-attacker.pid" && return 0
  attack_init
  "$(world_python)" "$WORLD_DIR/dns_attacker.py" --zone-addr "$ATK_NS_IP" --ad-addr "$AD_PROXY_IP" --port 53 \
    --knot "$KNOT_ATK_IP:53" --forged "$FORGED_NS_IP:53" --resolver "$RESOLVER_IP:53" \
    --zone-state "$S/attack/dns.state" --ad-state "$S/attack/ad.state" --log "$S/attack/attacker.log" \
    </dev/null >>"$S/attack/dns_attacker.err" 2>&1 &
  record_pid dns-attacker "$!"
  wait_tcp "$ATK_NS_IP" 53 "the DNS attacker"
  wait_tcp "$AD_PROXY_IP" 53 "the AD attacker"
}
start_smtp_attacker() {
  pidfile_alive "$S/pids/smtp-attacker.pid" && return 0
  attack_init
  local g gip z ip kind listen=()
  g=$(mx_field "$ATK_GENUINE" 3); gip=$(mx_ip "$ATK_GENUINE")
  while IFS='|' read -r z kind ip; do listen+=(--listen "$ip=$z.test=$gip"); done < <(atk_rows)
  "$(world_python)" "$WORLD_DIR/smtp_attacker.py" "${listen[@]}" --own "$ATTACKER_MX_IP" --port 25 \
    --state "$S/attack/smtp.state" --log "$S/attack/attacker.log" --capture "$S/attack/captured" \
    --pki "$S/pki" --genuine-chain "$S/pki/$g.chain.pem" --genuine-key "$S/pki/$g.key" \
    </dev/null >>"$S/attack/smtp_attacker.err" 2>&1 &
  record_pid smtp-attacker "$!"
  while IFS='|' read -r z kind ip; do wait_tcp "$ip" 25 "the SMTP attacker"; done < <(atk_rows)
  wait_tcp "$ATTACKER_MX_IP" 25 "the SMTP attacker"
}
start_https_attacker() {
  pidfile_alive "$S/pids/https-attacker.pid" && return 0
  attack_init
  "$(world_python)" "$WORLD_DIR/https_attacker.py" --addr "$HTTPS_ATK_IP" --port 443 --upstream "$NGINX_IP:443" \
    --state "$S/attack/https.state" --log "$S/attack/attacker.log" --pki "$S/pki" --www "$S/www" \
    </dev/null >>"$S/attack/https_attacker.err" 2>&1 &
  record_pid https-attacker "$!"
  wait_tcp "$HTTPS_ATK_IP" 443 "the HTTPS attacker"
}

# world.sh attack STATEDIR ...: switch one attack (see usage in main and README "Attacks")
SMTP_MODES="pass strip-starttls starttls-454 inject-after-220 mitm-self mitm-othername mitm-attacker-domain mitm-old-tls"
HTTPS_MODES="pass redirect wrong-cert changed-policy widen-mx"
DNS_MODES="pass strip-rrsig forge forge-unsigned drop-dnssec servfail tc-no-tcp delay"
DNS_TYPES="A AAAA MX TXT TLSA DNSKEY DS NS SOA CNAME NSEC *"
AD_MODES="pass set-ad clear-ad forge"
in_list() { case " $2 " in *" $1 "*) return 0;; esac; return 1; }
state_set() { # FILE KEY [LINE]: drop the lines of KEY, then append LINE (if any); atomic rename
  local f=$1 k="$2|" line=${3:-}
  { awk -v k="$k" 'index($0, k) != 1' "$f" 2>/dev/null || true; [ -n "$line" ] && printf '%s\n' "$line"; } > "$f.tmp.$$"
  mv -f "$f.tmp.$$" "$f"
}
flush_atk_dns() { # zone...: Unbound forgets what it learnt about these zones and the attacker
  local uc=(unbound-control -c "$S/unbound/unbound.conf") z
  for z in "$@"; do "${uc[@]}" flush_zone "$z" >/dev/null 2>&1 || true; done
  "${uc[@]}" flush_bogus >/dev/null 2>&1 || true
  "${uc[@]}" flush_negative >/dev/null 2>&1 || true
  "${uc[@]}" flush_infra "$ATK_NS_IP" >/dev/null 2>&1 || true
}
atk_zone_of() { # name -> the atk zone it is in (or nothing)
  local n=$1 z
  for z in $ATK_ZONES; do case $n in "$z.test"|*".$z.test") echo "$z.test"; return 0;; esac; done
  return 1
}
attack_usage() {
  die "usage: world.sh attack STATEDIR smtp DOMAIN MODE | https HOST MODE | dns NAME TYPE MODE [SECONDS] | ad MODE [NAME TYPE] | reset | show
  smtp:  DOMAIN one of: $(printf '%s.test ' $ATK_ZONES); MODE one of: $SMTP_MODES
  https: HOST one of: $(printf 'mta-sts.%s.test ' $ATK_STS_DOMAINS); MODE one of: $HTTPS_MODES
  dns:   NAME in an atk-* zone; TYPE one of: $DNS_TYPES; MODE one of: $DNS_MODES (SECONDS only for delay)
  ad:    pass | set-ad | clear-ad | forge NAME TYPE"
}
cmd_attack() {
  local A="$S/attack" kind=${1:-}
  [ -f "$A/smtp.state" ] || die "no attackers in $S (run up first)"
  [ $# -gt 0 ] && shift
  case $kind in
    smtp)
      [ $# = 2 ] || attack_usage
      local d=${1%.}; d=${d,,}
      in_list "$d" "$(printf '%s.test ' $ATK_ZONES)" || die "smtp: unknown destination '$1' (one of: $(printf '%s.test ' $ATK_ZONES))"
      in_list "$2" "$SMTP_MODES" || die "smtp: unknown mode '$2' (one of: $SMTP_MODES)"
      if [ "$2" = pass ]; then state_set "$A/smtp.state" "$d"; else state_set "$A/smtp.state" "$d" "$d|$2"; fi ;;
    https)
      [ $# = 2 ] || attack_usage
      local h=${1%.}; h=${h,,}
      in_list "$h" "$(printf 'mta-sts.%s.test ' $ATK_STS_DOMAINS)" || die "https: unknown host '$1' (one of: $(printf 'mta-sts.%s.test ' $ATK_STS_DOMAINS))"
      in_list "$2" "$HTTPS_MODES" || die "https: unknown mode '$2' (one of: $HTTPS_MODES)"
      if [ "$2" = pass ]; then state_set "$A/https.state" "$h"; else state_set "$A/https.state" "$h" "$h|$2"; fi ;;
    dns)
      [ $# = 3 ] || { [ $# = 4 ] && [ "${3:-}" = delay ]; } || attack_usage
      local n=${1%.} t=${2^^} m=$3 secs=${4:-10} z; n=${n,,}
      [ "$t" = ANY ] && t='*'
      z=$(atk_zone_of "$n") || die "dns: '$1' is not in an attacked zone (one of: $(printf '%s.test ' $ATK_ZONES))"
      in_list "$t" "$DNS_TYPES" || die "dns: unknown type '$2' (one of: $DNS_TYPES)"
      in_list "$m" "$DNS_MODES" || die "dns: unknown mode '$m' (one of: $DNS_MODES)"
      [[ $secs =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "dns: SECONDS must be a number, not '$secs'"
      case $m in
        pass) state_set "$A/dns.state" "$n|$t" ;;
        delay) state_set "$A/dns.state" "$n|$t" "$n|$t|$m|$secs" ;;
        *) state_set "$A/dns.state" "$n|$t" "$n|$t|$m" ;;
      esac
      flush_atk_dns "$z" ;;
    ad)
      [ $# -ge 1 ] || attack_usage
      case $1 in
        pass) [ $# = 1 ] || attack_usage; : > "$A/ad.state.tmp.$$"; mv -f "$A/ad.state.tmp.$$" "$A/ad.state" ;;
        set-ad|clear-ad) [ $# = 1 ] || attack_usage; state_set "$A/ad.state" mode "mode|$1" ;;
        forge)
          [ $# = 3 ] || attack_usage
          local n=${2%.} t=${3^^}; n=${n,,}; [ "$t" = ANY ] && t='*'
          atk_zone_of "$n" >/dev/null || die "ad forge: '$2' is not in an attacked zone (the forged server holds only those)"
          in_list "$t" "$DNS_TYPES" || die "ad forge: unknown type '$3' (one of: $DNS_TYPES)"
          state_set "$A/ad.state" "forge|$n|$t" "forge|$n|$t" ;;
        *) die "ad: unknown mode '$1' (one of: $AD_MODES)" ;;
      esac ;;
    reset)
      [ $# = 0 ] || attack_usage
      local f; for f in smtp https dns ad; do : > "$A/$f.state.tmp.$$"; mv -f "$A/$f.state.tmp.$$" "$A/$f.state"; done
      flush_atk_dns $(printf '%s.test ' $ATK_ZONES) ;;
    show)
      local f; for f in smtp https dns ad; do sed "s/^/$f|/" "$A/$f.state"; done ;;
    *) attack_usage ;;
  esac
}

# ---------------------------------------------------------------- Unbound
start_unbound() {
  mkdir -p "$S/unbound"
  # a root that answers nothing: the resolver must never talk to the real root servers
  printf '. 3600000 IN NS no-root.test.\nno-root.test. 3600000 IN A %s\n' "$LAME_NS_IP" > "$S/unbound/root.hints"
  cat > "$S/unbound/unbound.conf" <<EOC
# generated by tests/world/world.sh
server:
    interface: $RESOLVER_IP
    port: 53
    interface-automatic: no
    outgoing-interface: $RESOLVER_IP
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 127.0.0.0/8 allow
    num-threads: 1
    so-reuseport: no
    username: ""
    chroot: ""
    directory: "$S/unbound"
    pidfile: "$S/unbound/unbound.pid"
    logfile: "$S/unbound/unbound.log"
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    module-config: "validator iterator"
    root-hints: "$S/unbound/root.hints"
    trust-anchor-file: "$S/dns/trust-anchors.ds"
    do-not-query-localhost: no
    # nothing outside test. exists in this world
    local-zone: "." static
    local-zone: "test." transparent
    # short caches, so tests see DNS changes (TSIG updates) within a second or two
    cache-max-ttl: 2
    cache-max-negative-ttl: 1
    val-bogus-ttl: 1
    infra-host-ttl: 5
    prefetch: no
    qname-minimisation: no
    minimal-responses: no
    edns-buffer-size: 1232
    # per-type query counters (bench/dns.sh)
    extended-statistics: yes
remote-control:
    control-enable: yes
    control-interface: "$S/unbound/control.sock"
    control-use-cert: no
stub-zone:
    name: "test."
    stub-addr: $KNOT_IP
    stub-prime: no
EOC
  # Knot serves test. and its children alike, so it answers for a child itself and never
  # refers Unbound to the child's delegated name server: follow test.'s delegation of the
  # INDETERMINATE_ZONES (NS ns-fault.test, glue $FAULT_NS_IP) explicitly.
  local z
  for z in $INDETERMINATE_ZONES; do
    printf 'stub-zone:\n    name: "%s.test."\n    stub-addr: %s\n    stub-prime: no\n' "$z" "$FAULT_NS_IP" >> "$S/unbound/unbound.conf"
  done
  # the same for the destinations under attack, delegated to the DNS attacker
  for z in $ATK_ZONES; do
    printf 'stub-zone:\n    name: "%s.test."\n    stub-addr: %s\n    stub-prime: no\n' "$z" "$ATK_NS_IP" >> "$S/unbound/unbound.conf"
  done
  local bin; bin=$(command -v unbound)
  # Debian ships an AppArmor profile attached to /usr/sbin/unbound that forbids files outside
  # /etc/unbound; when AppArmor is active run an unattached copy of the binary instead.
  if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || true)" = Y ]; then
    mkdir -p "$S/bin"; cp "$bin" "$S/bin/unbound"; bin="$S/bin/unbound"
  fi
  "$bin" -c "$S/unbound/unbound.conf" </dev/null >>"$S/unbound/unbound.log" 2>&1 || die "unbound failed to start (see $S/unbound/unbound.log)"
  local i
  for i in $(seq 1 100); do [ -s "$S/unbound/unbound.pid" ] && break; sleep 0.05; done
  record_pid unbound "$(cat "$S/unbound/unbound.pid")"
  wait_tcp "$RESOLVER_IP" 53 unbound
}

# ---------------------------------------------------------------- Postfix
pf_write() { # id ip host cert behaviour
  local id=$1 ip=$2 host=$3 beh=$5 d="$S/postfix/$1"
  mkdir -p "$d/conf" "$d/queue" "$d/data" "$S/mail/$id/Maildir/new" "$S/mail/$id/Maildir/cur" "$S/mail/$id/Maildir/tmp"
  chown postfix "$d/data"
  # virtual(8) delivers as nobody; the Maildir exists from the start so MX_*_SPOOL is always a directory
  chown -R 65534:65534 "$S/mail/$id"
  local maps="static:Maildir/" tls_log=1
  [ "$beh" = reject ] && maps="inline:{ok@${host#mx.}=Maildir/}"
  # legacy: also log session tickets ("Issuing session ticket", "Reusing old session (RFC 5077 session ticket)")
  [ "$beh" = legacy ] && tls_log="1, cache"
  cat > "$d/conf/main.cf" <<EOC
# generated by tests/world/world.sh -- receiving MTA $host ($ip)
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
maillog_file_prefixes = $S
mail_owner = postfix
setgid_group = postdrop
myhostname = $host
mydomain = ${host#mx.}
myorigin = \$myhostname
mydestination =
local_recipient_maps =
local_transport = error:local delivery disabled
relay_domains =
alias_maps =
alias_database =
# the smtpd listener binds $ip:25 explicitly in master.cf
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:this test MTA never sends mail
relay_transport = error:this test MTA never sends mail
virtual_mailbox_domains = static:all
virtual_mailbox_base = $S/mail/$id
virtual_mailbox_maps = $maps
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
message_size_limit = 104857600
virtual_mailbox_limit = 0
smtpd_client_connection_count_limit = 0
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP postern-test-world
biff = no
smtpd_tls_received_header = yes
smtpd_tls_loglevel = $tls_log
EOC
  case $beh in
    plain) echo "smtpd_tls_security_level = none" >> "$d/conf/main.cf" ;;
    *) printf 'smtpd_tls_security_level = may\nsmtpd_tls_chain_files = %s, %s\n' \
         "$S/pki/$host.key" "$S/pki/$host.chain.pem" >> "$d/conf/main.cf" ;;
  esac
  case $beh in
    badtls) cat >> "$d/conf/main.cf" <<'EOC'
# STARTTLS is offered, but only TLS 1.0/1.1 at OpenSSL security level 0: every modern
# (TLS 1.2+) client handshake fails
smtpd_tls_protocols = >=TLSv1 <=TLSv1.1
smtpd_tls_mandatory_protocols = >=TLSv1 <=TLSv1.1
smtpd_tls_ciphers = medium
smtpd_tls_mandatory_ciphers = medium
tls_medium_cipherlist = DEFAULT:@SECLEVEL=0
EOC
    ;;
    tempfail) echo "smtpd_recipient_restrictions = check_recipient_access inline:{ok@${host#mx.}=OK}, defer" >> "$d/conf/main.cf" ;;
    legacy) cat >> "$d/conf/main.cf" <<EOC
# the receiver of issue 19's downgrade cases: no 8BITMIME, no DSN (and no REQUIRETLS, which
# Postfix does not implement); asks for a client certificate and verifies it with the test CA
# (the Received: header then names its CN and issuer). Server-side resumption (TLS 1.3
# tickets, keys from tlsmgr) is Postfix's default; smtpd_tls_loglevel "1, cache" logs it.
smtpd_discard_ehlo_keywords = 8bitmime, dsn
smtpd_tls_ask_ccert = yes
smtpd_tls_CAfile = $S/pki/ca.pem
EOC
    ;;
  esac
  cat > "$d/conf/master.cf" <<EOC
# generated by tests/world/world.sh (no chroot anywhere)
$ip:25    inet  n       -       n       -       -       smtpd
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
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOC
}
pf_start() { # id
  local d="$S/postfix/$1" out
  rm -f "$d/queue/pid/master.pid"
  if ! postfix -c "$d/conf" start </dev/null >"$d/start.log" 2>&1; then
    die "postfix $1 failed to start: $(cat "$d/start.log") $(tail -5 "$d/maillog" 2>/dev/null)"
  fi
}
pf_record() { # id ip
  local d="$S/postfix/$1" i
  for i in $(seq 1 100); do [ -s "$d/queue/pid/master.pid" ] && break; sleep 0.05; done
  [ -s "$d/queue/pid/master.pid" ] || die "postfix $1: no master.pid (see $d/maillog)"
  record_pid "mx-$1" "$(tr -d ' \n' < "$d/queue/pid/master.pid")"
  wait_tcp "$2" 25 "postfix $1"
}
start_postfixes() {
  local id ip host cert beh pids=() rc=0 p
  while IFS='|' read -r id ip host cert beh; do pf_write "$id" "$ip" "$host" "$cert" "$beh"; done < <(mx_rows)
  # `postfix start` costs ~0.4 s each, mostly waiting: start them all at once
  while IFS='|' read -r id ip host cert beh; do pf_start "$id" & pids+=($!); done < <(mx_rows)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  while IFS='|' read -r id ip host cert beh; do
    [ -s "$S/postfix/$id/queue/pid/master.pid" ] && pf_record "$id" "$ip"
  done < <(mx_rows)
  [ $rc = 0 ] || die "some postfix instances failed to start"
}

# ---------------------------------------------------------------- Postfix as a DANE relay
# The reference for postern's DANE behaviour: a sending Postfix (`smtp_dns_support_level =
# dnssec`, `smtp_tls_security_level = dane`) that takes mail on $RELAY_IP:25 and delivers it
# to the world's MXs from $RELAY_IP. Postfix resolves through libc and /etc/resolv.conf, so it
# runs in a private mount namespace in which /etc/resolv.conf is a bind mount of
# STATEDIR/postfix-relay/resolv.conf (Unbound only, trust-ad); no process of it is chrooted.
# `up` writes its configuration; it is started on demand (postfix-relay-start or -send).
RELAY_HOST=relay.test
relay_write() {
  local d="$S/postfix-relay"
  mkdir -p "$d/conf" "$d/queue" "$d/data"
  chown postfix "$d/data"
  printf '# generated by tests/world/world.sh: the resolver of the Postfix relay (in its own mount namespace)\nnameserver %s\noptions edns0 trust-ad attempts:1 timeout:3\n' \
    "$RESOLVER_IP" > "$d/resolv.conf"
  cat > "$d/conf/main.cf" <<EOC
# generated by tests/world/world.sh -- Postfix as a sending DANE relay ($RELAY_HOST, $RELAY_IP)
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
maillog_file_prefixes = $S
syslog_name = postfix-relay
mail_owner = postfix
setgid_group = postdrop
myhostname = $RELAY_HOST
mydomain = $RELAY_HOST
myorigin = $RELAY_HOST
# bounces and other notices to the relay's own domain are discarded (no DSN leaves it)
mydestination = $RELAY_HOST
local_recipient_maps =
local_transport = discard:mail to $RELAY_HOST is discarded
alias_maps =
alias_database =
# the smtpd listener binds $RELAY_IP:25 explicitly in master.cf (Postfix refuses an
# inet_interfaces address that is not configured on an interface; lo has only 127.0.0.1/8)
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP postern-test-world DANE relay
biff = no
relayhost =
relay_domains =
default_transport = smtp
smtp_bind_address = $RELAY_IP
smtp_host_lookup = dns
smtp_address_preference = ipv4
# DANE (RFC 7672) as Postfix does it: DNSSEC-validated (AD bit) MX, A and TLSA lookups
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_CAfile = $S/pki/ca.pem
# a new connection (and TLS summary in the log) for every delivery
smtp_connection_cache_on_demand = no
# certmatch: also log which TLSA record matched ("Matched DANE EE certificate at depth 0: 3 1 1 ...")
smtp_tls_loglevel = 1, certmatch
# the check that the resolver validates: test. is the world's trust anchor (written without the
# final dot: with it, Postfix sends no probe and warns "DNSSEC validation may be unavailable")
dnssec_probe = ns:test
# one attempt is what the world's tests look at; retries come late
minimal_backoff_time = 300s
maximal_backoff_time = 600s
delay_warning_time = 0
EOC
  cat > "$d/conf/master.cf" <<EOC
# generated by tests/world/world.sh (no chroot anywhere: smtp must see the namespace's resolv.conf)
$RELAY_IP:25 inet n       -       n       -       -       smtpd
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
EOC
}
relay_start() {
  local d="$S/postfix-relay" pid i
  pidfile_alive "$S/pids/postfix-relay.pid" && return 0
  [ -f "$d/conf/main.cf" ] || relay_write
  command -v unshare >/dev/null || die "unshare (util-linux) is needed for the Postfix relay"
  rm -f "$d/queue/pid/master.pid"
  # private mount namespace: the bind mount is seen by the relay's processes only
  if ! unshare --mount --propagation private sh -c \
      'mount --bind "$1" /etc/resolv.conf && exec postfix -c "$2" start' sh "$d/resolv.conf" "$d/conf" \
      </dev/null >"$d/start.log" 2>&1 9>&-; then
    die "the Postfix relay failed to start: $(cat "$d/start.log") $(tail -5 "$d/maillog" 2>/dev/null)"
  fi
  for i in $(seq 1 100); do [ -s "$d/queue/pid/master.pid" ] && break; sleep 0.05; done
  [ -s "$d/queue/pid/master.pid" ] || die "the Postfix relay wrote no master.pid (see $d/maillog)"
  pid=$(tr -d ' \n' < "$d/queue/pid/master.pid")
  record_pid postfix-relay "$pid"
  # prove the isolation: another mount namespace, whose resolv.conf names only Unbound
  if [ "$(readlink "/proc/$pid/ns/mnt")" = "$(readlink /proc/self/ns/mnt)" ] \
     || ! cmp -s "/proc/$pid/root/etc/resolv.conf" "$d/resolv.conf"; then
    stop_pidfile "$S/pids/postfix-relay.pid"
    die "the Postfix relay does not run in its own mount namespace with the world's resolv.conf"
  fi
  wait_tcp "$RELAY_IP" 25 "the Postfix relay"
}
relay_ensure() { # start the relay unless it runs; serialised, for parallel postfix-relay-send
  exec 9>"$S/postfix-relay.lock"
  flock 9
  relay_start
  flock -u 9
  exec 9>&-
}
# relay_send RCPT SECONDS: submit one message to the relay, wait for the first delivery
# status of RCPT in its log; print one line, and delete a message that stays queued.
relay_send() {
  local rcpt=$1 limit=$2 d="$S/postfix-relay" out qid line status reason pid log tls dane end
  relay_ensure
  out=$(timeout 30 swaks --server "$RELAY_IP:25" --helo client.relay.test --from "world-relay@$RELAY_HOST" \
        --to "$rcpt" --header "Subject: world relay test to $rcpt" \
        --header "X-World-Relay: $$-$(date +%s%N)" 2>&1) || true
  qid=$(printf '%s\n' "$out" | sed -n 's/^<- *250 .*queued as \([0-9A-Za-z]*\).*/\1/p' | tail -1)
  if [ -z "$qid" ]; then
    echo "error: the relay did not queue the message: $(printf '%s\n' "$out" | grep -E '^<\*\*|^\*\*\*' | head -2 | tr '\n' ' ')"
    return 1
  fi
  end=$(( ${EPOCHREALTIME//[!0-9]/} + limit * 1000000 ))
  while :; do
    line=$(grep -F " $qid: to=<$rcpt>," "$d/maillog" 2>/dev/null | grep -E ' status=(sent|deferred|bounced|expired) ' | head -1) || true
    [ -n "$line" ] && break
    if [ "${EPOCHREALTIME//[!0-9]/}" -ge $end ]; then
      postsuper -c "$d/conf" -d "$qid" >/dev/null 2>&1 || true
      echo "timeout: no delivery status for $rcpt (queue id $qid) within $limit s; message deleted"
      return 1
    fi
    sleep 0.1
  done
  status=$(printf '%s\n' "$line" | sed -n 's/.* status=\([a-z]*\) .*/\1/p')
  reason=$(printf '%s\n' "$line" | sed -n 's/.* status=[a-z]* (\(.*\))$/\1/p')
  case $status in
    sent)
      pid=$(printf '%s\n' "$line" | sed -n 's/.*\/smtp\[\([0-9]*\)\]: .*/\1/p')
      # what this smtp process logged for this delivery: after its previous status line, if any
      log=$(grep -F "/smtp[$pid]: " "$d/maillog" | sed 's/^.*\/smtp\[[0-9]*\]: //' \
            | awk -v me="$qid: to=<$rcpt>," 'index($0, me) == 1 { exit } / status=/ { n = 0; next } { l[n++] = $0 }
                                              END { for (i = 0; i < n; i++) print l[i] }') || true
      tls=$(printf '%s\n' "$log" | grep -E '^[A-Za-z]+ TLS connection established to ' | tail -1) || true
      dane=$(printf '%s\n' "$log" | grep -E ': Matched DANE ' | tail -1 | sed 's/^[^ ]*: //') || true
      echo "delivered: ${tls:-no TLS}${dane:+; $dane}" ;;
    deferred)
      postsuper -c "$d/conf" -d "$qid" >/dev/null 2>&1 || true
      echo "deferred: $reason" ;;
    bounced|expired) echo "bounced: $reason" ;;
  esac
}

# ---------------------------------------------------------------- nginx (MTA-STS)
sts_policy() { # mode mx...
  local mode=$1 m; shift
  printf 'version: STSv1\r\nmode: %s\r\n' "$mode"
  for m in "$@"; do printf 'mx: %s\r\n' "$m"; done
  printf 'max_age: 86400\r\n'
}
write_nginx() {
  local n="$S/nginx" www="$S/www" d
  mkdir -p "$n/tmp" "$www"
  # Policies. Where a fetch must fail (redirect, 404, content type, size, certificate) the body
  # that *is* served names an MX that does not exist: wrongly accepting it defers the mail.
  for d in $STS_DOMAINS $ATK_STS_DOMAINS; do mkdir -p "$www/$d/.well-known"; done
  # the destinations under attack: genuine policies listing both MX hosts (reached through the HTTPS attacker)
  sts_policy enforce mx1.atk-sts-enforce.test mx2.atk-sts-enforce.test > "$www/atk-sts-enforce/.well-known/mta-sts.txt"
  sts_policy testing mx1.atk-sts-testing.test mx2.atk-sts-testing.test > "$www/atk-sts-testing/.well-known/mta-sts.txt"
  sts_policy enforce mx.sts-enforce.test > "$www/sts-enforce/.well-known/mta-sts.txt"
  sts_policy testing mx.elsewhere.sts-testing.test > "$www/sts-testing/.well-known/mta-sts.txt"
  sts_policy testing mx.invalidcert.test > "$www/sts-testing-badcert/.well-known/mta-sts.txt"
  sts_policy enforce mx.elsewhere.sts-mxmismatch.test '*.other.sts-mxmismatch.test' > "$www/sts-mxmismatch/.well-known/mta-sts.txt"
  sts_policy enforce mx.invalidcert.test > "$www/sts-invalidcert/.well-known/mta-sts.txt"
  sts_policy enforce mx.wrongname.test > "$www/sts-wrongname/.well-known/mta-sts.txt"
  sts_policy enforce mx.dane-ok.test > "$www/dane-sts/.well-known/mta-sts.txt"
  sts_policy enforce mx.nowhere.invalid > "$www/sts-redirect/redirected.txt"
  sts_policy enforce mx.nowhere.invalid > "$www/sts-ctype/.well-known/mta-sts.txt"
  sts_policy enforce mx.nowhere.invalid > "$www/sts-badcert/.well-known/mta-sts.txt"
  { sts_policy enforce mx.nowhere.invalid
    local i; for i in $(seq 1 700); do printf 'x-padding-%04d: %s\r\n' "$i" "$(printf '%080d' 0)"; done
  } > "$www/sts-big/.well-known/mta-sts.txt"
  extra_policies
  chmod -R a+rX "$www"
  {
    cat <<EOC
# generated by tests/world/world.sh
user root;
worker_processes 1;
daemon on;
pid $n/nginx.pid;
error_log $n/error.log info;
events { worker_connections 256; }
http {
    access_log $n/access.log;
    client_body_temp_path $n/tmp/body;
    proxy_temp_path $n/tmp/proxy;
    fastcgi_temp_path $n/tmp/fastcgi;
    uwsgi_temp_path $n/tmp/uwsgi;
    scgi_temp_path $n/tmp/scgi;
    server_tokens off;
    types { text/plain txt; }
    default_type application/octet-stream;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen $NGINX_IP:443 ssl default_server;
        server_name _;
        ssl_certificate $S/pki/nginx-default.test.chain.pem;
        ssl_certificate_key $S/pki/nginx-default.test.key;
        return 404;
    }
EOC
    for d in $STS_DOMAINS $ATK_STS_DOMAINS; do
      printf '    server {\n        listen %s:443 ssl;\n        server_name mta-sts.%s.test;\n' "$NGINX_IP" "$d"
      printf '        ssl_certificate %s;\n        ssl_certificate_key %s;\n        root %s;\n' \
        "$S/pki/mta-sts.$d.test.chain.pem" "$S/pki/mta-sts.$d.test.key" "$www/$d"
      case $d in
        sts-redirect) printf '        location = /.well-known/mta-sts.txt { return 301 https://mta-sts.sts-redirect.test/redirected.txt; }\n' ;;
        sts-404) printf '        location = /.well-known/mta-sts.txt { return 404; }\n' ;;
        sts-ctype) printf '        location = /.well-known/mta-sts.txt { types { } default_type text/html; }\n' ;;
      esac
      printf '    }\n'
    done
    echo "}"
  } > "$n/nginx.conf"
}
start_nginx() {
  local n="$S/nginx"
  pidfile_alive "$S/pids/nginx.pid" && return 0
  rm -f "$n/nginx.pid"
  nginx -q -e "$n/error.log" -p "$n" -c "$n/nginx.conf" </dev/null >>"$n/error.log" 2>&1 || die "nginx failed to start (see $n/error.log)"
  local i
  for i in $(seq 1 100); do [ -s "$n/nginx.pid" ] && break; sleep 0.05; done
  record_pid nginx "$(cat "$n/nginx.pid")"
  wait_tcp "$NGINX_IP" 443 nginx
}

# ---------------------------------------------------------------- TLS-RPT sink
start_tlsrpt() {
  pidfile_alive "$S/pids/tlsrpt.pid" && return 0
  mkdir -p "$S/tlsrpt"
  local py; py=$(command -v python3)
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  "$py" "$WORLD_DIR/tlsrpt_sink.py" --addr "$TLSRPT_IP" --port 443 --dir "$S/tlsrpt" \
    --cert "$S/pki/tlsrpt.test.chain.pem" --key "$S/pki/tlsrpt.test.key" \
    </dev/null >>"$S/tlsrpt.log" 2>&1 &
  local pid=$!
  record_pid tlsrpt "$pid"
  wait_tcp "$TLSRPT_IP" 443 "TLS-RPT sink"
}

# ---------------------------------------------------------------- outputs
write_env() {
  local f="$S/world.env" id ip host cert beh E ids=""
  while IFS='|' read -r id ip host cert beh; do ids="${ids:+$ids,}$id"; done < <(mx_rows)
  {
    cat <<EOC
# postern test world -- generated by tests/world/world.sh up; shell KEY=VALUE, no quoting needed
WORLD_STATEDIR=$S
WORLD_RESOLVER=$RESOLVER_IP:53
WORLD_RESOLVER_IP=$RESOLVER_IP
WORLD_KNOT=$KNOT_IP:53
WORLD_KNOT_IP=$KNOT_IP
WORLD_LAME_NS_IP=$LAME_NS_IP
WORLD_FAULT_NS_IP=$FAULT_NS_IP
WORLD_TRUST_ANCHORS=$S/dns/trust-anchors.dnskey
WORLD_TRUST_ANCHORS_DS=$S/dns/trust-anchors.ds
WORLD_CA=$S/pki/ca.pem
WORLD_CA_KEY=$S/pki/ca.key
WORLD_PKI_DIR=$S/pki
WORLD_TSIG_NAME=$TSIG_NAME
WORLD_TSIG_ALGORITHM=$TSIG_ALG
WORLD_TSIG_SECRET_FILE=$S/dns/tsig.secret
WORLD_TSIG_KEYFILE=$S/dns/tsig.key
WORLD_UPDATE_ZONES=$(printf '%s.test,' $SIGNED_ZONES $INSECURE_ZONES $BOGUS_ZONES $INDETERMINATE_ZONES $ATK_ZONES | sed 's/,$//')
WORLD_NGINX_IP=$NGINX_IP
WORLD_TLSRPT_IP=$TLSRPT_IP
WORLD_TLSRPT_URL=$TLSRPT_HTTPS
WORLD_TLSRPT_MAILTO=$TLSRPT_MAILTO
WORLD_TLSRPT_DIR=$S/tlsrpt
WORLD_STS_ID=$STS_ID
WORLD_DKIM_KEY=$S/pki/dkim.key
WORLD_DKIM_SELECTOR=$DKIM_SELECTOR
WORLD_DKIM_DOMAIN=postern.test
WORLD_POSTERN_CONFIG=$S/postern.json
WORLD_POSTERN_SMTP=$POSTERN_IP:$POSTERN_PORT
WORLD_POSTERN_IP=$POSTERN_IP
WORLD_POSTERN_PORT=$POSTERN_PORT
WORLD_POSTERN_HOST=mx.postern.test
WORLD_POSTERN_CERT=$S/pki/mx.postern.test.chain.pem
WORLD_POSTERN_KEY=$S/pki/mx.postern.test.key
WORLD_POSTERN_DATA=$S/postern-data
WORLD_CLIENT_CERT=$S/pki/$CLIENT_CERT_BASE.chain.pem
WORLD_CLIENT_KEY=$S/pki/$CLIENT_CERT_BASE.key
WORLD_REQUIRETLS_ADDR=$REQUIRETLS_IP
WORLD_REQUIRETLS_HOST=$REQUIRETLS_HOST
WORLD_REQUIRETLS_CERT=$S/pki/$REQUIRETLS_HOST.chain.pem
WORLD_REQUIRETLS_KEY=$S/pki/$REQUIRETLS_HOST.key
WORLD_MX_IDS=$ids
WORLD_RELAY_IP=$RELAY_IP
WORLD_RELAY_SMTP=$RELAY_IP:25
WORLD_RELAY_HOST=$RELAY_HOST
WORLD_RELAY_CONF=$S/postfix-relay/conf
WORLD_RELAY_LOG=$S/postfix-relay/maillog
WORLD_ATTACK_DOMAINS=$(printf '%s.test,' $ATK_ZONES | sed 's/,$//')
WORLD_ATTACKER_STATE_DIR=$S/attack
WORLD_ATTACKER_LOG=$S/attack/attacker.log
WORLD_ATTACKER_CAPTURED=$S/attack/captured
WORLD_ATTACKER_DNS_IP=$ATK_NS_IP
WORLD_FORGED_NS_IP=$FORGED_NS_IP
WORLD_AD_PROXY=$AD_PROXY_IP:53
WORLD_AD_PROXY_IP=$AD_PROXY_IP
WORLD_ATTACKER_HTTPS_IP=$HTTPS_ATK_IP
WORLD_ATTACKER_MX_IP=$ATTACKER_MX_IP
WORLD_ATTACKER_MX_HOST=$ATTACKER_MX_HOST
WORLD_ATTACKER_KEY=$S/pki/attacker/attacker.key
WORLD_ATTACKER_SPKI_SHA256=$(attacker_tlsa | cut -d' ' -f4)
WORLD_ATTACKER_FORGED_STS_ID=forged1
WORLD_ATK_GENUINE_IP=$(mx_ip "$ATK_GENUINE")
EOC
    local z kind ip X
    while IFS='|' read -r z kind ip; do
      X=$(envname "${z#atk-}")
      echo "ATK_${X}_DOMAIN=$z.test"
      echo "ATK_${X}_DNSSEC=$kind"
      echo "ATK_${X}_MX1=mx1.$z.test"
      echo "ATK_${X}_MX1_IP=$ip"
      echo "ATK_${X}_MX2=mx2.$z.test"
      echo "ATK_${X}_MX2_IP=$(mx_ip "$ATK_GENUINE")"
    done < <(atk_rows)
    for z in $ATK_STS_DOMAINS; do echo "ATK_$(envname "${z#atk-}")_STS_HOST=mta-sts.$z.test"; done
    while IFS='|' read -r id ip host cert beh; do
      E=$(envname "$id")
      echo "MX_${E}_IP=$ip"
      echo "MX_${E}_HOST=$host"
      echo "MX_${E}_SPOOL=$S/mail/$id/Maildir/new"
      echo "MX_${E}_LOG=$S/postfix/$id/maillog"
      [ "$cert" != none ] && echo "MX_${E}_CERT=$S/pki/$host.pem"
    done < <(mx_rows)
    if [ "$WORLD_EXTRA_DOMAINS" -gt 0 ]; then
      echo "WORLD_EXTRA_DOMAINS=$WORLD_EXTRA_DOMAINS"
      echo "WORLD_EXTRA_LIST=$S/many/domains"     # 'label kind ip' per line; the domain is label.test
      echo "WORLD_EXTRA_SINK_LOG=$S/many/sink.log"
    fi
  } > "$f"
}

write_postern_json() {
  local ca="$S/pki/ca.pem"
  cat > "$S/postern.json" <<EOC
{
  "server": {
    "hostname": "mx.postern.test",
    "listeners": {
      "smtp": { "bind": "$POSTERN_IP:$POSTERN_PORT", "protocol": "smtp" }
    }
  },
  "certificates": {
    "default": {
      "cert": "%{file:$S/pki/mx.postern.test.chain.pem}%",
      "privateKey": "%{file:$S/pki/mx.postern.test.key}%"
    }
  },
  "session": {
    "relayNetworks": [ "127.0.0.0/8" ]
  },
  "outbound": {
    "tls": { "match": [ { "if": "retry_num > 1 && last_error == 'tls'", "then": "'disable-tls'" },
                        { "if": "retry_num > 0 && last_error == 'tls'", "then": "'invalid-tls'" } ],
             "else": "'default'" },
    "tlsStrategies": { "disable-tls": { "startTls": "disable" } },
    "retry": [ "2s", "2s", "3s" ],
    "mxPort": 25,
    "caFile": "$ca"
  },
  "resolver": {
    "nameservers": [ "$RESOLVER_IP:53" ],
    "dnssec": "validate",
    "trustAnchors": "$S/dns/trust-anchors.dnskey",
    "timeout": "2s",
    "attempts": 2
  },
  "mtaSts": { "caFile": "$ca", "refresh": true },
  "reports": {
    "submitter": "mx.postern.test",
    "tls": { "orgName": "'postern test world'", "contactInfo": "'postmaster@postern.test'",
             "fromName": "'postern TLS reports'", "fromAddress": "'noreply-tls@postern.test'",
             "subject": "'TLS report'", "sendFrequency": "'daily'", "maxReportSize": 1048576,
             "dkimSignDomain": "'postern.test'" }
  },
  "dkim": {
    "postern.test": { "selector": "$DKIM_SELECTOR", "algorithm": "ed25519-sha256",
                      "privateKey": "%{file:$S/pki/dkim.key}%" }
  },
  "tlsa": {
    "providers": {
      "world": { "type": "rfc2136", "server": "$KNOT_IP:53", "zone": "postern.test",
                 "key": { "name": "${TSIG_NAME%.}", "algorithm": "$TSIG_ALG",
                          "secret": "%{file:$S/dns/tsig.secret}%" } }
    }
  },
  "storage": { "path": "$S/postern-data" }
}
EOC
}

# ---------------------------------------------------------------- commands
state_dir_arg() {
  [ $# -ge 1 ] && [ -n "$1" ] || die "usage: world.sh ${CMD:-COMMAND} STATEDIR"
  case $1 in *[[:space:]]*) die "STATEDIR must not contain white space: '$1'";; esac
  S=$(realpath -m -- "$1")
  [ "$S" != / ] || die "refusing STATEDIR=/"
}
need_root() { [ "$(id -u)" = 0 ] || die "the test world needs root (ports 25/53/443, postfix, knot)"; }

cmd_down() {
  [ -d "$S/pids" ] || return 0
  # all at once: daemons need 1-2 s each to wind down after SIGTERM
  stop_pidfiles "$S"/pids/*.pid
  return 0
}

cmd_up() {
  need_root
  ensure_packages
  if [ -e "$S" ]; then
    if [ -f "$S/.postern-world" ]; then
      cmd_down
      find "$S" -mindepth 1 -delete
    elif [ -n "$(ls -A "$S")" ]; then
      die "$S exists, is not empty and is not a world state dir; refusing to wipe it"
    fi
  fi
  check_conflicts
  mkdir -p "$S"
  touch "$S/.postern-world"
  # daemons that drop privileges (postfix, virtual delivery as nobody) must traverse STATEDIR
  chmod 755 "$S"
  local p="$S" perm
  while [ "$p" != / ]; do
    p=$(dirname "$p"); perm=$(stat -c %a "$p")
    [ $(( 8#$perm & 1 )) = 1 ] || die "$p is not world-traversable (mode $perm); pick a STATEDIR under /tmp"
  done
  mkdir -p "$S/pids" "$S/postern-data"
  extra_init
  trap 'rc=$?; if [ $rc != 0 ]; then log "up failed; tearing down"; cmd_down; fi' EXIT
  local t0=$SECONDS
  make_pki; phase make_pki
  make_dns; phase make_dns
  start_knot; phase start_knot
  start_lame; phase start_lame
  start_forged; phase start_forged
  start_faultdns; phase start_faultdns
  start_dns_attacker; phase start_dns_attacker
  start_unbound; phase start_unbound
  start_postfixes; phase start_postfixes
  if [ "$WORLD_EXTRA_DOMAINS" -gt 0 ]; then start_extra_sink; phase start_extra_sink; fi
  start_smtp_attacker; phase start_smtp_attacker
  write_nginx
  start_nginx; phase start_nginx
  start_https_attacker; phase start_https_attacker
  start_tlsrpt; phase start_tlsrpt
  relay_write
  write_env
  write_postern_json
  # the world is up when the resolver validates the anchor zone
  local i ok=0
  for i in $(seq 1 50); do
    if dig @"$RESOLVER_IP" +dnssec +time=1 +tries=1 dane-ok.test. MX 2>/dev/null | grep -q 'flags:.* ad'; then ok=1; break; fi
    sleep 0.1
  done
  [ $ok = 1 ] || die "Unbound does not validate dane-ok.test (see $S/unbound/unbound.log)"
  trap - EXIT
  log "up in $((SECONDS - t0)) s; environment in $S/world.env"
}

cmd_status() {
  local f rc=0
  for f in "$S"/pids/*.pid; do
    [ -f "$f" ] || continue
    if pidfile_alive "$f"; then echo "up   $(basename "$f" .pid) ($(cut -d' ' -f1 "$f"))"
    else echo "DOWN $(basename "$f" .pid)"; rc=1; fi
  done
  return $rc
}

main() {
  CMD=${1:-}; [ $# -gt 0 ] && shift
  case $CMD in
    up) state_dir_arg "$@"; cmd_up ;;
    down) state_dir_arg "$@"; cmd_down ;;
    selftest) state_dir_arg "$@"; [ -f "$S/world.env" ] || die "no world in $S (run up first)"
      exec bash "$WORLD_DIR/selftest.sh" "$S" ;;
    status) state_dir_arg "$@"; cmd_status ;;
    stop-nginx) state_dir_arg "$@"; [ -f "$S/pids/nginx.pid" ] && stop_pidfile "$S/pids/nginx.pid"; true ;;
    start-nginx) state_dir_arg "$@"; start_nginx ;;
    stop-tlsrpt) state_dir_arg "$@"; [ -f "$S/pids/tlsrpt.pid" ] && stop_pidfile "$S/pids/tlsrpt.pid"; true ;;
    start-tlsrpt) state_dir_arg "$@"; start_tlsrpt ;;
    stop-mx|start-mx)
      state_dir_arg "$@"; local id=${2:-}
      [ -n "$id" ] && [ -n "$(mx_field "$id" 1)" ] || die "usage: world.sh $CMD STATEDIR ID (one of: $(mx_rows | cut -d'|' -f1 | tr '\n' ' '))"
      if [ "$CMD" = stop-mx ]; then
        [ -f "$S/pids/mx-$id.pid" ] && stop_pidfile "$S/pids/mx-$id.pid"; true
      else
        pidfile_alive "$S/pids/mx-$id.pid" || { pf_start "$id"; pf_record "$id" "$(mx_field "$id" 2)"; }
      fi ;;
    postfix-relay-start) state_dir_arg "$@"; need_root; [ -f "$S/world.env" ] || die "no world in $S (run up first)"
      relay_ensure ;;
    postfix-relay-stop) state_dir_arg "$@"; [ -f "$S/pids/postfix-relay.pid" ] && stop_pidfile "$S/pids/postfix-relay.pid"; true ;;
    postfix-relay-send)
      state_dir_arg "$@"; need_root; [ -f "$S/world.env" ] || die "no world in $S (run up first)"
      local rcpt=${2:-} secs=${3:-30}
      [[ $rcpt == ?*@?* ]] && [[ $secs =~ ^[0-9]+$ ]] || die "usage: world.sh postfix-relay-send STATEDIR RCPT [SECONDS]"
      relay_send "$rcpt" "$secs" ;;
    attack) state_dir_arg "$@"; shift; cmd_attack "$@" ;;
    flush-dns) state_dir_arg "$@"
      unbound-control -c "$S/unbound/unbound.conf" flush_zone test. >/dev/null
      unbound-control -c "$S/unbound/unbound.conf" flush_bogus >/dev/null
      unbound-control -c "$S/unbound/unbound.conf" flush_negative >/dev/null
      unbound-control -c "$S/unbound/unbound.conf" flush_infra all >/dev/null ;;
    *) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; [ -z "$CMD" ] || [ "$CMD" = help ] || exit 2 ;;
  esac
}
main "$@"
