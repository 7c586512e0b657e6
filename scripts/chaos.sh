#!/usr/bin/env bash
# The chaos runs, one command: starts the AWS emulator (moto) if it is not running, then runs
# the ignored tests of tests/tests/chaos.rs one after the other:
#   - the service on moto, 3 worker processes, a random worker SIGKILLed every 2-5 s (2,000 objects);
#   - `bucketclone clone` of 20,000 local files, SIGKILLed after 0.3-2.5 s and rerun until it finishes.
# Each prints a line `chaos ...: kills, objects, seconds, counters exact`.
# Usage: scripts/chaos.sh [service|local] [extra cargo test args]; CHAOS_SEED=<n> replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/moto.sh

FILTER=chaos_
case "${1:-}" in
  service) FILTER=chaos_service; shift ;;
  local) FILTER=chaos_local; shift ;;
esac
cargo test -p bucketclone-tests --test chaos "$@" -- --ignored --nocapture --test-threads 1 "${FILTER}"
