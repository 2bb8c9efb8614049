#!/usr/bin/env bash
# The Nix checks that need no Nix build (CI runs on Debian, which cannot
# build derivations): every .nix file of the repository must parse, and,
# when NIXPKGS_LIB points at a nixpkgs (or nixpkgs/lib) tree, the
# evaluation test of services.postern must pass (nix/tests/eval/run.sh;
# without NIXPKGS_LIB it says so in one line and is skipped).
#
#   bash nix/check.sh
#   NIXPKGS_LIB=/path/to/nixpkgs bash nix/check.sh
#
# Installs Debian's nix-bin when nix-instantiate is missing (CI is root).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v nix-instantiate >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "nix-check: installing nix-bin for nix-instantiate"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null 2>&1; then
            apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin >/dev/null
        fi
    else
        echo "nix-check: nix-instantiate is missing (Debian: apt-get install nix-bin)" >&2
        exit 2
    fi
fi

# Parsing touches no store, but keep Nix's state out of /nix all the same
# (no daemon, any user).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export NIX_STATE_DIR="$scratch/state" NIX_LOG_DIR="$scratch/log"

passed=0
failed=0
while IFS= read -r -d '' file; do
    if nix-instantiate --parse "$file" >/dev/null 2>"$scratch/err"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "nix-parse: ${file#"$root"/}:" >&2
        cat "$scratch/err" >&2
    fi
done < <(find "$root" \( -name .git -o -name target -o -name node_modules \) -prune \
    -o -type f -name '*.nix' -print0 | sort -z)

if [ $((passed + failed)) -eq 0 ]; then
    echo "nix-parse: no .nix file found under $root" >&2
    exit 1
fi
echo "nix-parse: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1

bash "$root/nix/tests/eval/run.sh"
