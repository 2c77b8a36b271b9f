#!/usr/bin/env python3
"""A civkit (and strfry) write-policy plugin: accept events only from the
public keys listed, one hex key per line, in the file named by the first
argument (default: whitelist.txt). The file is read again when it changes.

Each request is one JSON line on stdin; each answer one JSON line on stdout.
"""
import json
import os
import sys

PATH = sys.argv[1] if len(sys.argv) > 1 else "whitelist.txt"
allowed, seen = set(), None


def reload():
    global allowed, seen
    try:
        stamp = os.stat(PATH).st_mtime_ns
    except OSError:
        stamp = None
    if stamp == seen:
        return
    seen, allowed = stamp, set()
    if stamp is not None:
        with open(PATH) as f:
            allowed = {line.strip().lower() for line in f if line.strip()}
    print(f"whitelist: {len(allowed)} keys from {PATH}", file=sys.stderr, flush=True)


for line in sys.stdin:
    try:
        req = json.loads(line)
        event = req["event"]
    except (ValueError, KeyError, TypeError):
        continue  # not a request: nothing to answer
    reload()
    if event.get("pubkey", "").lower() in allowed:
        answer = {"id": event["id"], "action": "accept", "msg": ""}
    else:
        answer = {"id": event["id"], "action": "reject", "msg": "blocked: this key is not on the board's whitelist"}
    print(json.dumps(answer), flush=True)
