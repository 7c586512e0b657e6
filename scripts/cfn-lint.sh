#!/usr/bin/env bash
# Lints the CloudFormation template with cfn-lint, installing it when missing into a virtual
# environment under target/ (as scripts/moto.sh does for moto), never into the system Python.
# Any finding (error or warning) fails.
set -euo pipefail
cd "$(dirname "$0")/.."
TEMPLATE="deploy/bucketclone.cfn.json"

CFN_LINT="$(command -v cfn-lint || true)"
if [ -z "${CFN_LINT}" ]; then
  VENV="$(pwd)/target/cfn-lint-venv"
  CFN_LINT="${VENV}/bin/cfn-lint"
  if ! "${CFN_LINT}" --version >/dev/null 2>&1; then
    echo "installing cfn-lint into ${VENV}..." >&2
    if ! python3 -m venv "${VENV}" >/dev/null 2>&1; then
      # Debian and Ubuntu ship venv separately.
      command -v apt-get >/dev/null && { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf "${VENV}" && python3 -m venv "${VENV}"
    fi
    "${VENV}/bin/python" -m pip install --quiet 'cfn-lint>=1,<2'
  fi
fi
"${CFN_LINT}" --version >&2
"${CFN_LINT}" "${TEMPLATE}"
echo "cfn-lint: ${TEMPLATE} ok" >&2
