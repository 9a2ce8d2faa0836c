#!/usr/bin/env python3
"""Median table for bench/redis-compare.sh (stdlib only).

Input: the CSV the shell script writes, one row per (server, round, pipeline, workload):
    server,round,pipeline,workload,rps,avg_ms,p50_ms,p99_ms
Prints, per workload and pipeline depth, the medians over the rounds: speedlayer's ops/s,
p50 and p99, both redis-server configurations' ops/s, and speedlayer's ratio to each.
"""

import csv
import statistics
import sys
from collections import defaultdict

SERVERS = ("speedlayer", "redis-everysec", "redis-always")
ORDER = ("incr", "set", "get", "sadd", "pfadd")


def main() -> int:
    if len(sys.argv) < 2:
        print(f"usage: {sys.argv[0]} RESULTS.csv [caption]", file=sys.stderr)
        return 2
    runs = defaultdict(list)  # (workload, pipeline, server) -> [(rps, p50, p99)]
    with open(sys.argv[1], newline="") as f:
        for row in csv.DictReader(f):
            key = (row["workload"], int(row["pipeline"]), row["server"])
            runs[key].append((float(row["rps"]), float(row["p50_ms"]), float(row["p99_ms"])))
    if not runs:
        print("no results", file=sys.stderr)
        return 1

    def median(workload, pipeline, server, field):
        samples = runs.get((workload, pipeline, server))
        if not samples:
            return None
        return statistics.median(s[field] for s in samples)

    workloads = sorted(
        {w for w, _, _ in runs},
        key=lambda w: (ORDER.index(w) if w in ORDER else len(ORDER), w),
    )
    pipelines = sorted({p for _, p, _ in runs})
    header = [
        "workload",
        "-P",
        "speedlayer ops/s",
        "p50 ms",
        "p99 ms",
        "redis-everysec ops/s",
        "redis-always ops/s",
        "sl/everysec",
        "sl/always",
    ]
    table = []
    for pipeline in pipelines:
        for workload in workloads:
            sl = median(workload, pipeline, "speedlayer", 0)
            es = median(workload, pipeline, "redis-everysec", 0)
            al = median(workload, pipeline, "redis-always", 0)
            if sl is None and es is None and al is None:
                continue

            def ops(v):
                return "-" if v is None else f"{v:,.0f}"

            def ms(v):
                return "-" if v is None else f"{v:.3f}"

            def ratio(a, b):
                return "-" if a is None or not b else f"{a / b:.2f}"

            table.append(
                [
                    workload,
                    str(pipeline),
                    ops(sl),
                    ms(median(workload, pipeline, "speedlayer", 1)),
                    ms(median(workload, pipeline, "speedlayer", 2)),
                    ops(es),
                    ops(al),
                    ratio(sl, es),
                    ratio(sl, al),
                ]
            )
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]

    def line(cells):
        # Text columns left-aligned, numbers right-aligned.
        return "| " + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ) + " |"

    rounds = max(len(v) for v in runs.values())
    caption = sys.argv[2] if len(sys.argv) > 2 else ""
    print(f"\nmedians over {rounds} round(s); {caption}".rstrip())
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print(line(row))
    print(
        "\nsadd: redis-benchmark's SADD always targets the one key `myset` (-r randomizes "
        "the member only);\npfadd: custom `PFADD pf:__rand_int__ el:__rand_int__` "
        "(redis-benchmark 7.0 has no PFADD test)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
