# Sourced by scripts/test.sh and scripts/chaos.sh: makes sure the AWS emulator the tests
# need (moto: S3, SQS and DynamoDB on one port) runs on BUCKETCLONE_MOTO_PORT (default 5000),
# installing and starting it if missing; one started here is stopped when the script exits.
# Exports BUCKETCLONE_TEST_ENDPOINT for the tests.

PORT="${BUCKETCLONE_MOTO_PORT:-5000}"
export BUCKETCLONE_TEST_ENDPOINT="http://127.0.0.1:${PORT}"

moto_up() { curl -fsS -o /dev/null "http://127.0.0.1:${PORT}/moto-api/" 2>/dev/null; }

if ! moto_up; then
  if ! python3 -c 'import moto.server, werkzeug' >/dev/null 2>&1; then
    echo "installing moto[server] (the AWS emulator)..." >&2
    python3 -m pip install --quiet 'moto[server]>=5,<6'
  fi
  LOG="${TMPDIR:-/tmp}/bucketclone-moto-${PORT}.log"
  echo "starting moto_server on 127.0.0.1:${PORT} (log: ${LOG})" >&2
  # Our wrapper serialises DynamoDB calls: moto's DynamoDB is not safe under concurrency.
  nohup python3 scripts/moto_server.py -H 127.0.0.1 -p "${PORT}" >"${LOG}" 2>&1 &
  MOTO_PID=$!
  trap 'kill ${MOTO_PID} 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do moto_up && break; sleep 0.2; done
  moto_up || { echo "moto_server did not start; see ${LOG}" >&2; exit 1; }
fi
