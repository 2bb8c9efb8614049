#!/usr/bin/env bash
# The repository must stand alone: no test, script, build or Nix file may
# read a path outside it (a sibling checkout such as ../shared, this
# workplace's /work/…, a parent of the crate root). A fresh clone anywhere
# — CI's, a developer's, the Nix build sandbox, which holds only the
# source tree — must find everything its tests read.
#
#   bash scripts/check-standalone.sh
#
# Looks at the code files git knows (tracked or not ignored): Rust, shell,
# Python, Nix, TOML and any file with a #! line; not at prose (*.md). What
# counts as escaping:
#   - `../shared` anywhere, and absolute paths under /work/;
#   - CARGO_MANIFEST_DIR (the repository root: Cargo.toml is there)
#     followed, in the same expression, by `..` or `.parent()`;
#   - `ancestors().nth(N)` of a file's own path (file!()) above the root;
#   - `$(dirname "$0")`, `${BASH_SOURCE[0]}`, `__file__` followed by more
#     `..` (or `.parent`, `dirname`) than the file is deep;
#   - Nix path literals (`../…`) that climb above the root.
# Prints one line per finding and `check-standalone: N passed, M failed`
# (files checked, files with a finding); exits 1 on a finding.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    list() { git ls-files -z --cached --others --exclude-standard; }
else
    list() { find . \( -name .git -o -name target \) -prune -o -type f -printf '%P\0'; }
fi

list | python3 -c '
import re, sys
from pathlib import Path

me = "scripts/check-standalone.sh"
code_suffixes = {".rs", ".sh", ".py", ".nix", ".toml", ".bash"}
files = sorted(set(p for p in sys.stdin.read().split("\0") if p))

up = r"\.\./"
shared = re.compile(r"\.\./" + "shared" + r"\b")
workplace = re.compile(r"(?<![\w.])/" + "work" + r"/")
manifest = re.compile(r"CARGO_MANIFEST_DIR")
escape_after_manifest = re.compile(r"\"/?\.\.(/|\")|join\(\s*\"\.\.|\.parent\(\)")
ancestors = re.compile(r"ancestors\(\)\s*\.nth\((\d+)\)")
shell_anchor = re.compile(
    r"(?:dirname\s+\"?\$(?:0|\{BASH_SOURCE\[0\]\}|BASH_SOURCE)\"?\)?\"?|__file__\)?)"
    r"((?:\s*[,+]?\s*\"?/?\.\.\"?)+|(?:\.resolve\(\))?(?:\.parent)+)"
)
nix_path = re.compile(r"(?<![\w/.\"$])((?:\.\./)+)")

def is_code(path):
    p = Path(path)
    if p.suffix in code_suffixes:
        return True
    if p.suffix:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False

checked = 0
bad = 0
for path in files:
    if path == me or not Path(path).is_file() or not is_code(path):
        continue
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        continue
    checked += 1
    depth = len(Path(path).parts) - 1   # directories between the root and the file
    findings = []
    lines = text.splitlines()
    def line_of(offset):
        return text.count("\n", 0, offset) + 1
    for m in shared.finditer(text):
        findings.append((line_of(m.start()), "reads a sibling of the repository (../shared)"))
    for m in workplace.finditer(text):
        findings.append((line_of(m.start()), "names an absolute path of this workplace (/work/)"))
    for m in manifest.finditer(text):
        tail = text[m.end():m.end() + 160].split(";", 1)[0]
        if escape_after_manifest.search(tail):
            findings.append((line_of(m.start()), "climbs above CARGO_MANIFEST_DIR, the repository root"))
    if path.endswith(".rs"):
        for m in ancestors.finditer(text):
            if int(m.group(1)) > depth + 1:
                findings.append((line_of(m.start()), f"ancestors().nth({m.group(1)}) of a file {depth + 1} deep"))
    for m in shell_anchor.finditer(text):
        climb = m.group(1).count("..") + m.group(1).count(".parent")
        if m.group(1).count(".parent"):
            climb -= 1   # the first .parent is the file s own directory
        if climb > depth:
            findings.append((line_of(m.start()), f"climbs {climb} levels from a file {depth} deep"))
    if path.endswith(".nix"):
        for m in nix_path.finditer(text):
            climb = m.group(1).count("../")
            if climb > depth:
                findings.append((line_of(m.start()), f"Nix path climbs {climb} levels from a file {depth} deep"))
    if findings:
        bad += 1
        for number, why in sorted(set(findings)):
            print(f"{path}:{number}: {why}\n    {lines[number - 1].strip()}")
print(f"check-standalone: {checked - bad} passed, {bad} failed")
sys.exit(1 if bad else 0)
'
