#!/usr/bin/env bash
# bench/profile.sh: a callgrind profile of `bucketclone clone` on the seed dataset
# (7,500 x 64 KiB over 195 prefixes) against bench-server; writes
# bench/out/callgrind.out and bench/out/callgrind.txt (callgrind_annotate, exclusive and
# inclusive). Needs the release builds bench/run makes (CARGO_TARGET_DIR,
# BENCH_SERVER_TARGET_DIR as there).
set -euo pipefail
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
env -u AWS_CA_BUNDLE AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" \
  "$target/release/bucketclone" clone s3://src s3://dst-profile --state "$state/state.sqlite" >"$out/profile-client.log" 2>&1
rm -rf "$state"
"$server_target/release/bench-ceiling" --endpoint http://127.0.0.1:$port verify src dst-profile
# `|| true`: head closes the pipe early, which pipefail would otherwise make fatal. Paths of
# the crate registry and the standard library are shortened to the crate's.
short='s#/[^ ]*/\.cargo/registry/src/[^/]*/##g; s#/rustc/[0-9a-f]*/##g'
{
  callgrind_annotate "$out/callgrind.out" | head -80 || true
  echo
  echo "== inclusive (top 150) =="
  callgrind_annotate --inclusive=yes "$out/callgrind.out" | grep -E "^ *[0-9,]+ +\(" | head -150 || true
} | sed -E "$short" >"$out/callgrind.txt"
echo "wrote $out/callgrind.txt"
