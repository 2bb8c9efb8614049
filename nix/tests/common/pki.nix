# Test certificates, made when the tests are built: a test CA, the
# receiving MTAs' and the MTA-STS host's certificates, two keys for
# postern's own name (the TLSA rollover), a self-signed certificate, and the
# SHA-256 of each certificate's SubjectPublicKeyInfo (the data of a
# `3 1 1` TLSA record).
{ pkgs }:

pkgs.runCommand "postern-test-pki" { nativeBuildInputs = [ pkgs.openssl ]; } ''
  mkdir -p $out
  cd $out

  spki_sha256() {
    openssl x509 -in "$1" -noout -pubkey \
      | openssl pkey -pubin -outform DER \
      | openssl dgst -sha256 -r | cut -d' ' -f1
  }

  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 3650 -subj "/CN=postern test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"

  # leaf_ext SANS: the extensions of a server certificate for SANS
  leaf_ext() {
    printf '%s\n' "subjectAltName=$1" basicConstraints=CA:FALSE \
      keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth
  }

  # leaf NAME SAN...: NAME.key, NAME.crt, NAME.pem (chain, leaf first),
  # NAME.spki-sha256
  leaf() {
    name=$1; shift
    sans=$(printf 'DNS:%s,' "$@"); sans=''${sans%,}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$name.key" -out "$name.csr" -subj "/CN=$1"
    leaf_ext "$sans" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -days 3650 -extfile "$name.ext" -out "$name.crt"
    cat "$name.crt" ca.pem > "$name.pem"
    spki_sha256 "$name.crt" > "$name.spki-sha256"
    rm "$name.csr" "$name.ext"
  }

  # The good receiving MTA: every MX name of the test domains except
  # mx.sts-wrongname.test, which is the "certificate for the wrong name" case.
  leaf mx mx.dane-ok.test mx.dane-bad.test mx.bogus.test mx.sts-enforce.test \
    mx.sts-mxmismatch.test mx.badtls.test
  leaf web mta-sts.sts-enforce.test mta-sts.sts-mxmismatch.test \
    mta-sts.sts-wrongname.test
  leaf postern-a mx.postern.test
  leaf postern-b mx.postern.test
  # a renewal of postern-b that keeps its key (same TLSA record)
  openssl req -new -key postern-b.key -out postern-b2.csr -subj "/CN=mx.postern.test"
  leaf_ext DNS:mx.postern.test > postern-b2.ext
  openssl x509 -req -in postern-b2.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 3650 -extfile postern-b2.ext -out postern-b2.crt
  cat postern-b2.crt ca.pem > postern-b2.pem
  cp postern-b.key postern-b2.key
  rm postern-b2.csr postern-b2.ext

  # Not issued by the test CA: the STARTTLS fallback's "invalid-tls" case.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout selfsigned.key -out selfsigned.pem -days 3650 \
    -subj "/CN=mx.invalidcert.test" -addext "subjectAltName=DNS:mx.invalidcert.test"

  rm -f ca.srl ca.key
  chmod 0444 *
''
