#!/usr/bin/env bash
# Keeps files readable in one sitting: no source file under crates/*/src
# over 500 lines, not counting a trailing `#[cfg(test)] mod …` block.
# (Functions over 80 lines are clippy's `too_many_lines`, see clippy.toml.)
set -euo pipefail
cd "$(dirname "$0")/.."
limit=500
status=0
while IFS= read -r file; do
  lines=$(awk '
    /^#\[cfg\(test\)\]$/ { held = 1; next }
    held && /^mod / { exit }
    { if (held) { n++ }; held = 0; n++ }
    END { print n + 0 }' "$file")
  if (( lines > limit )); then
    echo "$file: $lines lines outside tests (the limit is $limit): split it by concept" >&2
    status=1
  fi
done < <(find crates/*/src -name '*.rs' | sort)
exit $status
