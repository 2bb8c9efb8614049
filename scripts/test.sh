#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test —
# unit, integration, the hermetic test world (as root), and the Nix checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /var/cache/postern-target ] && [ -w /var/cache/postern-target ]; then
  export CARGO_TARGET_DIR=/var/cache/postern-target
fi
if [ "$(id -u)" != 0 ]; then
  echo "note: not root — the test-world tests will skip themselves (CI runs as root and runs them)"
fi
# One feature resolution for everything: `cargo test` also builds the
# binary the integration tests run, and `cargo test --benches --no-run`
# builds the benchmarks with the same features. (A separate `cargo build`
# resolves features without the dev-dependencies and so builds bindgen, and
# with it librocksdb-sys, a second time: ~20 minutes on two cores.)
cargo test --locked --no-fail-fast -- --test-threads=2
# the benchmarks are not run here (bench/README.md), but they must still build
cargo test --locked --benches --no-run
for f in bench/run.sh bench/dns.sh; do bash -n "$f"; done
for f in bench/bench.py bench/many.py tests/world/many_sink.py; do
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f"
done
bash nix/check.sh
# the project stands alone: no test or script reads outside the repository
bash scripts/check-standalone.sh
