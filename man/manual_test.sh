#!/usr/bin/env bash
# Every function libdemi.so exports and every struct typedef (and struct
# demi_args) in the public headers has a manual page in man/man3 whose NAME
# line names it; every page renders without a groff warning; demi(7) points
# to every section-3 page.
#
# usage: manual_test.sh LIBDEMI_SO   (from the workspace root, as bazel test runs it)
set -euo pipefail
library=$1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

functions=$(nm -D --defined-only --extern-only "$library" | awk '$3 ~ /^demi_/ {print $3}')
[[ -n $functions ]] || fail "no demi_* function exported by $library"
structs=$(sed -n 's/^} *\(demi_[a-z_]*_t\);.*/\1/p' libos/include/demi/*.h)
grep -q '^struct [A-Z_ ]*demi_args {' libos/include/demi/types.h && structs="$structs demi_args"
[[ $structs == *demi_sgarray_t* ]] || fail "found no struct typedefs in the headers: $structs"

pages=0
for name in $functions $structs; do
  page=man/man3/$name.3
  if [[ ! -f $page ]]; then
    fail "$name has no manual page ($page)"
    continue
  fi
  pages=$((pages + 1))
  # The NAME section's line: "name \- what it does".
  sed -n '/^\.SH NAME/,/^\.SH/p' "$page" | grep -q "^\\(\\.B \\)\\{0,1\\}$name\\b.*\\\\-" ||
    fail "$page: its NAME section does not name $name"
  grep -q "\\b$name\\b" man/man7/demi.7 || fail "demi(7) does not mention $name"
done

for page in man/man3/*.3 man/man7/*.7; do
  warnings=$(groff -t -man -ww -z -Tutf8 "$page" 2>&1)
  [[ -z $warnings ]] || fail "$page: groff warns: $warnings"
done

if ((failures)); then
  echo "$failures failure(s)"
  exit 1
fi
echo "manual: $pages pages for the $(echo $functions | wc -w) exported functions and" \
  "$(echo $structs | wc -w) structs, all rendered without warnings"
