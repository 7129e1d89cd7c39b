#!/usr/bin/python3
"""ceiling_subprocess.py: the ceiling of handler = subprocess in scripts/bench (mode
handlers): the same handler program reading the same JSON lines from a file, no Redis and no
worker in between.

    ceiling_subprocess.py FILE COMMAND...

Runs COMMAND with FILE as its stdin (one message a line, in the format the worker writes:
{"id","stream","attempt","fields"}), reads its answers from its stdout and counts them.
Prints `handled N acked A seconds S` (S: from starting the process to its last answer; the
interpreter's start, some tens of ms, is included). Exits 1 when an answer is missing.
"""
import json
import subprocess
import sys
import time


def main():
    path, cmd = sys.argv[1], sys.argv[2:]
    with open(path, "rb") as f:
        expect = sum(1 for _ in f)
    with open(path, "rb") as f:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=f, stdout=subprocess.PIPE)
        n = acked = 0
        for line in p.stdout:
            n += 1
            if json.loads(line).get("result") == "ack":
                acked += 1
        secs = time.monotonic() - t0
        p.wait()
    print(f"handled {n} acked {acked} seconds {secs:.6f}", flush=True)
    return 0 if n == expect else 1


if __name__ == "__main__":
    sys.exit(main())
