#!/usr/bin/env python3
"""Figures for scripts/bench.sh: samples in, medians, tables, JSON and comparisons out.

Every measurement is one line "suite<TAB>row<TAB>key<TAB>value" in a samples file;
a suite's table shows the median of each key per row. Subcommands:

  cost SAMPLES SUITE ROW COUNT TICK BEFORE AFTER   add the CPU figures of one run
  wrk SAMPLES SUITE ROW OUTPUT                       add req/s, p50, p99 of a wrk run
  h2load SAMPLES SUITE ROW OUTPUT LOG                add req/s of an h2load run, and
                                                     p50, p99 from its --log-file
  add SAMPLES SUITE ROW KEY VALUE                    add one figure
  table SAMPLES SUITE TITLE BUDGET                   print a suite's table and ratios
  json SAMPLES OUT                                   every median as JSON
  compare A.json B.json                              ratios of B to A
"""
import json
import re
import statistics
import sys

# Column headings, in the order they are printed; a key not listed is printed last.
HEADINGS = {
    "rps": "req/s",
    "cps": "conn/s",
    "gbps": "Gbit/s",
    "qps": "queries/s",
    "mbps": "Mbit/s",
    "loss": "loss %",
    "lost": "lost",
    "p50": "p50 ms",
    "p99": "p99 ms",
    "cpu_us": "proxy µs",
    "user_us": "user µs",
    "machine_us": "machine µs",
    "bytes": "bytes/conn",
    "kept": "kept after",
    "thr": "throttled %",
    "load": "load %",
}
# The figure a row is ranked by: the first of these it has.
MAIN = ["rps", "cps", "gbps", "qps", "mbps", "bytes"]
# A proxy counts as budget-bound when it was throttled in at least this share of the
# scheduler periods in which it ran: it wanted more CPU than the budget gave it.
BOUND_PCT = 20.0


def read(path):
    rows = {}
    for line in open(path):
        suite, row, key, value = line.rstrip("\n").split("\t")
        rows.setdefault(suite, {}).setdefault(row, {}).setdefault(key, []).append(float(value))
    return rows


def append(path, suite, row, key, value):
    with open(path, "a") as f:
        f.write(f"{suite}\t{row}\t{key}\t{value}\n")


def snap_fields(text):
    # proxy_ticks periods throttled machine_busy load_busy load_all proxy_user_ticks
    return [int(x) for x in text.split()]


def cost(path, suite, row, count, tick, before, after):
    b, a = snap_fields(before), snap_fields(after)
    count, tick = max(float(count), 1.0), float(tick)
    if row != "direct":
        append(path, suite, row, "cpu_us", f"{(a[0] - b[0]) / tick * 1e6 / count:.2f}")
        # The proxy's own work, apart from the kernel's (syscalls and the TCP stack,
        # which every proxy here pays alike for the same reads and writes).
        append(path, suite, row, "user_us", f"{(a[6] - b[6]) / tick * 1e6 / count:.2f}")
        periods = a[1] - b[1]
        if periods > 0:
            append(path, suite, row, "thr", f"{100.0 * (a[2] - b[2]) / periods:.1f}")
    append(path, suite, row, "machine_us", f"{(a[3] - b[3]) / tick * 1e6 / count:.2f}")
    append(path, suite, row, "load", f"{100.0 * (a[4] - b[4]) / max(a[5] - b[5], 1):.0f}")


def latency_ms(out, pct):
    m = re.search(rf"\b{pct}%\s+([\d.]+)(us|ms|s)\b", out)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def wrk(path, suite, row, out, key="rps"):
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    secs = float(re.search(r"requests in ([\d.]+)(m?s)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad:
        print(f"  ({row}: wrk saw {bad.group(1)} non-2xx responses)", file=sys.stderr)
    if errors:
        print(f"  ({row}: wrk socket errors: {errors.group(1)})", file=sys.stderr)
    append(path, suite, row, key, f"{reqs / secs:.0f}")
    for pct, name in ((50, "p50"), (99, "p99")):
        ms = latency_ms(out, pct)
        if ms is not None:
            append(path, suite, row, name, f"{ms:.2f}")
    print(reqs)


def h2load(path, suite, row, out, log):
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    rate = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if not done or not rate:
        sys.exit(f"bench-stats.py: no h2load summary for {row}:\n{out}")
    if int(done.group(3)) or int(done.group(1)) != int(done.group(2)):
        print(f"  ({row}: h2load saw {done.group(3)} failed, {int(done.group(1)) - int(done.group(2))} not 2xx)",
              file=sys.stderr)
    append(path, suite, row, "rps", f"{float(rate.group(1)):.0f}")
    # Each line: start time (µs since the epoch), status, duration (µs).
    times = sorted(int(line.split()[2]) for line in open(log) if len(line.split()) == 3)
    if times:
        for pct, name in ((50, "p50"), (99, "p99")):
            append(path, suite, row, name, f"{times[min(len(times) - 1, len(times) * pct // 100)] / 1000:.2f}")
    print(done.group(2))


def fmt(value):
    if value >= 1000:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(path, suite, title, budget):
    rows = read(path).get(suite, {})
    if not rows:
        return
    keys = [k for k in HEADINGS if any(k in r for r in rows.values())]
    keys += sorted({k for r in rows.values() for k in r} - set(keys))
    main = next((k for k in MAIN if k in keys), keys[0])
    print(f"== {title}")
    widths = [max(len(HEADINGS.get(k, k)), 8) for k in keys]
    print("  " + f"{'row':<8}" + "".join(f" {HEADINGS.get(k, k):>{w}}" for k, w in zip(keys, widths)) + "  note")
    med = {row: {k: statistics.median(v) for k, v in r.items()} for row, r in rows.items()}
    for row, r in rows.items():
        cells = "".join(f" {fmt(med[row][k]) if k in r else '-':>{w}}" for k, w in zip(keys, widths))
        note = ""
        if float(budget) > 0 and row not in ("direct",) and "thr" in r:
            # Every round must have been bound, not just the median one.
            if min(r["thr"]) < BOUND_PCT:
                note = f"NOT budget-bound (throttled {min(r['thr']):.0f}% of periods in its least round)"
            else:
                note = "budget-bound"
        print("  " + f"{row:<8}" + cells + ("  " + note if note else ""))
    if "fulcrum" in med and main in med["fulcrum"]:
        parts = []
        for other in ("haproxy", "nginx", "direct", "hyper"):
            if other in med and main in med[other] and med[other][main]:
                ratio = med["fulcrum"][main] / med[other][main]
                # Lower is better for memory: the ratio is still fulcrum over the other.
                parts.append(f"fulcrum/{other} {ratio:.2f}x")
        if parts:
            print(f"  {HEADINGS.get(main, main)}: " + "  ".join(parts))
        # The same ratio round by round (rounds alternate between rows, so round i
        # of each row ran close together): how far the machine moved it.
        spread = []
        for other in ("haproxy", "nginx"):
            mine, theirs = rows["fulcrum"].get(main, []), rows.get(other, {}).get(main, [])
            if len(mine) > 1 and len(mine) == len(theirs) and all(theirs):
                each = [m / t for m, t in zip(mine, theirs)]
                spread.append(f"fulcrum/{other} {min(each):.2f}–{max(each):.2f}x")
        if spread:
            print("  per round: " + "  ".join(spread))
        # User-space CPU per unit of work, lower is better: what a proxy's own code
        # costs once the kernel's share (the same syscalls for all) is set aside.
        if med["fulcrum"].get("user_us"):
            parts = [f"{other}/fulcrum {med[other]['user_us'] / med['fulcrum']['user_us']:.2f}x"
                     for other in ("haproxy", "nginx", "hyper") if med.get(other, {}).get("user_us")]
            if parts:
                print("  user µs: " + "  ".join(parts))
    print()


def to_json(path, out):
    data = {
        suite: {row: {k: statistics.median(v) for k, v in r.items()} for row, r in rows.items()}
        for suite, rows in read(path).items()
    }
    with open(out, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    print(f"B/A: A = {a_path}, B = {b_path}")
    for suite in sorted(set(a) & set(b)):
        print(f"== {suite}")
        for row in sorted(set(a[suite]) & set(b[suite])):
            cells = []
            for key in HEADINGS:
                if key in a[suite][row] and key in b[suite][row] and a[suite][row][key]:
                    ratio = b[suite][row][key] / a[suite][row][key]
                    cells.append(f"{HEADINGS[key]} {fmt(a[suite][row][key])} -> {fmt(b[suite][row][key])} ({ratio:.2f}x)")
            if cells:
                print(f"  {row:<8} " + ", ".join(cells))
    for suite in sorted(set(a) ^ set(b)):
        print(f"  (suite {suite} is only in {'A' if suite in a else 'B'})")
    # The figures that matter across runs: fulcrum's ratio to each other proxy.
    print("== fulcrum's ratios in A and in B (B/A - 1: the run-to-run spread)")
    for suite in sorted(set(a) & set(b)):
        for other in ("haproxy", "nginx"):
            ratios = []
            for run in (a, b):
                rows = run[suite]
                key = next((k for k in MAIN if k in rows.get("fulcrum", {})), None)
                if key is None or other not in rows or not rows[other].get(key):
                    break
                ratios.append(rows["fulcrum"][key] / rows[other][key])
            if len(ratios) == 2 and ratios[0]:
                spread = ratios[1] / ratios[0] - 1
                print(f"  {suite:<20} fulcrum/{other:<8} {ratios[0]:.2f}x -> {ratios[1]:.2f}x ({spread:+.1%})")


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "cost":
        cost(*args)
    elif cmd == "wrk":
        wrk(*args)
    elif cmd == "h2load":
        h2load(*args)
    elif cmd == "add":
        append(*args)
    elif cmd == "table":
        table(*args)
    elif cmd == "json":
        to_json(*args)
    elif cmd == "compare":
        compare(*args)
    else:
        sys.exit(f"bench-stats.py: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
