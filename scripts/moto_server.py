#!/usr/bin/env python3
"""moto_server, with DynamoDB requests served one at a time.

moto's DynamoDB backend is not safe under concurrent requests: two simultaneous updates of
one item can lose an increment, and a cancelled transaction restores a snapshot of the
table, undoing other clients' writes made meanwhile. Real DynamoDB has neither problem, and
bucketclone's exactly-once accounting depends on conditional writes being atomic, so the
testbed serialises DynamoDB calls (S3 and SQS, including SQS long polls, stay concurrent).

It also makes a transaction's rollback cost what the transaction touches: moto's
TransactWriteItems deep-copies every table it names (once per action) so that a cancelled
transaction can restore it, and a job's table holds all of its segments, so every
completion copied the whole job (and moto's CPU, not bucketclone's, bounded the service
benchmark, O(segments) per completion). Here the items the transaction names are copied
instead, and put back if it is cancelled or fails; tables are not copied. Calls are
serialised (below), so nothing else writes between the copy and the restore. The
DynamoDB conformance suite's refused and racing completions run against this.

It logs no request unless asked (--log-requests): werkzeug's line per request was a sixth
of the server's CPU under the service benchmark.

Usage: moto_server.py [-H HOST] [-p PORT] [--log-requests] [--tls-cert PEM --tls-key PEM]
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
parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; with --tls-key)")
parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
args = parser.parse_args()
if not args.log_requests:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


class TablesNotCopied:
    """Stands in for the `copy` module in moto's DynamoDB models: while a transaction runs,
    a table is "copied" as itself (its rollback is the undo log in transact_write_items)."""

    def __init__(self, table_type):
        self.table_type = table_type
        self.active = False

    def __getattr__(self, name):
        return getattr(copy, name)

    def deepcopy(self, x, memo=None):
        if self.active and isinstance(x, self.table_type):
            return x
        return copy.deepcopy(x, memo)


def undo_log(backend, transact_items):
    """(table, hash key, range key, item before) for each item a transaction names."""
    undo = []
    for entry in transact_items if isinstance(transact_items, list) else []:
        op = next(iter(entry.values()), None) if isinstance(entry, dict) else None
        if not isinstance(op, dict):
            continue
        table = backend.tables.get(op.get("TableName"))
        key = op.get("Key", op.get("Item"))
        if table is None or not isinstance(key, dict):
            continue
        try:
            hash_key, range_key = backend.get_keys_value(table, key)
            before = table.get_item(hash_key, range_key)
        except Exception:  # moto refuses this action itself, before writing anything
            continue
        undo.append((table, hash_key, range_key, copy.deepcopy(before)))
    return undo


def restore(undo):
    for table, hash_key, range_key, before in reversed(undo):
        if range_key is None:
            if before is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = before
        elif before is None:
            if hash_key in table.items:
                table.items[hash_key].pop(range_key, None)
        else:
            table.items[hash_key][range_key] = before


def rollback_by_item():
    try:
        import moto.dynamodb.models as models
        from moto.dynamodb.models.table import Table

        backend = models.DynamoDBBackend
        original = backend.transact_write_items
        assert models.copy is copy
        assert callable(backend.get_keys_value)
    except (ImportError, AttributeError, AssertionError) as e:
        print(f"moto_server.py: moto changed ({e!r}); transactions copy whole tables", file=sys.stderr)
        return
    tables = TablesNotCopied(Table)
    models.copy = tables

    def transact_write_items(self, transact_items):
        undo = undo_log(self, transact_items)
        tables.active = True
        try:
            return original(self, transact_items)
        except BaseException:
            restore(undo)
            raise
        finally:
            tables.active = False

    backend.transact_write_items = transact_write_items


rollback_by_item()
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


tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
run_simple(args.host, args.port, serialised, threaded=True, ssl_context=tls)
