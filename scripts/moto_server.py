#!/usr/bin/env python3
"""moto_server, with DynamoDB requests served one at a time.

moto's DynamoDB backend is not safe under concurrent requests: two simultaneous updates of
one item can lose an increment, and a cancelled transaction restores a snapshot of the
table, undoing other clients' writes made meanwhile. Real DynamoDB has neither problem, and
bucketclone's exactly-once accounting depends on conditional writes being atomic, so the
testbed serialises DynamoDB calls (S3 and SQS, including SQS long polls, stay concurrent).

Usage: moto_server.py [-H HOST] [-p PORT]
"""
import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

parser = argparse.ArgumentParser()
parser.add_argument("-H", "--host", default="127.0.0.1")
parser.add_argument("-p", "--port", type=int, default=5000)
args = parser.parse_args()

app = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def serialised(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
        with dynamodb:
            return list(app(environ, start_response))
    return app(environ, start_response)


run_simple(args.host, args.port, serialised, threaded=True)
