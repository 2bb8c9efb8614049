#!/usr/bin/env bash
# Builds postern and runs the daemon on its embedded default configuration:
# SMTP on 127.0.0.1:2525 for loopback clients, data in ./postern-data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /var/cache/postern-target ] && [ -w /var/cache/postern-target ]; then
  export CARGO_TARGET_DIR=/var/cache/postern-target
fi
exec cargo run --release -- serve "$@"
