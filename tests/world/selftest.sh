#!/usr/bin/env bash
# Self-test of a running postern test world (no postern involved).
# Usage: selftest.sh STATEDIR   (normally through `world.sh selftest STATEDIR`)
# One "PASS: ..." or "FAIL: ... -- detail" line per check, then "N passed, M failed";
# exit status 1 if anything failed. Leaves the world as it found it (selftest mail, reports
# and DNS changes are removed again).
set -uo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
WORLD_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
S=${1:?usage: selftest.sh STATEDIR}
# shellcheck disable=SC1091
. "$S/world.env"

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $1${2:+ -- $2}"; }
check() { # description command... : pass if the command succeeds
  local d=$1; shift
  if "$@" >/dev/null 2>&1; then pass "$d"; else fail "$d"; fi
}
R=$WORLD_RESOLVER_IP
TOKEN="selftest-$$-$(date +%s)"
TMP=$(mktemp -d /tmp/world-selftest.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# ------------------------------------------------------------------ DNS
# q NAME TYPE [dig options] -> full dig output in $OUT, status in $ST, AD flag in $AD (0/1)
q() {
  local name=$1 type=$2; shift 2
  OUT=$(dig @"$R" +dnssec +time=3 +tries=1 "$@" "$name" "$type" 2>&1)
  ST=$(printf '%s\n' "$OUT" | sed -n 's/.*status: \([A-Z]*\),.*/\1/p' | head -1)
  if printf '%s\n' "$OUT" | grep -qE '^;; flags:[^;]* ad[ ;]'; then AD=1; else AD=0; fi
}
answers() { printf '%s\n' "$OUT" | awk -v t="$1" '$0 !~ /^;/ && $4 == t { $1=$2=$3=$4=""; sub(/^ +/, ""); print }'; }
expect_dns() { # NAME TYPE secure|insecure|bogus|servfail [extra dig opts]
  local name=$1 type=$2 want=$3; shift 3
  q "$name" "$type" "$@"
  case $want in
    secure) [ "$ST" = NOERROR ] && [ $AD = 1 ] && [ -n "$(answers "$type")" ] \
              && pass "dns $name $type is secure (AD)" || fail "dns $name $type is secure (AD)" "status=$ST ad=$AD" ;;
    secure-nodata) [ "$ST" = NOERROR ] && [ $AD = 1 ] && [ -z "$(answers "$type")" ] \
              && pass "dns $name $type is a secure NODATA" || fail "dns $name $type is a secure NODATA" "status=$ST ad=$AD" ;;
    insecure) [ "$ST" = NOERROR ] && [ $AD = 0 ] && [ -n "$(answers "$type")" ] \
              && pass "dns $name $type is insecure (answer, no AD)" || fail "dns $name $type is insecure (answer, no AD)" "status=$ST ad=$AD" ;;
    bogus)    local st1=$ST; q "$name" "$type" +cd
              [ "$st1" = SERVFAIL ] && [ "$ST" = NOERROR ] \
              && pass "dns $name $type is bogus (SERVFAIL; data present with +cd)" \
              || fail "dns $name $type is bogus (SERVFAIL; data present with +cd)" "status=$st1, with +cd $ST" ;;
    servfail) local t0=$SECONDS st1=$ST; q "$name" "$type" +cd
              [ "$st1" = SERVFAIL ] && [ "$ST" = SERVFAIL ] && [ $((SECONDS - t0)) -le 3 ] \
              && pass "dns $name $type answers SERVFAIL (also with +cd), fast" \
              || fail "dns $name $type answers SERVFAIL (also with +cd), fast" "status=$st1, with +cd $ST" ;;
  esac
}
spki() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1; }
lc() { tr 'A-F' 'a-f' | tr -d ' '; }

SIGNED="dane-ok dane-bad dane-cname dane-pkix dane-ta dane-sts implicit-mx tlsa-servfail nostarttls
 wrongname badtls invalidcert null-mx rcpt-reject rcpt-tempfail reports postern tlsa-cname-bogus addr-bogus requiretls legacy"
INSECURE="insecure sts-enforce sts-testing sts-testing-badcert sts-mxmismatch sts-invalidcert sts-redirect sts-404
 sts-ctype sts-big sts-badcert"

expect_dns test. SOA secure
for z in $SIGNED; do expect_dns "$z.test." SOA secure; done
for z in $INSECURE; do expect_dns "$z.test." SOA insecure; done
# insecure must be provable: the signed parent denies the DS with a signed NSEC
q insecure.test. DS
[ "$ST" = NOERROR ] && [ $AD = 1 ] && [ -z "$(answers DS)" ] \
  && pass "dns insecure.test. DS is a secure denial (provably insecure)" \
  || fail "dns insecure.test. DS is a secure denial (provably insecure)" "status=$ST ad=$AD"
expect_dns bogus.test. SOA bogus
expect_dns mx.bogus.test. A bogus

# bogus data behind secure names: a TLSA CNAME into bogus.test, an MX host inside bogus.test
expect_dns tlsa-cname-bogus.test. MX secure
expect_dns mx.tlsa-cname-bogus.test. A secure
expect_dns _25._tcp.mx.tlsa-cname-bogus.test. TLSA bogus
q _25._tcp.mx.tlsa-cname-bogus.test. TLSA +cd
[ "$(answers CNAME)" = "tlsa-cname-target.bogus.test." ] && [ "$(answers TLSA | lc)" = "311$(spki "$MX_TLSA_CNAME_BOGUS_CERT")" ] \
  && pass "dns tlsa-cname-bogus: with +cd, the TLSA CNAME leads into bogus.test, to a 3 1 1 matching the MX key" \
  || fail "dns tlsa-cname-bogus: with +cd, the TLSA CNAME leads into bogus.test, to a 3 1 1 matching the MX key" "cname='$(answers CNAME)' tlsa='$(answers TLSA)'"
q addr-bogus.test. MX
[ "$ST" = NOERROR ] && [ $AD = 1 ] && [ "$(answers MX)" = "10 mx2.bogus.test." ] \
  && pass "dns addr-bogus.test MX is secure and names mx2.bogus.test" || fail "dns addr-bogus.test MX is secure and names mx2.bogus.test" "status=$ST ad=$AD $(answers MX)"
expect_dns mx2.bogus.test. A bogus
q mx2.bogus.test. AAAA; st1=$ST; q mx2.bogus.test. AAAA +cd
[ "$st1" = SERVFAIL ] && [ "$ST" = NOERROR ] && [ -z "$(answers AAAA)" ] \
  && pass "dns mx2.bogus.test AAAA: the NODATA is bogus too (SERVFAIL; empty NOERROR with +cd)" \
  || fail "dns mx2.bogus.test AAAA: the NODATA is bogus too (SERVFAIL; empty NOERROR with +cd)" "status=$st1, with +cd $ST"

# indeterminate: mx-indeterminate.test has a correct DS in test., its MX is signed, but its
# name server (the fault proxy) answers SERVFAIL to DNSKEY queries
q mx-indeterminate.test. DS; ds=$(answers DS | awk '$3 == 2 { $1=$2=$3=""; print }' | lc); dsad=$AD
keyds=$(kdig @"$WORLD_KNOT_IP" +norec +short mx-indeterminate.test. DNSKEY | python3 -c '
import base64, hashlib, struct, sys
owner = b"".join(bytes([len(l)]) + l.encode() for l in "mx-indeterminate.test".split(".")) + b"\0"
for line in sys.stdin:
    f = line.split()
    if len(f) >= 4 and f[0] == "257":
        rdata = struct.pack("!HBB", 257, int(f[1]), int(f[2])) + base64.b64decode("".join(f[3:]))
        print(hashlib.sha256(owner + rdata).hexdigest())')
[ $dsad = 1 ] && [ -n "$ds" ] && [ "$ds" = "$keyds" ] \
  && pass "dns mx-indeterminate.test DS in test. is secure and matches the key Knot holds (so: not bogus)" \
  || fail "dns mx-indeterminate.test DS in test. is secure and matches the key Knot holds (so: not bogus)" "ad=$dsad ds=$ds key=$keyds"
q mx-indeterminate.test. NS +cd
q2=$(answers NS); q ns-fault.test. A
[ "$q2" = "ns-fault.test." ] && [ $AD = 1 ] && [ "$(answers A)" = "$WORLD_FAULT_NS_IP" ] \
  && pass "dns mx-indeterminate.test is served by ns-fault.test = $WORLD_FAULT_NS_IP (the fault proxy)" \
  || fail "dns mx-indeterminate.test is served by ns-fault.test = $WORLD_FAULT_NS_IP (the fault proxy)" "ns='$q2' a='$(answers A)'"
t0=$SECONDS; q mx-indeterminate.test. MX; st1=$ST; q mx-indeterminate.test. MX +cd
[ "$st1" = SERVFAIL ] && [ "$ST" = NOERROR ] && [ "$(answers MX)" = "10 mx.dane-ok.test." ] && [ $((SECONDS - t0)) -le 3 ] \
  && pass "dns mx-indeterminate.test MX: SERVFAIL at once; with +cd the MX (10 mx.dane-ok.test.) is there" \
  || fail "dns mx-indeterminate.test MX: SERVFAIL at once; with +cd the MX (10 mx.dane-ok.test.) is there" "status=$st1, with +cd $ST $(answers MX)"
printf '%s\n' "$OUT" | grep -qE '^mx-indeterminate\.test\.[[:space:]].*RRSIG[[:space:]]+MX ' \
  && pass "dns mx-indeterminate.test MX comes with its RRSIG under +cd" || fail "dns mx-indeterminate.test MX comes with its RRSIG under +cd"
q mx-indeterminate.test. DNSKEY +cd
[ "$ST" = SERVFAIL ] && pass "dns mx-indeterminate.test DNSKEY cannot be fetched, even with +cd (SERVFAIL)" \
  || fail "dns mx-indeterminate.test DNSKEY cannot be fetched, even with +cd (SERVFAIL)" "status=$ST"
for proto in +notcp +tcp; do
  k=$(dig @"$WORLD_FAULT_NS_IP" +norec +dnssec +time=2 +tries=1 $proto mx-indeterminate.test. DNSKEY 2>&1 | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')
  m=$(dig @"$WORLD_FAULT_NS_IP" +norec +dnssec +time=2 +tries=1 $proto mx-indeterminate.test. MX 2>&1)
  [ "$k" = SERVFAIL ] && grep -qE '^;; flags:[^;]* aa[ ;]' <<< "$m" && grep -qE 'RRSIG[[:space:]]+MX ' <<< "$m" \
    && pass "fault proxy ($proto): DNSKEY of mx-indeterminate.test is SERVFAIL; its MX passes through signed" \
    || fail "fault proxy ($proto): DNSKEY of mx-indeterminate.test is SERVFAIL; its MX passes through signed" "dnskey=$k"
done

# every MX host resolves (through the world DNS) to the address world.env gives it
IFS=, read -ra IDS <<< "$WORLD_MX_IDS"
for id in "${IDS[@]}"; do
  E=$(printf '%s' "$id" | tr 'a-z.-' 'A-Z__')
  eval "host=\$MX_${E}_HOST ip=\$MX_${E}_IP"
  cd=(); case $id in bogus|addr-bogus) cd=(+cd) ;; esac   # in bogus.test: only visible with checking disabled
  q "$host" A "${cd[@]}"
  got=$(answers A | head -1)
  [ "$got" = "$ip" ] && pass "dns $host A = $ip${cd:+ (with +cd)}" || fail "dns $host A = $ip" "got '$got' status=$ST"
done
expect_dns mx.dane-ok.test. A secure
expect_dns mx.insecure.test. A insecure

# TLSA records and the certificates they describe
q _25._tcp.mx.dane-ok.test. TLSA
[ $AD = 1 ] && [ "$(answers TLSA | lc)" = "311$(spki "$MX_DANE_OK_CERT")" ] \
  && pass "dns dane-ok TLSA 3 1 1 is secure and matches the MX certificate" \
  || fail "dns dane-ok TLSA 3 1 1 is secure and matches the MX certificate" "$(answers TLSA) ad=$AD"
q _25._tcp.mx.dane-bad.test. TLSA
[ $AD = 1 ] && [ -n "$(answers TLSA)" ] && [ "$(answers TLSA | lc)" != "311$(spki "$MX_DANE_BAD_CERT")" ] \
  && pass "dns dane-bad TLSA is secure and matches nothing" || fail "dns dane-bad TLSA is secure and matches nothing" "ad=$AD"
q _25._tcp.mx.dane-cname.test. TLSA
[ $AD = 1 ] && [ -n "$(answers CNAME)" ] && [ "$(answers TLSA | lc)" = "311$(spki "$MX_DANE_CNAME_CERT")" ] \
  && pass "dns dane-cname TLSA owner is a CNAME; target TLSA secure and matching" \
  || fail "dns dane-cname TLSA owner is a CNAME; target TLSA secure and matching" "cname='$(answers CNAME)' ad=$AD"
q _25._tcp.mx.dane-pkix.test. TLSA
[ $AD = 1 ] && [ "$(answers TLSA | awk '{print $1}' | sort -u | tr '\n' ' ')" = "0 1 " ] \
  && pass "dns dane-pkix has only usage 0/1 TLSA records (secure)" || fail "dns dane-pkix has only usage 0/1 TLSA records (secure)" "$(answers TLSA | awk '{print $1}' | tr '\n' ' ')"
q _25._tcp.mx.dane-ta.test. TLSA
[ $AD = 1 ] && [ "$(answers TLSA | lc)" = "211$(spki "$WORLD_CA")" ] \
  && pass "dns dane-ta TLSA 2 1 1 is the test CA key (secure)" || fail "dns dane-ta TLSA 2 1 1 is the test CA key (secure)"
q _25._tcp.implicit-mx.test. TLSA
[ $AD = 1 ] && [ "$(answers TLSA | lc)" = "311$(spki "$MX_IMPLICIT_MX_CERT")" ] \
  && pass "dns implicit-mx TLSA at the domain itself, secure and matching" || fail "dns implicit-mx TLSA at the domain itself, secure and matching"
expect_dns implicit-mx.test. MX secure-nodata
expect_dns implicit-mx.test. A secure
q _25._tcp.mx.insecure.test. TLSA
[ $AD = 0 ] && [ -n "$(answers TLSA)" ] && pass "dns insecure.test has a TLSA record without AD (to be ignored)" \
  || fail "dns insecure.test has a TLSA record without AD (to be ignored)" "ad=$AD"
expect_dns mx.tlsa-servfail.test. A secure
expect_dns _25._tcp.mx.tlsa-servfail.test. TLSA servfail
# issue 19: a DANE destination whose MX is a second postern the tests start (requiretls), and a
# DANE-valid Postfix without 8BITMIME and DSN (legacy)
dane_dest() { # zone ip cert: MX 10 mx.<zone>, its A = ip, TLSA 3 1 1 = the certificate's key, all secure
  local z=$1 ip=$2 cert=$3 mx a ads
  q "$z." MX; mx=$(answers MX); ads=$AD
  q "mx.$z." A; a=$(answers A); ads=$ads$AD
  q "_25._tcp.mx.$z." TLSA; ads=$ads$AD
  [ "$ads" = 111 ] && [ "$mx" = "10 mx.$z." ] && [ "$a" = "$ip" ] && [ "$(answers TLSA | lc)" = "311$(spki "$cert")" ] \
    && pass "dns $z: MX mx.$z, A $ip, TLSA 3 1 1 matching its certificate, all secure (AD)" \
    || fail "dns $z: MX mx.$z, A $ip, TLSA 3 1 1 matching its certificate, all secure (AD)" "ad(mx,a,tlsa)=$ads mx='$mx' a='$a' tlsa='$(answers TLSA)'"
}
dane_dest requiretls.test "$WORLD_REQUIRETLS_ADDR" "$WORLD_REQUIRETLS_CERT"
dane_dest legacy.test "$MX_LEGACY_IP" "$MX_LEGACY_CERT"
q null-mx.test. MX
[ $AD = 1 ] && [ "$(answers MX)" = "0 ." ] && pass "dns null-mx.test MX is '0 .' (secure)" || fail "dns null-mx.test MX is '0 .' (secure)" "$(answers MX)"
q _25._tcp.mx.dane-ok.test. TLSA +tcp
[ $AD = 1 ] && pass "dns resolver answers over TCP with AD" || fail "dns resolver answers over TCP with AD" "status=$ST"
q _smtp._tls.dane-ok.test. TXT
answers TXT | grep -q 'v=TLSRPTv1; rua=mailto:' && pass "dns dane-ok _smtp._tls TXT has a mailto: rua" || fail "dns dane-ok _smtp._tls TXT has a mailto: rua"
q "$WORLD_DKIM_SELECTOR._domainkey.postern.test." TXT
want=$(openssl pkey -in "$WORLD_DKIM_KEY" -pubout -outform DER | tail -c 32 | base64 -w0)
answers TXT | grep -q "v=DKIM1; k=ed25519; p=$want" && pass "dns DKIM key of postern.test matches WORLD_DKIM_KEY" || fail "dns DKIM key of postern.test matches WORLD_DKIM_KEY"
q _smtp._tls.sts-enforce.test. TXT
answers TXT | grep -q 'v=TLSRPTv1; rua=https://' && pass "dns sts-enforce _smtp._tls TXT has an https: rua" || fail "dns sts-enforce _smtp._tls TXT has an https: rua"
for d in sts-enforce sts-testing sts-testing-badcert sts-mxmismatch sts-invalidcert dane-sts sts-redirect sts-404 sts-ctype sts-big sts-badcert; do
  q "_mta-sts.$d.test." TXT; t=$(answers TXT)
  q "mta-sts.$d.test." A; a=$(answers A)
  [[ $t == *"v=STSv1; id="* ]] && [ "$a" = "$WORLD_NGINX_IP" ] \
    && pass "dns $d: _mta-sts TXT and mta-sts A -> nginx" || fail "dns $d: _mta-sts TXT and mta-sts A -> nginx" "txt=$t a=$a"
done
# nothing outside test. is resolved (and nothing is sent to the real root)
t0=$SECONDS; q example.com. A
[ "$ST" = NXDOMAIN ] && [ $((SECONDS - t0)) -le 2 ] && pass "dns names outside test. are NXDOMAIN at once (no real root)" \
  || fail "dns names outside test. are NXDOMAIN at once (no real root)" "status=$ST"
# the trust-anchor files describe the served key
q test. DNSKEY
served=$(answers DNSKEY | awk '$1 == 257 { $1=$2=$3=""; print }' | tr -d ' ')
anchor=$(awk '$4 == "DNSKEY" && $5 == 257 { $1=$2=$3=$4=$5=$6=$7=""; print }' "$WORLD_TRUST_ANCHORS" | tr -d ' ')
[ -n "$served" ] && [ "$served" = "$anchor" ] && pass "trust anchor file (DNSKEY) matches test. KSK" \
  || fail "trust anchor file (DNSKEY) matches test. KSK"
grep -qE '^test\. [0-9]+ IN DS [0-9]+ 13 2 [0-9a-f]{64}$' "$WORLD_TRUST_ANCHORS_DS" \
  && pass "trust anchor file (DS) is in zone-file form" || fail "trust anchor file (DS) is in zone-file form" "$(cat "$WORLD_TRUST_ANCHORS_DS")"

# ------------------------------------------------------------------ RFC 2136 + TSIG
TLSA_NAME=_25._tcp.selftest.postern.test.
HEX=$(openssl rand -hex 32)
upd() { # keyfile-or-empty action
  local k=() ; [ -n "$1" ] && k=(-k "$1")
  printf 'server %s 53\nzone postern.test.\nupdate %s %s 60 IN TLSA 3 1 1 %s\nsend\n' \
    "$WORLD_KNOT_IP" "$2" "$TLSA_NAME" "$HEX" | nsupdate -t 3 "${k[@]}" 2>&1
}
out=$(upd "" add); rc=$?
kd=$(kdig @"$WORLD_KNOT_IP" +short "$TLSA_NAME" TLSA)
[ $rc != 0 ] && [ -z "$kd" ] && pass "unsigned RFC 2136 update is refused ($(printf '%s' "$out" | tr '\n' ' ' | sed 's/ *$//'))" \
  || fail "unsigned RFC 2136 update is refused" "rc=$rc knot has '$kd'"
out=$(upd "$WORLD_TSIG_KEYFILE" add); rc=$?
ok=0
if [ $rc = 0 ]; then
  for i in $(seq 1 30); do
    q "$TLSA_NAME" TLSA
    [ $AD = 1 ] && [ "$(answers TLSA | lc)" = "311$HEX" ] && { ok=1; break; }
    sleep 0.2
  done
fi
[ $ok = 1 ] && pass "TSIG-signed update adds a TLSA record, visible through Unbound with AD" \
  || fail "TSIG-signed update adds a TLSA record, visible through Unbound with AD" "rc=$rc $out status=$ST ad=$AD"
out=$(upd "$WORLD_TSIG_KEYFILE" delete); rc=$?
ok=0
for i in $(seq 1 30); do
  q "$TLSA_NAME" TLSA
  [ "$ST" = NXDOMAIN ] && [ $AD = 1 ] && { ok=1; break; }
  sleep 0.2
done
[ $ok = 1 ] && pass "TSIG-signed update removes it again (secure NXDOMAIN)" \
  || fail "TSIG-signed update removes it again (secure NXDOMAIN)" "rc=$rc status=$ST ad=$AD"
# the key works with knsupdate's -y form too (what other clients use)
out=$(printf 'server %s 53\nzone postern.test.\nupdate delete %s TLSA\nsend\n' "$WORLD_KNOT_IP" "$TLSA_NAME" \
  | knsupdate -y "$WORLD_TSIG_ALGORITHM:$WORLD_TSIG_NAME:$(cat "$WORLD_TSIG_SECRET_FILE")" 2>&1)
[ $? = 0 ] && pass "knsupdate with -y ALG:NAME:SECRET from world.env is accepted" || fail "knsupdate with -y ALG:NAME:SECRET from world.env is accepted" "$out"

# ------------------------------------------------------------------ receiving MTAs
ehlo_keywords() { # ip -> the EHLO keywords, one a line, upper case
  python3 - "$1" <<'EOF'
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="selftest.test", timeout=5)
code, msg = s.ehlo()
print("\n".join(l.split(" ")[0].upper() for l in msg.decode().splitlines()[1:]))
s.quit()
EOF
}
offers_starttls() { # ip -> 0 if the EHLO reply lists the STARTTLS keyword, 1 if not
  local r
  r=$(ehlo_keywords "$1") || return 2
  grep -qx STARTTLS <<< "$r"
}
# tls_ok IP HOST: a TLS 1.2+ handshake works; then prints whether PKIX verification with the test CA succeeded
tls_verify() { # ip host extra-openssl-args -> rc of a verifying handshake
  local ip=$1 host=$2; shift 2
  echo QUIT | timeout 5 openssl s_client -connect "$ip:25" -starttls smtp -servername "$host" \
    -CAfile "$WORLD_CA" -verify_hostname "$host" -verify_return_error "$@" >/dev/null 2>&1
}
tls_any() { # ip extra-args: handshake works, no verification
  echo QUIT | timeout 5 openssl s_client -connect "$1:25" -starttls smtp "${@:2}" >/dev/null 2>&1
}
send() { # ip rcpt tls(yes/no) [swaks args] -> swaks output in $SW, rc in $SWRC
  local tlsopt=(); [ "$3" = yes ] && tlsopt=(--tls)
  SW=$(timeout 20 swaks --server "$1:25" --helo selftest.test --from "selftest@postern.test" --to "$2" \
        --header "X-World-Selftest: $TOKEN" --header "Subject: world selftest $2" "${tlsopt[@]}" "${@:4}" 2>&1); SWRC=$?
}
spool_wait() { # spool rcpt -> this run's message to rcpt: its file in $F (empty if none within 5 s)
  local i
  for i in $(seq 1 50); do
    F=$(grep -l "X-World-Selftest: $TOKEN" "$1"/* 2>/dev/null | xargs -r grep -l "^Delivered-To: $2\$" 2>/dev/null | head -1)
    [ -n "$F" ] && return 0; sleep 0.1
  done
  return 1
}
declare -A EXPECT=()   # spool|rcpt -> yes (TLS) / no (plain)
domain_of() { case $1 in mx.*) echo "${1#mx.}";; *) echo "$1";; esac; }

for id in "${IDS[@]}"; do
  E=$(printf '%s' "$id" | tr 'a-z.-' 'A-Z__')
  eval "host=\$MX_${E}_HOST ip=\$MX_${E}_IP spool=\$MX_${E}_SPOOL"
  dom=$(domain_of "$host")
  case $id in
    nostarttls)
      offers_starttls "$ip"; [ $? = 1 ] && pass "mta $id does not offer STARTTLS" || fail "mta $id does not offer STARTTLS"
      send "$ip" "user@$dom" no
      [ $SWRC = 0 ] && pass "mta $id accepts plaintext mail" || fail "mta $id accepts plaintext mail" "$(tail -3 <<< "$SW")"
      EXPECT["$spool|user@$dom"]=no ;;
    badtls)
      offers_starttls "$ip" && pass "mta $id offers STARTTLS" || fail "mta $id offers STARTTLS"
      tls_any "$ip" -tls1_2 && fail "mta $id: TLS 1.2 handshake fails" || pass "mta $id: TLS 1.2 handshake fails"
      tls_any "$ip" -tls1_3 && fail "mta $id: TLS 1.3 handshake fails" || pass "mta $id: TLS 1.3 handshake fails"
      tls_any "$ip" -tls1 -cipher 'DEFAULT:@SECLEVEL=0' && pass "mta $id: only a TLS 1.0 SECLEVEL=0 client gets through" \
        || fail "mta $id: only a TLS 1.0 SECLEVEL=0 client gets through"
      send "$ip" "user@$dom" no
      [ $SWRC = 0 ] && pass "mta $id accepts plaintext mail" || fail "mta $id accepts plaintext mail" "$(tail -3 <<< "$SW")"
      EXPECT["$spool|user@$dom"]=no ;;
    *)
      offers_starttls "$ip" && pass "mta $id offers STARTTLS" || fail "mta $id offers STARTTLS"
      case $id in
        wrongname)
          tls_any "$ip" -tls1_2 && pass "mta $id: TLS works" || fail "mta $id: TLS works"
          tls_verify "$ip" "$host" && fail "mta $id: certificate is not valid for $host" || pass "mta $id: certificate is not valid for $host"
          tls_verify "$ip" mx.somewhere-else.test && pass "mta $id: certificate is test-CA-signed for another name" || fail "mta $id: certificate is test-CA-signed for another name" ;;
        invalidcert)
          tls_any "$ip" -tls1_2 && pass "mta $id: TLS works" || fail "mta $id: TLS works"
          tls_verify "$ip" "$host" && fail "mta $id: certificate is not trusted by the test CA" || pass "mta $id: certificate is not trusted by the test CA" ;;
        *)
          tls_verify "$ip" "$host" -tls1_3 && pass "mta $id: TLS 1.3, certificate valid for $host under the test CA" \
            || fail "mta $id: TLS 1.3, certificate valid for $host under the test CA"
          tls_verify "$ip" "$host" -tls1_2 && pass "mta $id: TLS 1.2 works too" || fail "mta $id: TLS 1.2 works too" ;;
      esac
      case $id in
        rcpt-reject)
          send "$ip" "nobody@$dom" yes
          grep -qE '^<[~*]\* +550 5\.1\.1' <<< "$SW" && pass "mta $id rejects nobody@ with 550 5.1.1" || fail "mta $id rejects nobody@ with 550 5.1.1" "$(grep -E '^<[~*]\*' <<< "$SW")"
          send "$ip" "ok@$dom" yes
          [ $SWRC = 0 ] && pass "mta $id accepts ok@ over TLS" || fail "mta $id accepts ok@ over TLS" "$(tail -3 <<< "$SW")"
          EXPECT["$spool|ok@$dom"]=yes ;;
        rcpt-tempfail)
          send "$ip" "nobody@$dom" yes
          grep -qE '^<[~*]\* +4[0-9][0-9] 4\.' <<< "$SW" && pass "mta $id answers nobody@ with 4xx" || fail "mta $id answers nobody@ with 4xx" "$(grep -E '^<[~*]\*' <<< "$SW")"
          send "$ip" "ok@$dom" yes
          [ $SWRC = 0 ] && pass "mta $id accepts ok@ over TLS" || fail "mta $id accepts ok@ over TLS" "$(tail -3 <<< "$SW")"
          EXPECT["$spool|ok@$dom"]=yes ;;
        *)
          send "$ip" "user@$dom" yes
          [ $SWRC = 0 ] && pass "mta $id accepts mail over STARTTLS" || fail "mta $id accepts mail over STARTTLS" "$(tail -3 <<< "$SW")"
          EXPECT["$spool|user@$dom"]=yes ;;
      esac ;;
  esac
done
# delivery is asynchronous (queue -> virtual): wait for every message, check its Received header
for key in "${!EXPECT[@]}"; do
  spool=${key%%|*}; rcpt=${key#*|}; tls=${EXPECT[$key]}
  spool_wait "$spool" "$rcpt"; f=$F
  if [ -z "$f" ]; then fail "mail to $rcpt lands in $spool"; continue; fi
  pass "mail to $rcpt lands in its spool"
  if [ "$tls" = yes ]; then
    grep -qE '^[[:space:]]+\(using TLSv1\.[23] with cipher' "$f" && pass "mail to $rcpt has the TLS Received header" \
      || fail "mail to $rcpt has the TLS Received header" "$(grep -A3 '^Received:' "$f" | head -4 | tr '\n' ' ')"
  else
    grep -q '(using TLS' "$f" && fail "mail to $rcpt arrived without TLS" || pass "mail to $rcpt arrived without TLS (no TLS in Received)"
  fi
  rm -f "$f"
done

# ------------------------------------------------------------------ issue 19: certificates, legacy
# test-CA-signed for the name and purpose, ECDSA P-256, the key belongs to it (mode 0600), the file is leaf + CA
pki_pair() { # cert key name purpose
  openssl verify -CAfile "$WORLD_CA" -verify_hostname "$3" -purpose "$4" "$1" >/dev/null 2>&1 \
    && [ "$(openssl x509 -in "$1" -noout -pubkey)" = "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ] \
    && openssl pkey -in "$2" -noout -text 2>/dev/null | grep -q 'prime256v1' \
    && [ "$(grep -c 'BEGIN CERTIFICATE' "$1")" = 2 ] && [ "$(stat -c %a "$2")" = 600 ]
}
pki_pair "$WORLD_CLIENT_CERT" "$WORLD_CLIENT_KEY" mx.postern.test sslclient \
  && [ "$(openssl x509 -in "$WORLD_CLIENT_CERT" -noout -subject)" = "subject=CN = mx.postern.test" ] \
  && pass "WORLD_CLIENT_CERT: test-CA client certificate (clientAuth) for CN/SAN mx.postern.test, P-256, leaf + CA; WORLD_CLIENT_KEY is its key" \
  || fail "WORLD_CLIENT_CERT: test-CA client certificate for mx.postern.test, with WORLD_CLIENT_KEY"
pki_pair "$WORLD_REQUIRETLS_CERT" "$WORLD_REQUIRETLS_KEY" mx.requiretls.test sslserver \
  && pass "WORLD_REQUIRETLS_CERT: test-CA certificate for mx.requiretls.test, P-256, leaf + CA; WORLD_REQUIRETLS_KEY is its key" \
  || fail "WORLD_REQUIRETLS_CERT: test-CA certificate for mx.requiretls.test, with WORLD_REQUIRETLS_KEY"
[ -z "$(ss -Hltn "src $WORLD_REQUIRETLS_ADDR" 2>/dev/null)" ] && pass "nothing listens on $WORLD_REQUIRETLS_ADDR (left to the second postern the tests start)" \
  || fail "nothing listens on $WORLD_REQUIRETLS_ADDR" "$(ss -Hltn "src $WORLD_REQUIRETLS_ADDR")"
kw=$(ehlo_keywords "$MX_LEGACY_IP" | tr '\n' ' ')
[[ " $kw" == *" STARTTLS "* ]] && [[ " $kw" != *" 8BITMIME "* ]] && [[ " $kw" != *" DSN "* ]] \
  && pass "mta legacy: EHLO offers STARTTLS, neither 8BITMIME nor DSN" || fail "mta legacy: EHLO offers STARTTLS, neither 8BITMIME nor DSN" "$kw"
send "$MX_LEGACY_IP" someone@legacy.test yes --tls-cert "$WORLD_CLIENT_CERT" --tls-key "$WORLD_CLIENT_KEY"
kw=$(sed -n 's/^<~  250[- ]\([A-Za-z0-9]*\).*/\1/p' <<< "$SW" | tr 'a-z\n' 'A-Z ')
[ $SWRC = 0 ] && grep -q '^=== TLS local DN="/CN=mx.postern.test"' <<< "$SW" && [[ " $kw" == *" CHUNKING "* ]] \
  && [[ " $kw" != *" 8BITMIME "* ]] && [[ " $kw" != *" DSN "* ]] \
  && pass "mta legacy: swaks --tls with WORLD_CLIENT_CERT/KEY is accepted; the EHLO after STARTTLS has neither 8BITMIME nor DSN" \
  || fail "mta legacy: swaks --tls with WORLD_CLIENT_CERT/KEY is accepted; no 8BITMIME or DSN after STARTTLS" "swaks=$SWRC keywords: $kw $(tail -3 <<< "$SW")"
if spool_wait "$MX_LEGACY_SPOOL" someone@legacy.test; then
  grep -qF '(Client CN "mx.postern.test", Issuer "postern test world CA" (verified OK))' "$F" \
    && pass "mta legacy: delivered; Received: names the client certificate (CN mx.postern.test, the test CA, verified OK)" \
    || fail "mta legacy: Received: names the client certificate" "$(sed -n '/^Received:/,/^[^[:space:]R]/p' "$F" | head -7 | tr '\n' ' ')"
  rm -f "$F"
else
  fail "mta legacy: the client-certificate mail to someone@legacy.test lands in its spool"
fi
# TLS 1.3 resumption: a second connection offering the first one's session ticket is resumed
resume() { # out|in -> openssl's "New, …" or "Reused, …" line
  (sleep 0.5; echo QUIT) | timeout 5 openssl s_client -connect "$MX_LEGACY_IP:25" -starttls smtp -servername "$MX_LEGACY_HOST" \
    -tls1_3 "-sess_$1" "$TMP/legacy.sess" 2>/dev/null | grep -E '^(New|Reused), '
}
reused_logged() { tail -n +$((n0 + 1)) "$MX_LEGACY_LOG" | grep -q ': Reusing old session (RFC 5077 session ticket)$'; }
n0=$(wc -l < "$MX_LEGACY_LOG")
r1=$(resume out); r2=$(resume in)
for i in $(seq 1 20); do reused_logged && break; sleep 0.1; done
[[ $r1 == "New, TLSv1.3,"* ]] && [[ $r2 == "Reused, TLSv1.3,"* ]] \
  && pass "mta legacy: TLS 1.3 session resumption (openssl: '$r1', then '$r2')" || fail "mta legacy: TLS 1.3 session resumption" "first '$r1', second '$r2'"
reused_logged && pass "mta legacy: Postfix logs 'Reusing old session (RFC 5077 session ticket)' for it" \
  || fail "mta legacy: Postfix logs 'Reusing old session (RFC 5077 session ticket)' for it"

# ------------------------------------------------------------------ Postfix as a DANE relay
# The reference: Postfix (dnssec + dane) delivers to dane-ok and defers each attack case.
relay_was_up=0
relay_log0=$(cat "$WORLD_RELAY_LOG" 2>/dev/null | wc -l)   # look only at what this run logs
"$WORLD_DIR/world.sh" status "$S" 2>/dev/null | grep -q '^up   postfix-relay ' && relay_was_up=1
if "$WORLD_DIR/world.sh" postfix-relay-start "$S" >"$TMP/relay-start" 2>&1; then
  pass "postfix relay runs (own mount namespace, resolv.conf = $WORLD_RESOLVER_IP only)"
  # domain | expected line (glob)
  RELAY_CASES="dane-ok|delivered: Verified TLS connection established to mx.dane-ok.test\[*; Matched DANE EE certificate at depth 0: 3 1 1 *
bogus|deferred: *Name service error for name=bogus.test type=MX: Host not found, try again
dane-bad|deferred: Server certificate not verified
tlsa-servfail|deferred: TLSA lookup error for mx.tlsa-servfail.test:25
tlsa-cname-bogus|deferred: TLSA lookup error for mx.tlsa-cname-bogus.test:25
addr-bogus|deferred: *Name service error for name=mx2.bogus.test type=A: Host not found, try again
mx-indeterminate|deferred: *Name service error for name=mx-indeterminate.test type=MX: Host not found, try again"
  while IFS='|' read -r d want; do
    "$WORLD_DIR/world.sh" postfix-relay-send "$S" "relay-$TOKEN@$d.test" 20 >"$TMP/relay.$d" 2>&1 &
  done <<< "$RELAY_CASES"
  wait
  while IFS='|' read -r d want; do
    got=$(cat "$TMP/relay.$d")
    # shellcheck disable=SC2053
    [[ $got == $want ]] && pass "postfix relay to $d.test: ${got%%: *} ($(cut -c1-90 <<< "${got#*: }"))" \
      || fail "postfix relay to $d.test: ${want%%: *}" "got: $got"
    if [ "$d" != dane-ok ]; then
      hit=$(grep -l "^Delivered-To: relay-$TOKEN@$d.test\$" "$S"/mail/*/Maildir/new/* 2>/dev/null | head -1)
      [ -z "$hit" ] && pass "postfix relay: nothing delivered for $d.test" || fail "postfix relay: nothing delivered for $d.test" "$hit"
    fi
  done <<< "$RELAY_CASES"
  f=""
  for i in $(seq 1 50); do
    f=$(grep -l "^Delivered-To: relay-$TOKEN@dane-ok.test\$" "$MX_DANE_OK_SPOOL"/* 2>/dev/null | head -1)
    [ -n "$f" ] && break; sleep 0.1
  done
  [ -n "$f" ] && pass "postfix relay: the dane-ok.test message is in the dane-ok spool" || fail "postfix relay: the dane-ok.test message is in the dane-ok spool"
  [ -n "$f" ] && rm -f "$f"
  probe=$(tail -n +$((relay_log0 + 1)) "$WORLD_RELAY_LOG" | grep -A1 'warning: DNSSEC validation may be unavailable' | tr '\n' ' ')
  [ -z "$probe" ] && pass "postfix relay: no 'DNSSEC validation may be unavailable' warning (dnssec_probe = ns:test)" \
    || fail "postfix relay: no 'DNSSEC validation may be unavailable' warning (dnssec_probe = ns:test)" "$probe"
  [ $relay_was_up = 1 ] || "$WORLD_DIR/world.sh" postfix-relay-stop "$S"
else
  fail "postfix relay runs (own mount namespace, resolv.conf = $WORLD_RESOLVER_IP only)" "$(cat "$TMP/relay-start")"
fi

# ------------------------------------------------------------------ MTA-STS over HTTPS
fetch() { # domain [curl args] -> "$CODE $CTYPE $SIZE" in $RES, body in $TMP/body, curl rc in $CRC
  local d=$1 ip; shift
  ip=$(dig @"$R" +short "mta-sts.$d.test." A | head -1)
  RES=$(curl -sS --max-time 5 --cacert "$WORLD_CA" --resolve "mta-sts.$d.test:443:${ip:-0.0.0.0}" -o "$TMP/body" \
        -w '%{http_code} %{content_type} %{size_download}' "$@" "https://mta-sts.$d.test/.well-known/mta-sts.txt" 2>"$TMP/err"); CRC=$?
}
for pair in sts-enforce:enforce sts-testing:testing sts-testing-badcert:testing sts-mxmismatch:enforce sts-invalidcert:enforce dane-sts:enforce; do
  d=${pair%%:*} mode=${pair#*:}
  fetch "$d"
  [ $CRC = 0 ] && [[ $RES == "200 text/plain"* ]] && grep -q '^version: STSv1' "$TMP/body" && grep -q "^mode: $mode" "$TMP/body" \
    && pass "mta-sts $d: policy ($mode) served over verified HTTPS as text/plain" \
    || fail "mta-sts $d: policy ($mode) served over verified HTTPS as text/plain" "rc=$CRC $RES $(cat "$TMP/err")"
done
fetch sts-redirect
[ $CRC = 0 ] && [[ $RES == "301 "* ]] && pass "mta-sts sts-redirect answers 301" || fail "mta-sts sts-redirect answers 301" "rc=$CRC $RES"
fetch sts-404
[ $CRC = 0 ] && [[ $RES == "404 "* ]] && pass "mta-sts sts-404 answers 404" || fail "mta-sts sts-404 answers 404" "rc=$CRC $RES"
fetch sts-ctype
[ $CRC = 0 ] && [[ $RES == "200 "* ]] && [[ $RES != "200 text/plain"* ]] && pass "mta-sts sts-ctype answers 200 with a non-text/plain type ($(cut -d' ' -f2 <<< "$RES"))" \
  || fail "mta-sts sts-ctype answers 200 with a non-text/plain type" "rc=$CRC $RES"
fetch sts-big
[ $CRC = 0 ] && [[ $RES == "200 text/plain"* ]] && [ "${RES##* }" -gt 65536 ] && pass "mta-sts sts-big serves a text/plain body over 64 KiB (${RES##* } bytes)" \
  || fail "mta-sts sts-big serves a text/plain body over 64 KiB" "rc=$CRC $RES"
fetch sts-badcert
c1=$CRC; fetch sts-badcert -k
[ $c1 = 60 ] && [[ $RES == "200 "* ]] && pass "mta-sts sts-badcert: certificate not trusted (curl rc 60), policy there with -k" \
  || fail "mta-sts sts-badcert: certificate not trusted (curl rc 60), policy there with -k" "rc=$c1 / $RES"
"$WORLD_DIR/world.sh" stop-nginx "$S"
fetch sts-enforce
[ $CRC != 0 ] && pass "stop-nginx: policy fetch fails (curl rc $CRC)" || fail "stop-nginx: policy fetch fails" "$RES"
"$WORLD_DIR/world.sh" start-nginx "$S"
fetch sts-enforce
[ $CRC = 0 ] && [[ $RES == "200 "* ]] && pass "start-nginx: policy served again" || fail "start-nginx: policy served again" "rc=$CRC $RES"

# ------------------------------------------------------------------ TLS-RPT HTTPS sink
printf '{"organization-name":"world selftest %s"}' "$TOKEN" | gzip > "$TMP/report.gz"
code=$(curl -sS --max-time 5 --cacert "$WORLD_CA" --resolve "tlsrpt.test:443:$WORLD_TLSRPT_IP" -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/tlsrpt+gzip' --data-binary @"$TMP/report.gz" "$WORLD_TLSRPT_URL" 2>&1)
meta=$(grep -l "\"size\": $(stat -c %s "$TMP/report.gz")" "$WORLD_TLSRPT_DIR"/*.json 2>/dev/null | while read -r m; do
         cmp -s "${m%.json}.body" "$TMP/report.gz" && echo "$m"; done | head -1)
[ "$code" = 200 ] && [ -n "$meta" ] && grep -q '"contentType": "application/tlsrpt+gzip"' "$meta" \
  && pass "tls-rpt sink stores an application/tlsrpt+gzip POST to $WORLD_TLSRPT_URL" \
  || fail "tls-rpt sink stores an application/tlsrpt+gzip POST to $WORLD_TLSRPT_URL" "code=$code"
[ -n "$meta" ] && rm -f "$meta" "${meta%.json}.body"

# ------------------------------------------------------------------ attackers (README "Attacks")
W="$WORLD_DIR/world.sh"
atk() { "$W" attack "$S" "$@"; }
G_CERT=$MX_ATK_GENUINE_CERT
GSPOOL=$MX_ATK_GENUINE_SPOOL
# the attack command: silent on success; a bad mode is refused on stderr with exit 2
out=$(atk smtp atk-opp.test pass 2>&1); rc=$?
[ $rc = 0 ] && [ -z "$out" ] && pass "attack: a valid command prints nothing and exits 0" || fail "attack: a valid command prints nothing and exits 0" "rc=$rc '$out'"
atk smtp atk-opp.test no-such-mode >"$TMP/o" 2>"$TMP/e"; rc=$?
[ $rc = 2 ] && [ ! -s "$TMP/o" ] && grep -q 'unknown mode' "$TMP/e" && pass "attack: an unknown mode exits 2 with the reason on stderr" \
  || fail "attack: an unknown mode exits 2 with the reason on stderr" "rc=$rc $(cat "$TMP/o" "$TMP/e")"
atk dns dane-ok.test MX forge 2>/dev/null; [ $? = 2 ] && pass "attack: dns refuses names outside the attacked zones" || fail "attack: dns refuses names outside the attacked zones"
atk reset

# DNS of the destinations under attack (all modes pass)
for z in atk-dane-ee atk-dane-ta attacker; do expect_dns "$z.test." SOA secure; done
# nothing reaches the atk-* zones past the attacker: Knot refuses them on its main address
st=$(kdig @"$WORLD_KNOT_IP" +norec mx1.atk-dane-ee.test. A 2>&1 | sed -n 's/.*status: \([A-Z]*\).*/\1/p' | head -1)
# (mod-queryacl answers NOTAUTH; REFUSED would do as well: no data either way)
case $st in REFUSED|NOTAUTH) true ;; *) false ;; esac && pass "knot refuses the atk-* zones on $WORLD_KNOT_IP ($st; only the attacker's upstream address answers)" \
  || fail "knot refuses the atk-* zones on $WORLD_KNOT_IP" "status=$st"
for z in atk-sts-enforce atk-sts-testing atk-opp; do expect_dns "$z.test." SOA insecure; done
q atk-opp.test. DS
[ "$ST" = NOERROR ] && [ $AD = 1 ] && [ -z "$(answers DS)" ] \
  && pass "dns atk-opp.test. DS is a secure denial (provably insecure)" || fail "dns atk-opp.test. DS is a secure denial" "status=$ST ad=$AD"
IFS=, read -ra ATKD <<< "$WORLD_ATTACK_DOMAINS"
for d in "${ATKD[@]}"; do
  X=$(printf '%s' "${d#atk-}" | sed 's/\.test$//' | tr 'a-z.-' 'A-Z__')
  eval "ip1=\$ATK_${X}_MX1_IP ip2=\$ATK_${X}_MX2_IP"
  q "$d." NS +cd; ns=$(answers NS)
  q "$d." MX; mx=$(answers MX | sort | tr '\n' ' ')
  q "mx1.$d." A; a1=$(answers A); q "mx2.$d." A; a2=$(answers A)
  q "_smtp._tls.$d." TXT; t=$(answers TXT)
  [ "$ns" = "ns-atk.test." ] && [ "$mx" = "10 mx1.$d. 20 mx2.$d. " ] && [ "$a1" = "$ip1" ] && [ "$a2" = "$ip2" ] \
    && [[ $t == *"rua=mailto:tlsrpt@reports.test"* ]] \
    && pass "dns $d: NS ns-atk.test, MX 10 mx1 ($ip1, the SMTP attacker) and 20 mx2 ($ip2, genuine), TLS-RPT mailto" \
    || fail "dns $d: NS ns-atk.test, MX 10 mx1 and 20 mx2, TLS-RPT" "ns=$ns mx=$mx a1=$a1 a2=$a2 t=$t"
done
for h in mx1 mx2; do
  q "_25._tcp.$h.atk-dane-ee.test." TLSA
  [ $AD = 1 ] && [ "$(answers TLSA | lc)" = "311$(spki "$G_CERT")" ] && pass "dns atk-dane-ee: $h TLSA 3 1 1 is secure and matches the genuine MTA's key" \
    || fail "dns atk-dane-ee: $h TLSA 3 1 1 is secure and matches the genuine MTA's key" "$(answers TLSA) ad=$AD"
  q "_25._tcp.$h.atk-dane-ta.test." TLSA
  [ $AD = 1 ] && [ "$(answers TLSA | lc)" = "211$(spki "$WORLD_CA")" ] && pass "dns atk-dane-ta: $h TLSA 2 1 1 is the test CA key (secure)" \
    || fail "dns atk-dane-ta: $h TLSA 2 1 1 is the test CA key (secure)" "$(answers TLSA) ad=$AD"
done
for d in atk-sts-enforce atk-sts-testing; do
  q "_mta-sts.$d.test." TXT; t=$(answers TXT); q "mta-sts.$d.test." A; a=$(answers A)
  [ "$t" = "\"v=STSv1; id=$WORLD_STS_ID;\"" ] && [ "$a" = "$WORLD_ATTACKER_HTTPS_IP" ] \
    && pass "dns $d: _mta-sts id=$WORLD_STS_ID, mta-sts A -> the HTTPS attacker" || fail "dns $d: _mta-sts and mta-sts A" "txt=$t a=$a"
done
q mx.attacker.test. A; a=$(answers A); ad1=$AD; q _25._tcp.mx.attacker.test. TLSA
[ "$a" = "$WORLD_ATTACKER_MX_IP" ] && [ $ad1 = 1 ] && [ $AD = 1 ] && [ "$(answers TLSA | lc)" = "311$WORLD_ATTACKER_SPKI_SHA256" ] \
  && pass "dns attacker.test: mx.attacker.test = $WORLD_ATTACKER_MX_IP with a secure TLSA for the attacker's key" \
  || fail "dns attacker.test: mx.attacker.test with a secure TLSA" "a=$a tlsa=$(answers TLSA)"

# DNS attacks (each switched on, checked, and reset)
atk dns _25._tcp.mx1.atk-dane-ee.test TLSA forge
q _25._tcp.mx1.atk-dane-ee.test. TLSA; st1=$ST; q _25._tcp.mx1.atk-dane-ee.test. TLSA +cd
[ "$st1" = SERVFAIL ] && [ "$(answers TLSA | lc)" = "311$WORLD_ATTACKER_SPKI_SHA256" ] && grep -qE 'RRSIG[[:space:]]+TLSA ' <<< "$OUT" \
  && pass "dns forge (signed zone): Unbound SERVFAILs; with +cd the forged TLSA (attacker key) and a foreign RRSIG" \
  || fail "dns forge (signed zone): Unbound SERVFAILs; with +cd the forged TLSA" "status=$st1 tlsa=$(answers TLSA)"
atk dns _25._tcp.mx1.atk-dane-ee.test TLSA forge-unsigned
q _25._tcp.mx1.atk-dane-ee.test. TLSA; st1=$ST; q _25._tcp.mx1.atk-dane-ee.test. TLSA +cd
[ "$st1" = SERVFAIL ] && [ "$(answers TLSA | lc)" = "311$WORLD_ATTACKER_SPKI_SHA256" ] && ! grep -qE 'RRSIG[[:space:]]+TLSA ' <<< "$OUT" \
  && pass "dns forge-unsigned: SERVFAIL; with +cd the forged TLSA without any RRSIG" \
  || fail "dns forge-unsigned: SERVFAIL; with +cd the forged TLSA without any RRSIG" "status=$st1"
atk dns _25._tcp.mx1.atk-dane-ee.test TLSA pass
expect_dns _25._tcp.mx1.atk-dane-ee.test. TLSA secure
atk dns atk-opp.test MX forge
q atk-opp.test. MX
[ "$ST" = NOERROR ] && [ $AD = 0 ] && [ "$(answers MX)" = "10 $WORLD_ATTACKER_MX_HOST." ] \
  && pass "dns forge (insecure zone): Unbound believes the forged MX (10 mx.attacker.test, no AD)" \
  || fail "dns forge (insecure zone): Unbound believes the forged MX" "status=$ST $(answers MX)"
atk dns _mta-sts.atk-sts-enforce.test TXT forge
q _mta-sts.atk-sts-enforce.test. TXT
[ "$(answers TXT)" = "\"v=STSv1; id=$WORLD_ATTACKER_FORGED_STS_ID;\"" ] && pass "dns forge: _mta-sts TXT id changed to $WORLD_ATTACKER_FORGED_STS_ID" \
  || fail "dns forge: _mta-sts TXT id changed" "$(answers TXT)"
atk dns mx1.atk-dane-ee.test A strip-rrsig
q mx1.atk-dane-ee.test. A; st1=$ST; q mx1.atk-dane-ee.test. A +cd
[ "$st1" = SERVFAIL ] && [ "$(answers A)" = "$ATK_DANE_EE_MX1_IP" ] && ! grep -qE 'RRSIG[[:space:]]+A ' <<< "$OUT" \
  && pass "dns strip-rrsig: SERVFAIL; with +cd the genuine A without its RRSIG" || fail "dns strip-rrsig: SERVFAIL; with +cd the A without RRSIG" "status=$st1"
atk dns atk-dane-ta.test '*' drop-dnssec
k=$(dig @"$WORLD_ATTACKER_DNS_IP" +norec +dnssec +time=2 +tries=1 atk-dane-ta.test. DNSKEY | sed -n 's/.*status: \([A-Z]*\),.*/\1/p')
q atk-dane-ta.test. MX; st1=$ST; q atk-dane-ta.test. MX +cd
[ "$k" = SERVFAIL ] && [ "$st1" = SERVFAIL ] && [ "$ST" = NOERROR ] \
  && pass "dns drop-dnssec: DNSKEY SERVFAIL at the attacker; the MX is SERVFAIL through Unbound (data there with +cd)" \
  || fail "dns drop-dnssec: DNSKEY SERVFAIL; MX SERVFAIL" "dnskey=$k mx=$st1 cd=$ST"
atk dns atk-sts-testing.test MX servfail
expect_dns atk-sts-testing.test. MX servfail
atk dns mx2.atk-dane-ta.test A tc-no-tcp
u=$(dig @"$WORLD_ATTACKER_DNS_IP" +norec +ignore +time=2 +tries=1 mx2.atk-dane-ta.test. A 2>&1)
tc=$(dig @"$WORLD_ATTACKER_DNS_IP" +norec +tcp +time=2 +tries=1 mx2.atk-dane-ta.test. A 2>&1)
q mx2.atk-dane-ta.test. A
grep -qE '^;; flags:[^;]* tc[ ;]' <<< "$u" && ! grep -q 'status: NOERROR' <<< "$tc" && [ "$ST" = SERVFAIL ] \
  && pass "dns tc-no-tcp: UDP answer truncated (TC), TCP closed, Unbound SERVFAIL" \
  || fail "dns tc-no-tcp: UDP answer truncated (TC), TCP closed, Unbound SERVFAIL" "udp=$(grep flags <<< "$u") tcp=$(tail -2 <<< "$tc" | tr '\n' ' ') unbound=$ST"
atk dns mx2.atk-opp.test A delay 1.5
t0=${EPOCHREALTIME//[!0-9]/}
a=$(dig @"$WORLD_ATTACKER_DNS_IP" +norec +short +time=4 +tries=1 mx2.atk-opp.test. A 2>&1)
dt=$(( (${EPOCHREALTIME//[!0-9]/} - t0) / 1000 ))
[ "$a" = "$WORLD_ATK_GENUINE_IP" ] && [ $dt -ge 1400 ] && pass "dns delay 1.5: the answer comes after ${dt} ms" \
  || fail "dns delay 1.5: the answer comes after 1.5 s" "a=$a after $dt ms"
atk reset
expect_dns atk-dane-ta.test. MX secure
expect_dns atk-sts-testing.test. MX insecure
grep -q 'dns name=_25._tcp.mx1.atk-dane-ee.test type=TLSA mode=forge proto=' "$WORLD_ATTACKER_LOG" \
  && pass "attacker log: one line per attacked DNS query" || fail "attacker log: one line per attacked DNS query"

# the AD attacker in front of Unbound
adq() { OUT=$(dig @"$WORLD_AD_PROXY_IP" +dnssec +time=3 +tries=1 "$@" 2>&1)
        if grep -qE '^;; flags:[^;]* ad[ ;]' <<< "$OUT"; then AD=1; else AD=0; fi; }
adq atk-opp.test. MX; a0=$AD; adq dane-ok.test. MX; a1=$AD
[ $a0 = 0 ] && [ $a1 = 1 ] && pass "ad proxy pass: AD as Unbound sets it" || fail "ad proxy pass: AD as Unbound sets it" "insecure=$a0 secure=$a1"
atk ad set-ad; adq atk-opp.test. MX
[ $AD = 1 ] && pass "ad proxy set-ad: AD on an insecure answer" || fail "ad proxy set-ad: AD on an insecure answer"
atk ad clear-ad; adq dane-ok.test. MX
[ $AD = 0 ] && [ -n "$(answers MX)" ] && pass "ad proxy clear-ad: no AD on a secure answer" || fail "ad proxy clear-ad: no AD on a secure answer"
atk ad forge atk-dane-ee.test MX; adq atk-dane-ee.test. MX
[ $AD = 1 ] && [ "$(answers MX)" = "10 $WORLD_ATTACKER_MX_HOST." ] && pass "ad proxy forge: the forged MX (mx.attacker.test) with AD" \
  || fail "ad proxy forge: the forged MX with AD" "ad=$AD $(answers MX)"
atk ad pass; adq atk-dane-ee.test. MX
[ $AD = 1 ] && [ "$(answers MX | wc -l)" = 2 ] && pass "ad proxy pass again: the genuine MX" || fail "ad proxy pass again: the genuine MX" "$(answers MX)"

# SMTP attacker
cert_of() { # ip [s_client args]: the certificate the STARTTLS server presents, in $TMP/peer.pem
  echo QUIT | timeout 5 openssl s_client -connect "$1:25" -starttls smtp "${@:2}" 2>/dev/null | openssl x509 > "$TMP/peer.pem" 2>/dev/null
}
ncap() { ls "$WORLD_ATTACKER_CAPTURED" | wc -l; }
rm -f "$WORLD_ATTACKER_CAPTURED"/*
E1=$ATK_DANE_EE_MX1_IP E5=$ATK_OPP_MX1_IP
offers_starttls "$E1" && tls_verify "$E1" mx1.atk-dane-ee.test -tls1_3 \
  && pass "smtp attacker pass: relays to the genuine MTA (STARTTLS, certificate valid for mx1.atk-dane-ee.test)" \
  || fail "smtp attacker pass: relays to the genuine MTA"
cert_of "$E1"; [ "$(spki "$TMP/peer.pem")" = "$(spki "$G_CERT")" ] && pass "smtp attacker pass: the genuine key" || fail "smtp attacker pass: the genuine key"
atk smtp atk-opp.test strip-starttls
offers_starttls "$E5"; [ $? = 1 ] && pass "smtp strip-starttls: STARTTLS is gone from the EHLO reply" || fail "smtp strip-starttls: STARTTLS is gone from the EHLO reply"
r=$(python3 - "$E5" <<'EOF'
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], 25, local_hostname="selftest.test", timeout=5)
code, msg = s.ehlo()
lines = msg.decode().splitlines()
print(code, s.docmd("STARTTLS")[0], len(lines))
s.quit()
EOF
)
[[ $r == "250 502 "* ]] && pass "smtp strip-starttls: a well-formed EHLO reply; STARTTLS sent anyway gets 502" || fail "smtp strip-starttls: STARTTLS sent anyway gets 502" "$r"
send "$E5" "strip@atk-opp.test" no
f=""; for i in $(seq 1 50); do f=$(grep -l "X-World-Selftest: $TOKEN" "$GSPOOL"/* 2>/dev/null | xargs -r grep -l '^Delivered-To: strip@atk-opp.test$' | head -1); [ -n "$f" ] && break; sleep 0.1; done
c=$(grep -l 'X-Attacker-Capture: mode=strip-starttls domain=atk-opp.test' "$WORLD_ATTACKER_CAPTURED"/* 2>/dev/null | xargs -r grep -l "X-World-Selftest: $TOKEN" | head -1)
[ $SWRC = 0 ] && [ -n "$f" ] && ! grep -q '(using TLS' "$f" && [ -n "$c" ] \
  && pass "smtp strip-starttls: plaintext mail reaches the genuine MTA (no TLS in Received) and the attacker recorded it" \
  || fail "smtp strip-starttls: plaintext mail reaches the genuine MTA and is recorded" "swaks=$SWRC spool='$f' capture='$c'"
rm -f "$f"
atk smtp atk-opp.test starttls-454
send "$E5" "t454@atk-opp.test" yes
grep -qE '^<\*\* +454 4\.7\.0 TLS not available' <<< "$SW" && pass "smtp starttls-454: STARTTLS answered 454 4.7.0" || fail "smtp starttls-454: STARTTLS answered 454 4.7.0" "$(grep -E '^<' <<< "$SW" | tail -3)"
atk smtp atk-opp.test inject-after-220
r=$(python3 - "$E5" <<'EOF'
import socket, sys, time
s = socket.create_connection((sys.argv[1], 25), timeout=5)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if l[3:4] != b"-":
            return l
reply(); s.sendall(b"EHLO selftest.test\r\n"); reply()
s.sendall(b"STARTTLS\r\n")
time.sleep(0.5)
print(repr(f.peek(4096)[:200]))
EOF
)
[[ $r == *"220 "*"\\r\\n250 injected\\r\\n"* ]] && pass "smtp inject-after-220: a forged '250 injected' right after the 220" || fail "smtp inject-after-220: a forged line after the 220" "$r"
# a client that does TLS after the 220 (ignoring the injected line is its job) reaches the genuine MTA
cert_of "$E5" -servername mx1.atk-opp.test; [ "$(spki "$TMP/peer.pem")" = "$(spki "$G_CERT")" ] \
  && pass "smtp inject-after-220: then relays TLS to the genuine MTA" || fail "smtp inject-after-220: then relays TLS to the genuine MTA"
grep -q 'domain=atk-opp.test mode=inject-after-220 event=injected' "$WORLD_ATTACKER_LOG" && pass "attacker log: event=injected" || fail "attacker log: event=injected"
atk smtp atk-dane-ee.test mitm-self
cert_of "$E1"
s=$(openssl x509 -in "$TMP/peer.pem" -noout -subject -issuer 2>/dev/null | tr '\n' ' ')
[[ $s == *"subject=CN = mx1.atk-dane-ee.test"*"issuer=CN = mx1.atk-dane-ee.test"* ]] && [ "$(spki "$TMP/peer.pem")" != "$(spki "$G_CERT")" ] \
  && pass "smtp mitm-self: a self-signed certificate for mx1.atk-dane-ee.test (not the genuine key)" || fail "smtp mitm-self: a self-signed certificate" "$s"
tls_verify "$E1" mx1.atk-dane-ee.test && fail "smtp mitm-self: not trusted by the test CA" || pass "smtp mitm-self: not trusted by the test CA"
send "$E1" "mitm@atk-dane-ee.test" yes
c=$(grep -l 'X-Attacker-Capture: mode=mitm-self domain=atk-dane-ee.test addr=[0-9.]* tls=TLSv1.3' "$WORLD_ATTACKER_CAPTURED"/* 2>/dev/null | xargs -r grep -l "X-World-Selftest: $TOKEN" | head -1)
[ $SWRC = 0 ] && [ -n "$c" ] && pass "smtp mitm-self: mail sent over its TLS is captured (mode, domain, tls in the first line)" \
  || fail "smtp mitm-self: mail sent over its TLS is captured" "swaks=$SWRC $(tail -2 <<< "$SW")"
grep -qE 'domain=atk-dane-ee.test mode=mitm-self event=tls-ok version=TLSv1.3' "$WORLD_ATTACKER_LOG" && grep -qE 'domain=atk-dane-ee.test mode=mitm-self event=tls-failed error=' "$WORLD_ATTACKER_LOG" \
  && pass "attacker log: tls-ok and tls-failed (with the reason) events" || fail "attacker log: tls-ok and tls-failed events"
atk smtp atk-dane-ee.test mitm-othername
tls_verify "$E1" mx.elsewhere.test && ! tls_verify "$E1" mx1.atk-dane-ee.test \
  && pass "smtp mitm-othername: test-CA certificate for mx.elsewhere.test, not for mx1" || fail "smtp mitm-othername: test-CA certificate for mx.elsewhere.test"
atk smtp atk-dane-ee.test mitm-attacker-domain
tls_verify "$E1" mx.attacker.test && ! tls_verify "$E1" mx1.atk-dane-ee.test \
  && pass "smtp mitm-attacker-domain: test-CA certificate for mx.attacker.test" || fail "smtp mitm-attacker-domain: test-CA certificate for mx.attacker.test"
tls_verify "$WORLD_ATTACKER_MX_IP" mx.attacker.test && pass "smtp mx.attacker.test ($WORLD_ATTACKER_MX_IP): the attacker's own MX, valid certificate" \
  || fail "smtp mx.attacker.test: the attacker's own MX, valid certificate"
atk smtp atk-dane-ee.test mitm-old-tls
tls_any "$E1" -tls1_2 && fail "smtp mitm-old-tls: TLS 1.2 fails" || pass "smtp mitm-old-tls: TLS 1.2 fails"
tls_any "$E1" -tls1_3 && fail "smtp mitm-old-tls: TLS 1.3 fails" || pass "smtp mitm-old-tls: TLS 1.3 fails"
tls_any "$E1" -tls1 -cipher 'DEFAULT:@SECLEVEL=0' && pass "smtp mitm-old-tls: a TLS 1.0 SECLEVEL=0 client gets through" \
  || fail "smtp mitm-old-tls: a TLS 1.0 SECLEVEL=0 client gets through"
atk reset
offers_starttls "$E1" && offers_starttls "$E5" && pass "attack reset: the SMTP attacker relays again" || fail "attack reset: the SMTP attacker relays again"
rm -f "$WORLD_ATTACKER_CAPTURED"/*

# HTTPS attacker
afetch() { # host [curl args]
  RES=$(curl -sS --max-time 5 --cacert "$WORLD_CA" --resolve "$1:443:$WORLD_ATTACKER_HTTPS_IP" -o "$TMP/body" \
        -w '%{http_code} %{redirect_url}' "${@:2}" "https://$1/.well-known/mta-sts.txt" 2>"$TMP/err"); CRC=$?
}
H=$ATK_STS_ENFORCE_STS_HOST
afetch "$H"
[ $CRC = 0 ] && [[ $RES == "200 "* ]] && grep -q '^mode: enforce' "$TMP/body" && grep -q '^mx: mx1.atk-sts-enforce.test' "$TMP/body" && grep -q '^mx: mx2.atk-sts-enforce.test' "$TMP/body" \
  && pass "https attacker pass: the genuine enforce policy (mx1, mx2) from nginx" || fail "https attacker pass: the genuine policy" "rc=$CRC $RES"
afetch "$ATK_STS_TESTING_STS_HOST"
[ $CRC = 0 ] && grep -q '^mode: testing' "$TMP/body" && pass "https attacker pass: the genuine testing policy" || fail "https attacker pass: the genuine testing policy" "rc=$CRC"
atk https "$H" redirect; afetch "$H"
[ $CRC = 0 ] && [ "$RES" = "301 https://mta-sts.attacker.test/.well-known/mta-sts.txt" ] && pass "https redirect: 301 to mta-sts.attacker.test" || fail "https redirect: 301" "rc=$CRC $RES"
atk https "$H" wrong-cert; afetch "$H"; c1=$CRC; afetch "$H" -k
[ $c1 = 60 ] && grep -q '^mode: enforce' "$TMP/body" && pass "https wrong-cert: verification fails (curl rc 60); genuine body behind it" || fail "https wrong-cert: verification fails" "rc=$c1"
atk https "$H" changed-policy; afetch "$H"
[ $CRC = 0 ] && grep -q '^mode: none' "$TMP/body" && pass "https changed-policy: verified, 'mode: none'" || fail "https changed-policy: verified, 'mode: none'" "rc=$CRC"
atk https "$H" widen-mx; afetch "$H"
[ $CRC = 0 ] && grep -q '^mx: mx.attacker.test' "$TMP/body" && grep -q '^mx: mx1.atk-sts-enforce.test' "$TMP/body" && grep -q '^mode: enforce' "$TMP/body" \
  && pass "https widen-mx: verified, the genuine policy plus mx.attacker.test" || fail "https widen-mx" "rc=$CRC"
atk reset

# Postfix (the reference relay) against the attacked DANE destinations: never to the attacker
if [ -n "${WORLD_SELFTEST_SKIP_RELAY:-}" ]; then :; else
  relay_round() { # lines "domain|expected glob"
    local d want got
    while IFS='|' read -r d want; do "$W" postfix-relay-send "$S" "atk-$TOKEN@$d" 20 >"$TMP/relay.$d" 2>&1 & done <<< "$1"
    wait
    while IFS='|' read -r d want; do
      got=$(cat "$TMP/relay.$d")
      # shellcheck disable=SC2053
      [[ $got == $want ]] && pass "postfix relay to $d [$2]: $(cut -c1-110 <<< "$got")" || fail "postfix relay to $d [$2]: $want" "got: $got"
    done <<< "$1"
  }
  atk smtp atk-dane-ee.test mitm-self; atk smtp atk-dane-ta.test strip-starttls
  relay_round "atk-dane-ee.test|delivered: Verified TLS connection established to mx2.atk-dane-ee.test\[*; Matched DANE EE certificate*
atk-dane-ta.test|delivered: Verified TLS connection established to mx2.atk-dane-ta.test\[*" "smtp mitm-self / strip-starttls"
  atk smtp atk-dane-ee.test mitm-attacker-domain; atk smtp atk-dane-ta.test mitm-othername
  relay_round "atk-dane-ee.test|delivered: Verified TLS connection established to mx2.atk-dane-ee.test\[*
atk-dane-ta.test|delivered: Verified TLS connection established to mx2.atk-dane-ta.test\[*" "smtp mitm-attacker-domain / mitm-othername"
  atk smtp atk-dane-ee.test mitm-old-tls; atk smtp atk-dane-ta.test starttls-454
  relay_round "atk-dane-ee.test|delivered: Verified TLS connection established to mx2.atk-dane-ee.test\[*
atk-dane-ta.test|delivered: Verified TLS connection established to mx2.atk-dane-ta.test\[*" "smtp mitm-old-tls / starttls-454"
  atk reset
  atk smtp atk-dane-ee.test inject-after-220
  relay_round "atk-dane-ee.test|delivered: Verified TLS connection established to mx1.atk-dane-ee.test\[$ATK_DANE_EE_MX1_IP\]*; Matched DANE EE certificate*
atk-dane-ta.test|delivered: Verified TLS connection established to mx1.atk-dane-ta.test\[$ATK_DANE_TA_MX1_IP\]*" "smtp inject-after-220 / pass"
  sleep 2.1   # the relay's smtp processes cache TLSA answers for their TTL (Unbound hands out at most 2 s)
  atk dns atk-dane-ee.test MX forge; atk dns _25._tcp.mx1.atk-dane-ta.test TLSA forge; atk smtp atk-dane-ta.test mitm-self
  relay_round "atk-dane-ee.test|deferred: *Name service error for name=atk-dane-ee.test type=MX*
atk-dane-ta.test|delivered: Verified TLS connection established to mx2.atk-dane-ta.test\[*" "dns forge MX / forge TLSA + smtp mitm-self"
  atk reset
  atk dns mx1.atk-dane-ee.test A strip-rrsig; atk dns atk-dane-ta.test '*' drop-dnssec
  relay_round "atk-dane-ee.test|delivered: Verified TLS connection established to mx2.atk-dane-ee.test\[*
atk-dane-ta.test|deferred: *Name service error for name=atk-dane-ta.test type=MX*" "dns strip-rrsig A of mx1 / drop-dnssec"
  atk reset
  [ "$(ncap)" = 0 ] && pass "postfix relay: nothing reached the attacker in any of these rounds" || fail "postfix relay: nothing reached the attacker" "$(ls "$WORLD_ATTACKER_CAPTURED")"
  grep -l "^Delivered-To: atk-$TOKEN@" "$GSPOOL"/* 2>/dev/null | xargs -r rm -f
  "$WORLD_DIR/world.sh" status "$S" 2>/dev/null | grep -q '^up   postfix-relay ' && [ $relay_was_up = 0 ] && "$W" postfix-relay-stop "$S"
fi

# ------------------------------------------------------------------ generated files
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["resolver"]["nameservers"] == [sys.argv[2]]; assert c["outbound"]["mxPort"] == 25' \
  "$WORLD_POSTERN_CONFIG" "$WORLD_RESOLVER" 2>/dev/null \
  && pass "postern.json parses and points at the world resolver" || fail "postern.json parses and points at the world resolver"
missing=""
for f in $(grep -oE '\{file:[^}]+\}|"/[^"]+"' "$WORLD_POSTERN_CONFIG" | sed -E 's/^\{file://; s/\}$//; s/"//g'); do
  case $f in "$WORLD_POSTERN_DATA"*) continue;; esac
  [ -e "$f" ] || missing="$missing $f"
done
[ -z "$missing" ] && pass "every file postern.json names exists" || fail "every file postern.json names exists" "$missing"

echo "$PASSED passed, $FAILED failed"
[ $FAILED = 0 ]
