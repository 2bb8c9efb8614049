#!/usr/bin/env bash
# The Nix checks that need no Nix build (CI runs on Debian, which cannot
# build derivations):
#   nix-parse   every .nix file of the repository parses;
#   nix-lines   no line of a .nix file is longer than 100 columns (nixfmt's
#               width; the `formatting` flake check runs nixfmt itself);
#   nix-lint    the VM tests' scripts, statically (nix/tests/lint/check.py):
#               mypy as the test driver runs it, no rebinding of the
#               driver's globals, DNS assertions against the zone files,
#               the twin table of nix/tests/README.md;
#   nix-eval    when NIXPKGS_LIB points at a nixpkgs (or nixpkgs/lib) tree,
#               the evaluation test of services.postern and the package
#               (nix/tests/eval/run.sh; without NIXPKGS_LIB it says so in
#               one line and is skipped).
#
#   bash nix/check.sh
#   NIXPKGS_LIB=/path/to/nixpkgs bash nix/check.sh
#
# Installs Debian's nix-bin and mypy when they are missing (CI is root;
# scripts/deps.sh test installs both too).
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

have_mypy() { command -v mypy >/dev/null || python3 -m mypy --version >/dev/null 2>&1; }
if ! have_mypy; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "nix-check: installing mypy (Debian) for the VM test scripts"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q mypy >/dev/null 2>&1; then
            apt-get update -q >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q mypy >/dev/null
        fi
    else
        echo "nix-check: installing mypy from PyPI (python3 -m pip install --user mypy)"
        python3 -m pip install -q --user mypy >/dev/null
    fi
    have_mypy || { echo "nix-check: mypy is missing (Debian: apt-get install mypy)" >&2; exit 2; }
fi

# Evaluating touches no store (--readonly-mode), but keep Nix's state out
# of /nix all the same (no daemon, any user).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export NIX_STATE_DIR="$scratch/state" NIX_LOG_DIR="$scratch/log"
export NIX_CONFIG="build-users-group ="

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

# nixfmt (RFC 166 style) formats to 100 columns; it cannot be installed
# here, so at least no line may be longer.
find "$root" \( -name .git -o -name target -o -name node_modules \) -prune \
    -o -type f -name '*.nix' -print0 | sort -z | python3 -c '
import sys
root, width = sys.argv[1], 100
files = [f for f in sys.stdin.read().split("\0") if f]
bad = 0
for name in files:
    with open(name, encoding="utf-8") as f:
        long = [(n, len(l.rstrip("\n"))) for n, l in enumerate(f, 1) if len(l.rstrip("\n")) > width]
    for number, columns in long:
        print(f"nix-lines: {name[len(root) + 1:]}:{number}: {columns} columns", file=sys.stderr)
    bad += bool(long)
print(f"nix-lines: {len(files) - bad} passed, {bad} failed")
sys.exit(1 if bad else 0)
' "$root"

# The VM tests' scripts, as the test driver gets them (nix/tests/lint/).
if ! nix-instantiate --eval --strict --json --readonly-mode "$root/nix/tests/lint/world.nix" \
    >"$scratch/world.json" 2>"$scratch/err"; then
    cat "$scratch/err" >&2
    echo "nix-lint: nix/tests/lint/world.nix does not evaluate" >&2
    exit 1
fi
python3 "$root/nix/tests/lint/check.py" "$scratch/world.json"

bash "$root/nix/tests/eval/run.sh"
