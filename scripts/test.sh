#!/usr/bin/env bash
# The project's test command: starts the AWS emulator the integration tests need (moto:
# S3, SQS and DynamoDB on one port), installing it if missing, then runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/moto.sh

cargo test --workspace --no-fail-fast "$@"
