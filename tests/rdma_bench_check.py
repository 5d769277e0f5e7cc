#!/usr/bin/env python3
"""Checks the JSON and CSV of an rdma_bench run with --baseline and --quick.

usage: rdma_bench_check.py BENCH.json BENCH.csv [--server-host ADDR]

Every row must have every field (a figure, or null with a reason), the 64 B
library-memory rows a figure, and the CSV as many rows as the JSON. With
--server-host (a --client run against a --server on another host): the run
must name that server, and the 64 B ping-pong must have its perftest
baseline, run across the same wire. Figures are not judged.
"""

import csv, json, sys

server_host = None
if len(sys.argv) == 5 and sys.argv[3] == "--server-host":
    server_host = sys.argv[4]
elif len(sys.argv) != 3:
    sys.exit(__doc__)

doc = json.load(open(sys.argv[1]))
problems = []
def check(ok, what):
    if not ok:
        problems.append(what)

check(doc.get("tool") == "rdma_bench", "tool is not rdma_bench")
check(doc.get("run", {}).get("baseline") is True, "run.baseline is not true")
rows = doc.get("rows", [])
check(len(rows) == 14, f"{len(rows)} rows, want 14 (3 workloads x 2 memories x 2 sizes, datagram and Demikernel-style latency)")

number = (int, float)
common = ["workload", "size", "memory", "connections", "window", "iterations",
          "seconds", "value", "unit", "median_us", "p99_us", "p999_us",
          "mean_us", "mpps", "mib_per_s", "reason", "app_memory_cost"]
baseline = ["baseline_tool", "baseline_value", "baseline_p99_us",
            "baseline_p999_us", "baseline_reason", "ratio", "read_bw_tool",
            "read_bw_mib_per_s", "read_bw_reason", "read_bw_ratio"]
units = {"latency": "us", "msgrate": "Mpps", "bandwidth": "MiB/s",
         "dgram_latency": "us", "demi_latency": "us"}
tools = {"latency": "ib_send_lat", "msgrate": "ib_send_bw",
         "bandwidth": "ib_send_bw", "dgram_latency": "ib_send_lat -c UD",
         "demi_latency": "ib_send_lat"}
seen = set()
for row in rows:
    name = f"{row.get('workload')} {row.get('size')} {row.get('memory')}"
    for key in common + baseline:
        check(key in row, f"{name}: no '{key}'")
    if problems:
        break
    seen.add((row["workload"], row["size"], row["memory"]))
    check(row["workload"] in units, f"{name}: unknown workload")
    check(row["memory"] in ("lib", "app"), f"{name}: unknown memory")
    check(row["unit"] == units.get(row["workload"]), f"{name}: unit")
    value = row["value"]
    if value is None:
        check(isinstance(row["reason"], str) and row["reason"],
              f"{name}: null value without a reason")
    else:
        check(isinstance(value, number) and value > 0, f"{name}: bad value")
        check(row["reason"] is None, f"{name}: a value and a reason")
        check(row["iterations"] > 0, f"{name}: no iterations")
        if row["workload"] in ("latency", "dgram_latency", "demi_latency"):
            check(all(isinstance(row[k], number)
                      for k in ("median_us", "p99_us", "p999_us")),
                  f"{name}: latency figures missing")
            check(row["median_us"] <= row["p99_us"] <= row["p999_us"],
                  f"{name}: percentiles out of order")
        else:
            key = "mpps" if row["workload"] == "msgrate" else "mib_per_s"
            check(row[key] == value, f"{name}: {key} differs from value")
    # Application memory's cost against library memory: on app rows with
    # both figures (a positive ratio), never on library rows.
    cost = row["app_memory_cost"]
    if row["memory"] == "lib":
        check(cost is None, f"{name}: an app_memory_cost on a lib row")
    elif value is not None and cost is not None:
        check(isinstance(cost, number) and cost > 0, f"{name}: bad app_memory_cost")
    # The library runs 64 B messages from its own memory today.
    if row["size"] == 64 and row["memory"] == "lib":
        check(value is not None, f"{name}: no figure ({row['reason']})")
    check(row["baseline_tool"] == tools.get(row["workload"]),
          f"{name}: baseline tool {row['baseline_tool']}")
    if row["baseline_value"] is None:
        check(isinstance(row["baseline_reason"], str) and row["baseline_reason"],
              f"{name}: null baseline without a reason")
    if row["workload"] == "bandwidth" and row["size"] > 8192:
        check(row["read_bw_tool"] == "ib_read_bw", f"{name}: no ib_read_bw")
        if row["read_bw_mib_per_s"] is None:
            check(bool(row["read_bw_reason"]), f"{name}: read_bw without reason")
check(len(seen) == len(rows), "duplicate rows")
if server_host is not None:
    check(doc["run"].get("server_host") == server_host,
          f"run.server_host is {doc['run'].get('server_host')!r}, want {server_host}")
    pingpong = [r for r in rows if r["workload"] == "latency" and
                r["size"] == 64 and r["memory"] == "lib"]
    check(pingpong and pingpong[0]["baseline_value"] is not None,
          "the 64 B ping-pong has no perftest baseline across the wire")

with open(sys.argv[2]) as f:
    table = list(csv.DictReader(f))
check(len(table) == len(rows), f"CSV has {len(table)} rows, JSON {len(rows)}")
if table:
    check(set(common + baseline) <= set(table[0].keys()), "CSV columns")

if problems:
    print("rdma_bench JSON/CSV problems:", *problems, sep="\n  ")
    sys.exit(1)
print(f"rdma_bench_check: {len(rows)} rows, every field present")
