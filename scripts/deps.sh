#!/usr/bin/env bash
# Installs what postern needs on a Debian machine, only what is missing.
#   scripts/deps.sh build   — to build (clang for RocksDB's bindings)
#   scripts/deps.sh test    — to build and run every test (the test world too)
set -euo pipefail
need=(clang libclang-dev)
if [ "${1:-build}" = test ]; then
  need+=(knot knot-dnsutils unbound postfix nginx swaks dnsutils ldnsutils gnutls-bin
         nix-bin mypy openssl curl systemd iproute2 procps python3 chromium
         strace)  # strace: smtp_crash checks that the fsync comes before the 250
fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 2
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Postfix and nginx must not start system-wide instances: the test world
  # runs its own on 127.0.x.y addresses.
  made_policy=no
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=yes
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$made_policy" = yes ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
