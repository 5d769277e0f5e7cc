#!/usr/bin/env bash
# Checks the rule that the libOS never calls verbs or rdma_cm itself. The
# @system headers are not declared to Bazel (they are found in /usr/include),
# so its visibility rule only keeps libos/ from linking rdma-core, not from
# including it. This test keeps the rest of the rule, on the sources given as
# arguments (libos/'s own):
#   - no #include of <infiniband/...> or <rdma/...> (rdma-core's headers; the
#     libOS gets the handle types it passes along, such as ibv_pd*, from
#     //rdma's headers);
#   - no call of an ibv_* or rdma_* function;
#   - no reach into a verbs or rdma_cm struct through an rdma accessor
#     (pd()->..., id()->..., verbs()->...): //rdma gives the field instead.
# Comments are skipped. Fails listing every offending line.
set -euo pipefail

(($# > 0)) || { echo "layering_test: no sources given" >&2; exit 2; }

rules=(
  "include rdma-core's headers|#include\s*<(infiniband|rdma)/"
  "call verbs or rdma_cm|\b(ibv|rdma)_[a-z0-9_]+\s*\("
  "reach into verbs structs|\b(pd|id|listen_id|verbs|device)\(\)->"
)

# Prints the offending lines of the files given, rule by rule; returns 1 if
# there is any.
offences() {
  local rule what pattern hits status=0
  for rule in "${rules[@]}"; do
    what=${rule%%|*} pattern=${rule#*|}
    # Drop whole-line comments, then trailing // comments.
    hits=$(grep -nHE "$pattern" "$@" |
      grep -vE '^[^:]+:[0-9]+:\s*(//|/\*|\*)' |
      sed -E 's#//.*$##' | grep -E "$pattern" || true)
    if [[ -n $hits ]]; then
      echo "libos/ must not $what:"
      echo "$hits"
      status=1
    fi
  done
  return "$status"
}

# First, the check must be able to fail: a sample breaking each rule once
# (and a comment that must not count) gives exactly three offences.
sample=$(mktemp --suffix=.cc)
trap 'rm -f "$sample"' EXIT
printf '%s\n' '#include <infiniband/verbs.h>' \
  'ibv_post_send(qp, &wr, &bad);' 'auto* c = endpoint.pd()->context;' \
  '// ibv_post_recv(qp) in a comment' 'int n = 0;  // rdma_connect(id)' \
  > "$sample"
if offences "$sample" >/dev/null ||
  (($(offences "$sample" | grep -c "^$sample:") != 3)); then
  echo "layering_test: the check does not find the sample's three offences:" >&2
  offences "$sample" >&2 || true
  exit 1
fi

if ! offences "$@" >&2; then
  exit 1
fi
echo "layering_test: $# files of libos/ checked: no verbs or rdma_cm calls"
