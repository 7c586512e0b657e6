#!/usr/bin/env bash
# The project's test command: starts the AWS emulator the integration tests need (moto:
# S3, SQS and DynamoDB on one port), installing it (and openssl) if missing, then runs every
# test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/moto.sh
# openssl makes the certificates of the private-CA test (tests/tests/ca_bundle.rs).
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }

# The emulator's transactions first: the job-store tests rely on them (see the script).
"${BUCKETCLONE_PYTHON}" scripts/moto_server_test.py

cargo test --workspace --no-fail-fast "$@"
