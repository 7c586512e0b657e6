# Sourced by scripts/test.sh and scripts/chaos.sh: makes sure the AWS emulator the tests
# need (moto: S3, SQS and DynamoDB on one port) runs on BUCKETCLONE_MOTO_PORT (default 5000),
# installing and starting it if missing; one started here is stopped when the script exits.
# Exports BUCKETCLONE_TEST_ENDPOINT for the tests, and BUCKETCLONE_PYTHON: a Python that
# has moto (the tests start second emulators with it). moto is installed, when missing, into
# a virtual environment under target/, never into the system Python (PEP 668 systems refuse
# that, and it is not ours to change).

PORT="${BUCKETCLONE_MOTO_PORT:-5000}"
export BUCKETCLONE_TEST_ENDPOINT="http://127.0.0.1:${PORT}"

moto_up() { curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/moto-api/" 2>/dev/null; }

has_moto() { "$1" -c 'import moto.server, werkzeug' >/dev/null 2>&1; }
BUCKETCLONE_PYTHON="${BUCKETCLONE_PYTHON:-python3}"
if ! has_moto "${BUCKETCLONE_PYTHON}"; then
  VENV="$(pwd)/target/moto-venv"
  if ! has_moto "${VENV}/bin/python"; then
    echo "installing moto[server] (the AWS emulator) into ${VENV}..." >&2
    if ! python3 -m venv "${VENV}" >/dev/null 2>&1; then
      # Debian and Ubuntu ship venv separately.
      command -v apt-get >/dev/null && { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf "${VENV}" && python3 -m venv "${VENV}"
    fi
    "${VENV}/bin/python" -m pip install --quiet 'moto[server]>=5,<6'
  fi
  BUCKETCLONE_PYTHON="${VENV}/bin/python"
fi
export BUCKETCLONE_PYTHON

if ! moto_up; then
  LOG="${TMPDIR:-/tmp}/bucketclone-moto-${PORT}.log"
  echo "starting moto_server on 127.0.0.1:${PORT} (log: ${LOG})" >&2
  # Our wrapper serialises DynamoDB calls: moto's DynamoDB is not safe under concurrency.
  nohup "${BUCKETCLONE_PYTHON}" scripts/moto_server.py -H 127.0.0.1 -p "${PORT}" >"${LOG}" 2>&1 &
  MOTO_PID=$!
  trap 'kill ${MOTO_PID} 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do moto_up && break; sleep 0.2; done
  moto_up || { echo "moto_server did not start; see ${LOG}" >&2; exit 1; }
fi
