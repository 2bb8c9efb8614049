#!/usr/bin/env python3
"""Static checks of the NixOS VM tests (nix/tests/*.nix), run by nix/check.sh
on machines that cannot build or run them.

    python3 nix/tests/lint/check.py WORLD.json

WORLD.json is what `nix-instantiate --eval --strict --json
nix/tests/lint/world.nix` prints: each test's node names and testScript
(as the driver receives it) and the build script of the zone files.

Checks, each printing `ok`/`FAIL` lines:

  mypy     every testScript type-checks the way the NixOS test driver checks
           it before running it: mypy on the script below a prelude that
           declares the driver's globals and one `Machine` per node
           (nixos_test_driver.pyi beside this file);
  globals  no script binds a name the driver defines for it — `log`,
           `machines`, `start_all`, `subtest`, …, or a node's name — at any
           scope (assignment, loop variable, parameter, import, def …);
  dns      every literal `assert_secure` / `assert_insecure` / `assert_bogus`
           / `assert_secure_nxdomain` query of a script agrees with the zone
           files the test world serves and with the zones the script's
           `bootstrap_dnssec` call signs, makes bogus or leaves insecure;
  nodes    every node that enables services.postern sets
           settings.resolver.nameservers (the test VMs' resolv.conf has no
           nameserver, and postern builds its resolver when it starts), and
           one that enables tlsa.autoUpdate gives its timer an explicit
           `onBoot` (the default 1 min races the script on a slow boot);
  twins    nix/tests/README.md's table of VM tests and hermetic twins names
           every VM test of nix/tests/default.nix, each twin it names exists,
           and each test file's "Hermetic twin" line agrees with the table.

Ends with `nix-lint: N passed, M failed`; exits 1 if any check failed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
TESTS = ROOT / "nix" / "tests"

# The names the driver puts into a test script's globals, with the types
# its own type-check prelude gives them (nixos/lib/test-script-prepend.py
# and Driver.test_symbols in nixpkgs).
DRIVER_GLOBALS: dict[str, str] = {
    "start_all": "Callable[[], None]",
    "test_script": "Callable[[], None]",
    "run_tests": "Callable[[], None]",
    "join_all": "Callable[[], None]",
    "serial_stdout_on": "Callable[[], None]",
    "serial_stdout_off": "Callable[[], None]",
    "subtest": "Callable[[str], AbstractContextManager[None]]",
    "retry": "RetryProtocol",
    "polling_condition": "PollingConditionProtocol",
    "create_machine": "CreateMachineProtocol",
    "machines": "list[Machine]",
    "machines_qemu": "list[Machine]",
    "machines_nspawn": "list[Machine]",
    "vlans": "list[VLan]",
    "driver": "Driver",
    "log": "Logger",
    "t": "AssertionTester",
    "debug": "Debug",
}
# Also driver symbols, but bound by the prelude's imports.
DRIVER_MODULES_AND_CLASSES = {"os", "Machine", "BaseMachine"}
# Every node sits on VLAN 1 unless it says otherwise.
VLANS = ["vlan1"]

DNS_HELPERS = {
    "assert_secure": ("NOERROR", "secure"),
    "assert_insecure": ("NOERROR", "insecure"),
    "assert_bogus": ("SERVFAIL", "bogus"),
    "assert_secure_nxdomain": ("NXDOMAIN", "secure"),
}


def pythonize(name: str) -> str:
    """The driver's name for a node's Python variable."""
    return re.sub(r"^[^A-Za-z_]|[^A-Za-z0-9_]", "_", name)


@dataclass
class Report:
    passed: int = 0
    failed: int = 0
    lines: list[str] = field(default_factory=list)

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what: str, detail: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}")
        for line in detail.rstrip().splitlines():
            print(f"      {line}")


def locate(text: str) -> str:
    """Where a line of a test script comes from: the first .nix or .py file
    under nix/tests holding it (scripts are assembled from several)."""
    needle = text.strip()
    if len(needle) < 8:
        return ""
    for path in sorted(TESTS.rglob("*")):
        if path.suffix not in (".nix", ".py") or "lint" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip() == needle:
                return f"{path.relative_to(ROOT)}:{number}"
    return ""


# ------------------------------------------------------------------ mypy


def prelude(nodes: list[str]) -> str:
    lines = [
        "# prelude: the NixOS test driver's globals (nix/tests/lint/check.py)",
        "import os",
        "from collections.abc import Callable",
        "from contextlib import AbstractContextManager",
        "from nixos_test_driver import (",
        "    AssertionTester, CreateMachineProtocol, Debug, Driver, Logger, Machine,",
        "    PollingConditionProtocol, RetryProtocol, VLan,",
        ")",
        "BaseMachine = Machine",
    ]
    lines += [f"{name}: {typ}" for name, typ in DRIVER_GLOBALS.items()]
    names = [pythonize(n) for n in nodes]
    if len(names) == 1 and names[0] != "machine":
        names.append("machine")
    lines += [f"{name}: Machine" for name in names]
    lines += [f"{vlan}: VLan" for vlan in VLANS]
    return "\n".join(lines) + "\n"


def find_mypy() -> list[str] | None:
    if shutil.which("mypy"):
        return ["mypy"]
    probe = subprocess.run(
        [sys.executable, "-m", "mypy", "--version"], capture_output=True, text=True
    )
    return [sys.executable, "-m", "mypy"] if probe.returncode == 0 else None


def check_mypy(report: Report, tests: dict[str, dict]) -> None:
    mypy = find_mypy()
    if mypy is None:
        report.fail("mypy", "mypy is not installed (Debian: apt-get install mypy)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(HERE / "nixos_test_driver.pyi", work / "nixos_test_driver.pyi")
        files: dict[str, tuple[str, int, str]] = {}
        for check, test in sorted(tests.items()):
            head = prelude(test["nodes"])
            module = "script_" + pythonize(check)
            (work / f"{module}.py").write_text(head + test["script"], encoding="utf-8")
            files[f"{module}.py"] = (check, head.count("\n"), test["script"])
        # The driver's own flags (nixos/lib/testing/driver.nix), and no cache.
        result = subprocess.run(
            mypy
            + [
                "--no-implicit-optional",
                "--no-color-output",
                "--no-error-summary",
                "--show-error-codes",
                "--no-incremental",
                "--cache-dir",
                os.devnull,
                *sorted(files),
            ],
            cwd=work,
            capture_output=True,
            text=True,
            env={**os.environ, "MYPYPATH": str(work)},
        )
        if result.returncode not in (0, 1):
            report.fail("mypy", result.stdout + result.stderr)
            return
        errors: dict[str, list[str]] = {check: [] for check, _, _ in files.values()}
        for line in result.stdout.splitlines():
            m = re.match(r"^([^:]+):(\d+): (error|note): (.*)$", line)
            if not m or m.group(1) not in files:
                if line.strip():
                    errors.setdefault("(mypy)", []).append(line)
                continue
            check, offset, script = files[m.group(1)]
            number = int(m.group(2)) - offset
            if number < 1:
                errors[check].append(f"prelude line {m.group(2)}: {m.group(4)}")
                continue
            text = script.splitlines()[number - 1]
            where = locate(text)
            errors[check].append(
                f"testScript line {number}{' (' + where + ')' if where else ''}: "
                f"{m.group(3)}: {m.group(4)}\n    {text.strip()}"
            )
        for check, problems in sorted(errors.items()):
            if any("error:" in p for p in problems) or check == "(mypy)":
                report.fail(f"mypy: {check}", "\n".join(problems))
            else:
                report.ok(f"mypy: {check}")


# ------------------------------------------------------------------ globals


def bindings(tree: ast.AST) -> list[tuple[str, int, str]]:
    """Every name a module binds, at any scope: (name, line, how)."""
    found: list[tuple[str, int, str]] = []

    def targets(node: ast.AST, how: str) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                found.append((sub.id, sub.lineno, how))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                targets(target, "assignment")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            targets(node.target, "loop variable")
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    targets(item.optional_vars, "with … as")
        elif isinstance(node, ast.NamedExpr):
            targets(node.target, "assignment expression")
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                targets(target, "del")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.append((node.name, node.lineno, "definition"))
        elif isinstance(node, ast.arguments):
            for arg in [
                *node.posonlyargs,
                *node.args,
                *node.kwonlyargs,
                *([node.vararg] if node.vararg else []),
                *([node.kwarg] if node.kwarg else []),
            ]:
                found.append((arg.arg, arg.lineno, "parameter"))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                if isinstance(node, ast.Import) and alias.name == "os" and alias.asname is None:
                    continue  # the driver's `os` is this very module
                found.append((name, node.lineno, "import"))
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.append((node.name, node.lineno, "except … as"))
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                found.append((name, node.lineno, "global declaration"))
        elif isinstance(node, ast.MatchAs) and node.name:
            found.append((node.name, node.lineno, "match capture"))
    return found


def check_globals(report: Report, tests: dict[str, dict]) -> None:
    for check, test in sorted(tests.items()):
        script = test["script"]
        try:
            tree = ast.parse(script, filename=check)
        except SyntaxError as e:
            report.fail(f"globals: {check}", f"testScript does not parse: {e}")
            continue
        nodes = [pythonize(n) for n in test["nodes"]]
        reserved = set(DRIVER_GLOBALS) | DRIVER_MODULES_AND_CLASSES | set(nodes) | set(VLANS)
        if len(nodes) == 1:
            reserved.add("machine")  # the driver's alias of a test's only node
        problems = []
        for name, line, how in bindings(tree):
            if name in reserved:
                text = script.splitlines()[line - 1]
                where = locate(text)
                kind = "node" if name in nodes or name == "machine" else "driver global"
                problems.append(
                    f"testScript line {line}{' (' + where + ')' if where else ''}: "
                    f"{how} binds `{name}`, a {kind} of the test driver\n    {text.strip()}"
                )
        if problems:
            report.fail(f"globals: {check}", "\n".join(problems))
        else:
            report.ok(f"globals: {check}")


# ------------------------------------------------------------------ dns


def parse_zones(script: str) -> dict[str, list[tuple[str, str]]]:
    """The zone files the zones derivation writes (`cat > $out/Z.zone
    <<EOF … EOF`), as zone → [(absolute owner, type)]."""
    zones: dict[str, list[tuple[str, str]]] = {}
    lines = iter(script.splitlines())
    for line in lines:
        m = re.match(r"^\s*cat > \$out/(.+)\.zone <<'?EOF'?\s*$", line)
        if not m:
            continue
        zone = m.group(1).lower().rstrip(".")
        records: list[tuple[str, str]] = []
        origin = zone
        for body in lines:
            if body.strip() == "EOF":
                break
            text = body.split(";", 1)[0].strip()
            if not text or text.startswith("\\$TTL") or text.startswith("$TTL"):
                continue
            if text.startswith("$ORIGIN") or text.startswith("\\$ORIGIN"):
                origin = text.split()[1].lower().rstrip(".")
                continue
            fields = text.split()
            owner = fields[0].lower()
            rest = fields[1:]
            while rest and (rest[0].isdigit() or rest[0].upper() in ("IN", "CH")):
                rest = rest[1:]
            rtype = rest[0].upper() if rest else "?"
            if owner == "@":
                name = origin
            elif owner.endswith("."):
                name = owner.rstrip(".")
            else:
                name = f"{owner}.{origin}"
            records.append((name, rtype))
        zones[zone] = records
    return zones


def in_zone(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


def expected_answer(
    zones: dict[str, list[tuple[str, str]]],
    security: dict[str, str],
    qtype: str,
    qname: str,
) -> tuple[str, str, str]:
    """(rcode, security, why) the resolver should give for qname/qtype."""
    candidates = [z for z in zones if in_zone(qname, z)]
    if not candidates:
        return ("?", "?", f"{qname} is in no zone of the test world ({', '.join(sorted(zones))})")
    zone = max(candidates, key=len)
    sec = security.get(zone, "?")
    if sec == "bogus":
        return ("SERVFAIL", "bogus", f"zone {zone} is made bogus by bootstrap_dnssec")
    owners = zones[zone]
    if (qname, qtype) in owners:
        return ("NOERROR", sec, f"zone {zone} ({sec}) has {qtype} at {qname}")
    if any(name == qname or name.endswith("." + qname) for name, _ in owners):
        return ("NOERROR", sec, f"zone {zone} ({sec}) has {qname}, but no {qtype} there (NODATA)")
    return ("NXDOMAIN", sec, f"zone {zone} ({sec}) has nothing at or below {qname}")


def literal_list(node: ast.AST | None) -> list[str] | None:
    if isinstance(node, (ast.List, ast.Tuple)) and all(
        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts
    ):
        return [e.value for e in node.elts]  # type: ignore[attr-defined]
    return None


def check_dns(report: Report, tests: dict[str, dict], zones_script: str) -> None:
    zones = parse_zones(zones_script)
    if "test" not in zones or len(zones) < 2:
        report.fail("dns: zone files", f"found no zone files in the zones build script: {zones}")
        return
    children = sorted(z for z in zones if z != "test")
    delegated = {name for name, rtype in zones["test"] if rtype == "NS" and name != "test"}
    missing = [c for c in children if c not in delegated]
    if missing:
        report.fail("dns: zone files", f"zones not delegated from test.: {missing}")
    else:
        report.ok(f"dns: zone files ({len(zones)} zones, every child delegated from test.)")

    for check, test in sorted(tests.items()):
        tree = ast.parse(test["script"])
        security: dict[str, str] | None = None
        queries: list[tuple[str, str, int]] = []
        unchecked = 0
        problems: list[str] = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            name = node.func.id
            if name == "bootstrap_dnssec":
                kw = {k.arg: k.value for k in node.keywords}
                secure = literal_list(kw.get("secure")) or []
                bogus = literal_list(kw.get("bogus")) or []
                security = {z: "insecure" for z in zones}
                security["test"] = "secure"
                for label in secure:
                    security[f"{label}.test"] = "secure"
                for label in bogus:
                    security[f"{label}.test"] = "bogus"
                for label in secure + bogus:
                    if f"{label}.test" not in zones:
                        problems.append(
                            f"line {node.lineno}: bootstrap_dnssec names {label}.test, "
                            "which has no zone file"
                        )
            elif name in DNS_HELPERS and len(node.args) >= 2:
                arg = node.args[1]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    queries.append((name, arg.value, node.lineno))
                else:
                    unchecked += 1
        if security is None:
            if queries:
                problems.append("DNS assertions, but no bootstrap_dnssec(…) call with literal lists")
            else:
                report.ok(f"dns: {check} (no DNS assertion)")
                continue
        assert security is not None or problems
        for helper, query, line in queries:
            fields = query.split()
            if len(fields) != 2:
                problems.append(f"line {line}: {helper}(…, {query!r}): expected \"TYPE NAME\"")
                continue
            qtype, qname = fields[0].upper(), fields[1].lower().rstrip(".")
            want_rcode, want_sec = DNS_HELPERS[helper]
            rcode, sec, why = expected_answer(zones, security or {}, qtype, qname)
            if (rcode, sec) != (want_rcode, want_sec):
                text = test["script"].splitlines()[line - 1]
                where = locate(text)
                problems.append(
                    f"testScript line {line}{' (' + where + ')' if where else ''}: "
                    f"{helper}(…, {query!r}) expects a {want_sec} {want_rcode}, "
                    f"but the world answers a {sec} {rcode}: {why}"
                )
        if problems:
            report.fail(f"dns: {check}", "\n".join(problems))
        else:
            note = f", {unchecked} computed, not checked" if unchecked else ""
            report.ok(f"dns: {check} ({len(queries)} literal queries{note})")


# ------------------------------------------------------------------ nodes


def check_nodes(report: Report, tests: dict[str, dict]) -> None:
    for check, test in sorted(tests.items()):
        nodes = test.get("postern", {})
        problems = []
        for node, p in sorted(nodes.items()):
            if not p["nameservers"]:
                problems.append(
                    f"node {node} enables services.postern without "
                    "settings.resolver.nameservers (the VMs' resolv.conf has none: "
                    "postern would not start)"
                )
            if p.get("timer") is not None and p["timer"]["onBoot"] is None:
                problems.append(
                    f"node {node} enables tlsa.autoUpdate with the default onBoot: its timer "
                    "races the test script (pin it, e.g. onBoot = \"1d\", and start the "
                    "sync from the script)"
                )
        if problems:
            report.fail(f"nodes: {check}", "\n".join(problems))
        else:
            report.ok(f"nodes: {check} ({len(nodes)} postern node(s))")


# ------------------------------------------------------------------ twins


def check_twins(report: Report, tests: dict[str, dict]) -> None:
    default = (TESTS / "default.nix").read_text(encoding="utf-8")
    files = dict(re.findall(r"^\s*(vm-[\w-]+)\s*=\s*runTest\s+\./([\w.-]+\.nix)\s*;", default, re.M))
    problems: list[str] = []
    if set(files) != set(tests):
        problems.append(
            f"default.nix: could not map every check to its file: {sorted(files)} vs {sorted(tests)}"
        )
    on_disk = sorted(
        p.name for p in TESTS.glob("*.nix") if p.name != "default.nix"
    )
    for name in on_disk:
        if name not in files.values():
            problems.append(f"nix/tests/{name} is not run by nix/tests/default.nix")

    readme = (TESTS / "README.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    for line in readme.splitlines():
        m = re.match(r"^\|\s*`([\w.-]+\.nix)`\s*\|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            rows[m.group(1)] = cells[1] if len(cells) >= 2 else ""
    for check, name in sorted(files.items()):
        if name not in rows:
            problems.append(f"README.md: the twin table has no row for {name}")
            continue
        twins = re.findall(r"`(tests/[\w./-]+\.rs)`", rows[name])
        if not twins:
            problems.append(f"README.md: the row of {name} names no hermetic twin")
        for twin in twins:
            if not (ROOT / twin).is_file():
                problems.append(f"README.md: {name}'s twin {twin} does not exist")
        header = (TESTS / name).read_text(encoding="utf-8")
        m = re.search(r"^#\s*Hermetic twins?:\s*(.*)$", header, re.M)
        if not m:
            problems.append(f"{name}: no '# Hermetic twin: tests/….rs' line")
            continue
        named = re.findall(r"(tests/[\w./-]+\.rs)", m.group(1))
        for twin in named:
            if not (ROOT / twin).is_file():
                problems.append(f"{name}: its twin {twin} does not exist")
            if twin not in twins:
                problems.append(f"{name}: its twin {twin} is not in its README.md row")
    for name in rows:
        if name not in files.values():
            problems.append(f"README.md: the twin table lists {name}, which default.nix does not run")
    if problems:
        report.fail("twins: nix/tests/README.md", "\n".join(problems))
    else:
        report.ok(f"twins: nix/tests/README.md ({len(files)} VM tests, each with existing twins)")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    world = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    tests = world["tests"]
    report = Report()
    check_mypy(report, tests)
    check_globals(report, tests)
    check_dns(report, tests, world["zonesScript"])
    check_nodes(report, tests)
    check_twins(report, tests)
    print(f"nix-lint: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
