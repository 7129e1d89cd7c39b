#!/usr/bin/python3
"""pyworker.py: a hand-written Python consumer of the usual kind, the baseline that
handler = subprocess is measured against in scripts/bench (mode handlers).

    pyworker.py -p PORT -s STREAM -g GROUP -c CONSUMER [-w MS]

The loop, as such workers are written (redis-py, one round trip per command): XREADGROUP
COUNT 10 BLOCK 1000; then per message SISMEMBER of the processed set (idempotence), the work
(the same as examples/handlers/handler.py without SENT_LOG: look at the fields, want `to`),
SADD to the processed set and XACK. The first read blocks up to -w ms (10000), for the stream
to be filled; after that the first empty read ends the run (the stream was preloaded).
Prints `handled N seconds S`.
"""
import argparse
import time

import redis


def handle(fields):
    if "to" not in fields:
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-p", type=int, required=True)
    ap.add_argument("-s", required=True)
    ap.add_argument("-g", required=True)
    ap.add_argument("-c", required=True)
    ap.add_argument("-w", type=int, default=10000)
    a = ap.parse_args()
    r = redis.Redis(host="127.0.0.1", port=a.p, decode_responses=True)
    done_key = f"{a.s}:processed"
    n, t0, block = 0, None, a.w
    while True:
        got = r.xreadgroup(a.g, a.c, {a.s: ">"}, count=10, block=block)
        if not got or not got[0][1]:
            if n:
                break
            if block == a.w:
                break          # nothing came within -w: give up
            continue
        if t0 is None:
            t0 = time.monotonic()
        block = 1000
        for msg_id, fields in got[0][1]:
            if r.sismember(done_key, msg_id):
                r.xack(a.s, a.g, msg_id)
                continue
            handle(fields)
            r.sadd(done_key, msg_id)
            r.xack(a.s, a.g, msg_id)
            n += 1
    secs = time.monotonic() - t0 if t0 else 0.0
    print(f"handled {n} seconds {secs:.6f}", flush=True)


if __name__ == "__main__":
    main()
