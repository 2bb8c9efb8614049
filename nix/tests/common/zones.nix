# Zone files for Knot. `test.` is the signed parent and the one trust
# anchor; the DS records of its signed children are added by the test
# script once Knot has made their keys (see world.py, bootstrap_dnssec).
#
#   dane-ok.test         signed, MX with a correct `3 1 1` TLSA
#                        → delivered, verdict `dane`
#   dane-bad.test        signed, MX with a TLSA for another key
#                        → deferred, never plaintext
#   bogus.test           signed, but the DS in test. matches no key
#                        → deferred (bogus), no downgrade
#   sts-enforce.test     insecure, MTA-STS `enforce`, MX in the policy
#                        → delivered, verdict `mta-sts`
#   sts-mxmismatch.test  insecure, `enforce`, MX outside the policy → deferred
#   sts-wrongname.test   insecure, `enforce`, MX cert for another name → deferred
#   badtls.test          signed, no TLSA (nothing below mx: a secure NXDOMAIN),
#                        MX whose handshakes all fail
#                        → default → invalid-tls → disable-tls
#   invalidcert.test     signed, no TLSA (likewise), MX with a self-signed cert
#                        → delivered by `invalid-tls`
#   postern.test         signed, postern's own domain; its TLSA records come
#                        from `postern tlsa sync`
#
# Names, roles and outcomes are those of the hermetic world (tests/world/).
# The test scripts' DNS assertions are checked against these files by
# nix/tests/lint/check.py, which reads the `cat > $out/ZONE.zone <<EOF`
# blocks below: keep that form.
{
  pkgs,
  addresses,
  pki,
}:

let
  soa = ttl: "@ ${toString ttl} SOA ns1.test. hostmaster.test. 1 60 30 3600 ${toString ttl}";
in
pkgs.runCommand "postern-test-zones" { } ''
  mkdir -p $out
  good=$(cat ${pki}/mx.spki-sha256)
  wrong=$(cat ${pki}/postern-b.spki-sha256)

  cat > $out/test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  ns1 A ${addresses.ns}
  dane-ok NS ns1.test.
  dane-bad NS ns1.test.
  bogus NS ns1.test.
  sts-enforce NS ns1.test.
  sts-mxmismatch NS ns1.test.
  sts-wrongname NS ns1.test.
  badtls NS ns1.test.
  invalidcert NS ns1.test.
  postern NS ns1.test.
  EOF

  cat > $out/dane-ok.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.dane-ok.test.
  mx A ${addresses.mx}
  _25._tcp.mx TLSA 3 1 1 $good
  EOF

  cat > $out/dane-bad.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.dane-bad.test.
  mx A ${addresses.mx}
  _25._tcp.mx TLSA 3 1 1 $wrong
  EOF

  cat > $out/bogus.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.bogus.test.
  mx A ${addresses.mx}
  _25._tcp.mx TLSA 3 1 1 $good
  EOF

  cat > $out/sts-enforce.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.sts-enforce.test.
  mx A ${addresses.mx}
  _mta-sts TXT "v=STSv1; id=world1"
  mta-sts A ${addresses.web}
  EOF

  cat > $out/sts-mxmismatch.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.sts-mxmismatch.test.
  mx A ${addresses.mx}
  _mta-sts TXT "v=STSv1; id=world1"
  mta-sts A ${addresses.web}
  EOF

  cat > $out/sts-wrongname.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.sts-wrongname.test.
  mx A ${addresses.mx}
  _mta-sts TXT "v=STSv1; id=world1"
  mta-sts A ${addresses.web}
  EOF

  cat > $out/badtls.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.badtls.test.
  mx A ${addresses.mxbroken}
  EOF

  cat > $out/invalidcert.test.zone <<EOF
  \$TTL 60
  ${soa 10}
  @ NS ns1.test.
  @ MX 10 mx.invalidcert.test.
  mx A ${addresses.mxinvalid}
  EOF

  # Short TTLs: the rollover waits holdTtls × TTL.
  cat > $out/postern.test.zone <<EOF
  \$TTL 5
  ${soa 5}
  @ NS ns1.test.
  @ MX 10 mx.postern.test.
  mx A ${addresses.postern}
  EOF
''
