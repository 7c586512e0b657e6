#!/usr/bin/env python3
"""moto_server, with DynamoDB requests served one at a time.

moto's DynamoDB backend is not safe under concurrent requests: two simultaneous updates of
one item can lose an increment, and a cancelled transaction restores a snapshot of the
table, undoing other clients' writes made meanwhile. Real DynamoDB has neither problem, and
bucketclone's exactly-once accounting depends on conditional writes being atomic, so the
testbed serialises DynamoDB calls (S3 and SQS, including SQS long polls, stay concurrent).

It also snapshots each table once per transaction rather than once per action: moto's
TransactWriteItems deep-copies the whole table (for its rollback) for every action, so a
completion of five actions copied every segment of the job five times, and moto's CPU, not
bucketclone's, bounded the service benchmark. The copies are of the same unchanged table,
so one per table gives the same rollback.

It logs no request unless asked (--log-requests): werkzeug's line per request was a sixth
of the server's CPU under the service benchmark.

Usage: moto_server.py [-H HOST] [-p PORT] [--log-requests]
"""
import argparse
import copy
import logging
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

parser = argparse.ArgumentParser()
parser.add_argument("-H", "--host", default="127.0.0.1")
parser.add_argument("-p", "--port", type=int, default=5000)
parser.add_argument("--log-requests", action="store_true", help="log a line per request (werkzeug's, and the JSON target)")
args = parser.parse_args()
if not args.log_requests:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


class SnapshotOncePerTable:
    """Stands in for the `copy` module in moto's DynamoDB models: inside a transaction,
    a table already copied is not copied again (calls are serialised, see below)."""

    def __init__(self, table_type):
        self.table_type = table_type
        self.copies = None

    def __getattr__(self, name):
        return getattr(copy, name)

    def deepcopy(self, x, memo=None):
        if self.copies is None or not isinstance(x, self.table_type):
            return copy.deepcopy(x, memo)
        if id(x) not in self.copies:
            self.copies[id(x)] = (x, copy.deepcopy(x, memo))
        return self.copies[id(x)][1]


def snapshot_once_per_table():
    try:
        import moto.dynamodb.models as models
        from moto.dynamodb.models.table import Table

        backend = models.DynamoDBBackend
        original = backend.transact_write_items
        assert models.copy is copy
    except (ImportError, AttributeError, AssertionError) as e:
        print(f"moto_server.py: moto changed ({e!r}); transactions copy tables per action", file=sys.stderr)
        return
    snapshots = SnapshotOncePerTable(Table)
    models.copy = snapshots

    def transact_write_items(self, transact_items):
        snapshots.copies = {}
        try:
            return original(self, transact_items)
        finally:
            snapshots.copies = None

    backend.transact_write_items = transact_write_items


snapshot_once_per_table()
app = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def serialised(environ, start_response):
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if args.log_requests and target:
        print(f"target {target}", file=sys.stderr, flush=True)
    if target.startswith("DynamoDB"):
        with dynamodb:
            return list(app(environ, start_response))
    return app(environ, start_response)


run_simple(args.host, args.port, serialised, threaded=True)
