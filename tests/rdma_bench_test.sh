#!/usr/bin/env bash
# rdma_bench end to end on the test device: a --quick --local --baseline run
# must finish, print its table, and write JSON and CSV in which every row has
# every field (a figure, or null with a reason). Figures are not judged.
#
# Runs under `bazel test` (runfiles) or directly, as tools/run_tests does in
# the Soft-RoCE guest. Needs DEMI_RDMA_ADDR (tools/softroce/run sets it) and
# python3.
set -euo pipefail

if [[ -z ${DEMI_RDMA_ADDR:-} ]]; then
  echo "DEMI_RDMA_ADDR is not set: run RDMA tests through tools/softroce/run" >&2
  exit 1
fi

bench= check=
for root in "${TEST_SRCDIR:-}" "${RUNFILES_DIR:-}" "$0.runfiles"; do
  candidate=$root/demi_rdma/tools/rdma_bench/rdma_bench
  if [[ -n $root && -x $candidate ]]; then
    bench=$candidate
    check=$root/demi_rdma/tests/rdma_bench_check.py
    break
  fi
done
[[ -n $bench ]] || { echo "rdma_bench not found in the runfiles of $0" >&2; exit 1; }

python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3) ||
  { echo "python3 is needed to check the JSON" >&2; exit 1; }

out=$(mktemp -d "${TEST_TMPDIR:-/tmp}/rdma_bench_test.XXXXXX")
trap 'rm -rf "$out"' EXIT

"$bench" --local --quick --baseline --json "$out/bench.json" \
  --csv "$out/bench.csv" >"$out/table.txt"
cat "$out/table.txt"

for heading in "Latency, one way" "Message rate" "Bandwidth" "Targets"; do
  grep -q "$heading" "$out/table.txt" ||
    { echo "the table has no '$heading' section" >&2; exit 1; }
done

"$python" "$check" "$out/bench.json" "$out/bench.csv"
