#!/usr/bin/env bash
# Benchmark: `bucketclone demo` (7,500 objects over 195 prefixes, local directories, the
# embedded backends), release build. Prints wall time and peak memory (max RSS) of the whole
# command, and the clone's own elapsed time from its JSON report. Appends a line to
# bench/results.tsv so numbers stay in the repository with their date and machine.
# Usage: bench/demo.sh [runs]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-3}"
cargo build --release -p bucketclone --quiet
BIN=target/release/bucketclone
MACHINE="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for i in $(seq 1 "$RUNS"); do
  OUT=$(mktemp)
  /usr/bin/time -f "%e %M" -o "$OUT.time" "$BIN" demo --json > "$OUT"
  read -r WALL RSS_KB < "$OUT.time"
  CLONE=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["elapsed_seconds"], r["copied"]["objects"], r["verified"], r["state"])' "$OUT")
  set -- $CLONE
  printf '%s\tdemo\t%s\twall_s=%s\tclone_s=%s\tpeak_rss_mib=%s\tcopied=%s\tverified=%s\tstate=%s\t%s\n' \
    "$(date -u +%F)" "$(git rev-parse --short HEAD)" "$WALL" "$1" "$((RSS_KB / 1024))" "$2" "$3" "$4" "$MACHINE" | tee -a bench/results.tsv
  rm -f "$OUT" "$OUT.time"
done
