#!/usr/bin/env python3
"""redis-py's own test suite against a speedlayer node, per command family.

Runs the tests of the families speedlayer claims (below) from redis-py's source
distribution with `--redis-url` pointing at a node, then compares the outcome with the
known failures listed in docs/redis-compat.md (its "redis-py's own tests" table, one row
per test with the reason). Exits 1 when a claimed test fails that the table does not
list (a regression, or a new gap to document) or when a listed test passes (the table is
stale: remove the row). Prints passed/failed/skipped per family.

Usage: suite.py --tests DIR --url redis://127.0.0.1:PORT [--python PYTHON]
                [--doc docs/redis-compat.md] [--print-rows] [--protocol 3]
  DIR is the `tests` folder of redis-py's sdist (compat/redis-py/setup.sh fetches it);
  PYTHON has pytest and redis-py (default: the venv setup.sh makes).
  --print-rows prints a table row for every failing test (to start or refresh the doc).
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

# Families speedlayer claims, by test name (test functions are named after commands).
FAMILIES = [
    ("strings and counters", r"^test_(get|set|incr|decr|incrby|decrby|mget|mset|getdel|getset|getex|setnx|setex|psetex|incrbyfloat|msetnx)(_|$)"),
    ("sets", r"^test_s(add|card|ismember|members|mismember|rem|randmember|pop|inter|interstore|union|unionstore|diff|diffstore)(_|$)"),
    ("hashes", r"^test_h(get|set|del|exists|getall|incrby|keys|len|mget|mset|setnx|vals)(_|$)"),
    ("hyperloglog", r"^test_pf"),
    ("keys", r"^test_(delete|unlink|exists|type|keys|scan|dbsize|flushdb|flushall)(_|$)"),
    ("connection", r"^test_(ping|echo|client_(setname|getname|id|list|info|setinfo)|select|time|info)(_|$)"),
]
# Every test of these files is claimed under the family named.
FILES = {"test_pipeline.py": "pipelines"}
SOURCES = ["test_commands.py", "test_pipeline.py"]

ROW = re.compile(r"^\|\s*`(?P<test>[^`]+)`\s*\|\s*(?P<family>[^|]+?)\s*\|\s*(?P<reason>.+?)\s*\|\s*$")


def family_of(nodeid):
    file, _, name = nodeid.partition("::")
    base = os.path.basename(file)
    if base in FILES:
        return FILES[base]
    func = name.split("::")[-1].split("[")[0]
    for family, pattern in FAMILIES:
        if re.search(pattern, func):
            return family
    return None


def known_failures(doc):
    """Rows of the doc's redis-py table: test id -> (family, reason)."""
    rows = {}
    inside = False
    with open(doc, encoding="utf-8") as f:
        for line in f:
            if line.startswith("## "):
                inside = line.strip() == "## redis-py's own tests"
                continue
            m = ROW.match(line) if inside else None
            if m and m["test"] != "test":
                rows[m["test"]] = (m["family"], m["reason"])
    return rows


def short_id(nodeid):
    """`test_commands.py::TestRedisCommands::test_x` -> `TestRedisCommands::test_x`."""
    return nodeid.split("::", 1)[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--python", default=None)
    ap.add_argument("--doc", default=os.path.join(os.path.dirname(__file__), "..", "..", "docs", "redis-compat.md"))
    ap.add_argument("--print-rows", action="store_true")
    ap.add_argument("--protocol", default=None, help="3 runs the tests over RESP3 (HELLO 3)")
    args = ap.parse_args()
    tests = os.path.abspath(args.tests)
    python = os.path.abspath(args.python or os.path.join(tests, "..", "..", "venv", "bin", "python"))
    root = os.path.dirname(tests)
    protocol = [f"--protocol={args.protocol}"] if args.protocol else []

    collected = subprocess.run(
        [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         f"--redis-url={args.url}"] + protocol + [os.path.join("tests", s) for s in SOURCES],
        cwd=root, capture_output=True, text=True)
    ids = [l.strip() for l in collected.stdout.splitlines() if "::" in l]
    claimed = [i for i in ids if family_of(i)]
    if not claimed:
        print(collected.stdout[-2000:], collected.stderr[-2000:])
        sys.exit("no claimed tests were collected")

    with tempfile.TemporaryDirectory() as tmp:
        junit = os.path.join(tmp, "junit.xml")
        subprocess.run(
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--redis-url={args.url}",
             f"--junitxml={junit}", "-o", "junit_family=xunit1"] + protocol + claimed,
            cwd=root, capture_output=True, text=True)
        tree = ET.parse(junit)

    outcome = {}
    first_line = {}
    for case in tree.iter("testcase"):
        file = case.get("file") or ""
        nodeid = f"{os.path.relpath(file, 'tests') if file else ''}::{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            outcome[nodeid] = "failed"
            first_line[nodeid] = (problem.get("message") or "").splitlines()[0][:160] if problem.get("message") else "failed"
        elif case.find("skipped") is not None:
            outcome[nodeid] = "skipped"
        else:
            outcome[nodeid] = outcome.get(nodeid, "passed")

    known = known_failures(args.doc)
    counts = collections.defaultdict(collections.Counter)
    unexpected, stale = [], []
    for nodeid, result in sorted(outcome.items()):
        family = family_of(nodeid.replace("::", "::", 1)) or family_of("tests/" + nodeid)
        family = family or "?"
        counts[family][result] += 1
        sid = short_id(nodeid) if nodeid.count("::") >= 2 else nodeid
        if result == "failed" and sid not in known:
            unexpected.append((sid, family, first_line.get(nodeid, "")))
        # A row whose reason says it sometimes passes is a race the test can lose or win.
        if result == "passed" and sid in known and "sometimes passes" not in known[sid][1]:
            stale.append(sid)

    print(f"{'family':<22} {'passed':>6} {'failed':>6} {'skipped':>7}")
    for family in sorted(counts):
        c = counts[family]
        print(f"{family:<22} {c['passed']:>6} {c['failed']:>6} {c['skipped']:>7}")
    total = sum(counts.values(), collections.Counter())
    print(f"{'all claimed':<22} {total['passed']:>6} {total['failed']:>6} {total['skipped']:>7}")

    if args.print_rows:
        for nodeid, result in sorted(outcome.items()):
            if result == "failed":
                fam = family_of("tests/" + nodeid) or "?"
                msg = first_line.get(nodeid, "").replace("|", "\\|")
                print(f"| `{short_id(nodeid)}` | {fam} | {msg} |")
    ok = True
    if unexpected:
        ok = False
        print("\nFailing tests that docs/redis-compat.md does not list (fix them, or list them with the reason):")
        for sid, family, line in unexpected:
            print(f"  {sid} [{family}]: {line}")
    if stale:
        ok = False
        print("\nTests docs/redis-compat.md lists as failing that now pass (remove their rows):")
        for sid in stale:
            print(f"  {sid}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
