#!/usr/bin/env python3
"""A streamfleet handler in Python (handler = subprocess): one long-lived process.

Each message comes as one JSON line on stdin: {"id", "stream", "attempt", "fields"}; answer
each with one JSON line on stdout, in any order: {"id", "result": "ack" | "retry" | "dead",
"reason", "error", "retry_after"}. A value that is not UTF-8 comes as {"$base64": "..."}.
Standard library only. Config: handler = subprocess, command = python3 /srv/handler.py
"""
import base64
import json
import os
import sys

SENT_LOG = os.environ.get("SENT_LOG")  # given with env = SENT_LOG=/path


def value(v):
    return base64.b64decode(v["$base64"]) if isinstance(v, dict) else v


def handle(fields):
    if "to" not in fields:
        return {"result": "dead", "reason": "no_recipient", "error": "no 'to' field"}
    if SENT_LOG:  # the work: here, note the recipient (a real handler sends the email)
        with open(SENT_LOG, "a") as f:
            f.write(fields["to"] + "\n")
    return {"result": "ack"}


for line in sys.stdin:
    msg = json.loads(line)
    try:
        answer = handle({k: value(v) for k, v in msg["fields"].items()})
    except Exception as e:  # a bug or an outage: try again in a minute
        answer = {"result": "retry", "error": repr(e)[:200], "retry_after": 60}
    answer["id"] = msg["id"]
    print(json.dumps(answer), flush=True)
