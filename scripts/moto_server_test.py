#!/usr/bin/env python3
"""Checks the emulator's DynamoDB transactions, on which bucketclone's tests rely.

A cancelled TransactWriteItems must change nothing (an update, a put and a delete before a
failing condition are all undone) and an accepted one must apply every action, on tables
with and without a sort key. scripts/moto_server.py replaces moto's whole-table rollback
with an undo log of the items a transaction names; this is its test. Run by
scripts/test.sh against BUCKETCLONE_TEST_ENDPOINT.
"""
import os
import sys
import uuid

import boto3
import botocore

endpoint = os.environ.get("BUCKETCLONE_TEST_ENDPOINT", "http://127.0.0.1:5000")
db = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")


def check(sort_key):
    name = f"txcheck-{uuid.uuid4().hex[:8]}"
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if sort_key:
        schema.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    db.create_table(TableName=name, KeySchema=schema, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST")

    def key(k):
        return {"pk": {"S": k}, **({"sk": {"S": "s"}} if sort_key else {})}

    def contents():
        return {i["pk"]["S"]: i["n"]["N"] for i in db.scan(TableName=name)["Items"]}

    try:
        for k in "ab":
            db.put_item(TableName=name, Item={**key(k), "n": {"N": "1"}})
        writes = [
            {"Update": {"TableName": name, "Key": key("a"), "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": name, "Item": {**key("c"), "n": {"N": "9"}}}},
            {"Delete": {"TableName": name, "Key": key("b")}},
        ]
        failing = {"ConditionCheck": {"TableName": name, "Key": key("z"),
                                      "ConditionExpression": "attribute_exists(pk)"}}
        try:
            db.transact_write_items(TransactItems=writes + [failing])
            sys.exit(f"{name}: a transaction with a failing condition was accepted")
        except botocore.exceptions.ClientError as e:
            code = e.response["Error"]["Code"]
            assert code == "TransactionCanceledException", code
        got = contents()
        assert got == {"a": "1", "b": "1"}, f"cancelled transaction left {got} (sort key: {sort_key})"
        db.transact_write_items(TransactItems=writes)
        got = contents()
        assert got == {"a": "2", "c": "9"}, f"accepted transaction left {got} (sort key: {sort_key})"
    finally:
        db.delete_table(TableName=name)


for sort_key in (False, True):
    check(sort_key)
print(f"moto_server_test: DynamoDB transactions on {endpoint} cancel and apply whole")
