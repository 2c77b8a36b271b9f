#!/usr/bin/env python3
"""A plugin that misbehaves on request, by the event's content:
- "crash": exits without answering;
- "hang": never answers (sleeps);
- "garbage": writes a line that is not JSON, then answers accept;
- "shadow": answers shadowReject;
- "source": rejects with its sourceType and sourceInfo as the message;
- anything else: accept.
With a file named by the first argument, it writes "start" there when it
starts, and "req <sourceType> <sourceInfo>" for each request.
"""
import json
import os
import sys
import time

LOG = sys.argv[1] if len(sys.argv) > 1 else None


def log(text):
    if LOG:
        with open(LOG, "a") as f:
            f.write(text + "\n")


log("start")
for line in sys.stdin:
    req = json.loads(line)
    log(f"req {req['sourceType']} {req['sourceInfo']}")
    event = req["event"]
    content = event["content"]
    answer = {"id": event["id"], "action": "accept", "msg": ""}
    if content == "crash":
        os._exit(3)
    elif content == "hang":
        time.sleep(3600)
    elif content == "garbage":
        print("this is not JSON", flush=True)
    elif content == "shadow":
        answer["action"] = "shadowReject"
    elif content == "source":
        answer["action"] = "reject"
        answer["msg"] = f"blocked: {req['sourceType']} {req['sourceInfo']} {req['type']} {req['receivedAt']}"
    print(json.dumps(answer), flush=True)
