#!/usr/bin/env bash
# bench/profile.sh [callgrind|perf]: a profile of `bucketclone clone` on the seed dataset
# (7,500 x 64 KiB over 195 prefixes) against bench-server.
# - callgrind (the default): instructions, repeatable whatever else the machine does;
#   writes bench/out/callgrind.out and bench/out/callgrind.txt (exclusive and inclusive).
#   valgrind's CPU has no SHA extensions, so SHA-256 (SigV4) runs in software there and
#   looks many times dearer than on the real CPU.
# - perf: time samples on the real CPU (`perf record -e cpu-clock`, DWARF call graphs);
#   writes bench/out/perf.data and bench/out/perf.txt (self and inclusive shares).
# Needs the release builds bench/run makes (CARGO_TARGET_DIR, BENCH_SERVER_TARGET_DIR as
# there; BIN overrides the client binary).
set -euo pipefail
tool=${1:-callgrind}
case $tool in callgrind|perf) ;; *) echo "usage: bench/profile.sh [callgrind|perf]" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
server_target=${BENCH_SERVER_TARGET_DIR:-$root/target/bench-server}
port=${PORT:-9190}
out=$root/bench/out
mkdir -p "$out"
"$server_target/release/bench-server" --addr 127.0.0.1:$port --seed src:7500:65536:195 2>"$out/profile-server.log" &
server=$!
trap 'kill $server' EXIT
sleep 1
"$server_target/release/bench-ceiling" --endpoint http://127.0.0.1:$port mb dst-profile
state=$(mktemp -d)
bin=${BIN:-$target/release/bucketclone}
case $tool in
  callgrind) profiler=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out") ;;
  perf) profiler=(perf record -q -F 2000 -e cpu-clock --call-graph dwarf,16384 -o "$out/perf.data") ;;
esac
env -u AWS_CA_BUNDLE AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  "${profiler[@]}" "$bin" clone s3://src s3://dst-profile --state "$state/state.sqlite" >"$out/profile-client.log" 2>&1
rm -rf "$state"
"$server_target/release/bench-ceiling" --endpoint http://127.0.0.1:$port verify src dst-profile
# `|| true`: head closes the pipe early, which pipefail would otherwise make fatal. Paths of
# the crate registry and the standard library are shortened to the crate's.
short='s#/[^ ]*/\.cargo/registry/src/[^/]*/##g; s#/rustc/[0-9a-f]*/##g'
if [ "$tool" = perf ]; then
  {
    echo "== self (top 60) =="
    perf report -i "$out/perf.data" --no-children --sort dso,symbol -g none --stdio 2>/dev/null | grep "%" | head -60 || true
    echo
    echo "== inclusive (top 200) =="
    perf report -i "$out/perf.data" --children --sort symbol -g none --stdio 2>/dev/null | grep "%" | head -200 || true
  } | sed -E "$short; s/ +$//" | cut -c1-220 >"$out/perf.txt"
  echo "wrote $out/perf.txt"
  exit 0
fi
{
  callgrind_annotate "$out/callgrind.out" | head -80 || true
  echo
  echo "== inclusive (top 150) =="
  callgrind_annotate --inclusive=yes "$out/callgrind.out" | grep -E "^ *[0-9,]+ +\(" | head -150 || true
} | sed -E "$short" >"$out/callgrind.txt"
echo "wrote $out/callgrind.txt"
