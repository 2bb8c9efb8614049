#!/usr/bin/env bash
# Evaluation test of services.postern (nix/module.nix) and of the package
# (nix/package.nix): evaluates both with nixpkgs' lib and the stand-ins of
# stubs.nix, builds nothing.
#
#   NIXPKGS_LIB=/path/to/nixpkgs nix/tests/eval/run.sh   # or …/nixpkgs/lib
#
# Without NIXPKGS_LIB it skips with one line and exits 0.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ -z "${NIXPKGS_LIB:-}" ]; then
    echo "nix-eval: skipped — set NIXPKGS_LIB to a nixpkgs (or nixpkgs/lib) tree to evaluate services.postern"
    exit 0
fi
if [ ! -e "$NIXPKGS_LIB/default.nix" ] && [ ! -e "$NIXPKGS_LIB/lib/default.nix" ]; then
    echo "nix-eval: NIXPKGS_LIB=$NIXPKGS_LIB holds neither default.nix nor lib/default.nix" >&2
    exit 2
fi
if ! command -v nix-instantiate >/dev/null; then
    echo "nix-eval: nix-instantiate not found (Debian: apt-get install nix-bin)" >&2
    exit 2
fi

# No daemon and no writable /nix needed: Nix keeps its state in a scratch
# directory and --readonly-mode adds nothing to the store.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export NIX_STATE_DIR="$scratch/state" NIX_LOG_DIR="$scratch/log"
export HOME="${HOME:-$scratch}" XDG_CACHE_HOME="$scratch/cache"

out="$scratch/result.json"
if ! nix-instantiate --eval --strict --json --readonly-mode \
    "$here/eval.nix" --argstr nixpkgsLib "$NIXPKGS_LIB" >"$out" 2>"$scratch/stderr"; then
    cat "$scratch/stderr" >&2
    echo "nix-eval: evaluation of nix/tests/eval/eval.nix failed" >&2
    echo "nix-eval: 0 passed, 1 failed"
    exit 1
fi

if command -v python3 >/dev/null; then
    python3 - "$out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["results"]:
    print(("ok    " if r["ok"] else "FAIL  ") + r["name"] + ("" if r["ok"] else "\n      " + r["detail"]))
PY
elif command -v jq >/dev/null; then
    jq -r '.results[] | (if .ok then "ok    " + .name else "FAIL  " + .name + "\n      " + .detail end)' "$out"
else
    cat "$out"; echo
fi

counts="$(sed -n 's/^{"failed":\([0-9]*\),"passed":\([0-9]*\),.*/\2 \1/p' "$out")"
passed="${counts% *}"
failed="${counts#* }"
if [ -z "$counts" ]; then
    echo "nix-eval: could not read the result" >&2
    exit 1
fi
echo "nix-eval: $passed passed, $failed failed"
[ "$failed" = 0 ]
