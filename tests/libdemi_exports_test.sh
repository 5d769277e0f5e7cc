#!/usr/bin/env bash
# libdemi.so defines exactly the demi_* functions of API.md (and this
# library's extensions: demi_mr_cache_stats, demi_dgram_stats, demi_event_fd
# and demi_event_arm) in its dynamic symbol table, and nothing else.
set -euo pipefail
library=$1
expected="demi_accept demi_bind demi_close demi_connect demi_dgram_stats
demi_event_arm demi_event_fd demi_getpeername
demi_getsockopt demi_init demi_listen demi_mr_cache_stats demi_pop demi_push
demi_pushto
demi_setsockopt demi_sgaalloc demi_sgafree demi_socket demi_wait
demi_wait_any demi_wait_next_n"
# Global symbols only: the static-TLS thread-locals (initial-exec) appear in
# the dynamic table as LOCAL, which no other object can bind to.
actual=$(nm -D --defined-only --extern-only "$library" | awk '{print $3}' | sort)
if [[ "$actual" != "$(echo $expected | tr ' ' '\n' | sort)" ]]; then
  echo "libdemi.so exports:"; echo "$actual"
  echo "expected:"; echo $expected | tr ' ' '\n'
  exit 1
fi
echo "libdemi.so exports exactly the $(echo "$actual" | wc -l) demi_* functions"
