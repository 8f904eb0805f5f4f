#!/usr/bin/env python3
"""An exec function in plain Python that speaks the edgefn invocation protocol itself
(runtime/PROTOCOL.md), without the python3 shim: the same shape works in any language.

Bind it with `runtime: exec` and `handler: ["/usr/bin/python3", "echo.py"]`. It answers every
event with {"topic": ..., "payload": ...} and publishes the payload to "echo/<topic>".
"""
import json
import os
import sys

FD = 3  # the channel: frames are a 4-byte big-endian length, then JSON


def send(msg):
    body = json.dumps(msg).encode()
    os.write(FD, len(body).to_bytes(4, "big") + body)


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = os.read(FD, n - len(data))
        if not chunk:  # the runtime closed the channel: stop
            sys.exit(0)
        data += chunk
    return data


send({"type": "hello", "protocol": 1, "runtime": "python echo example"})
while True:
    event = json.loads(read_exact(int.from_bytes(read_exact(4), "big")))
    if event["type"] != "invoke":
        continue
    print("event", event["id"], "on", event["topic"], flush=True)  # stdout: the function's log
    send({
        "type": "result",
        "id": event["id"],
        "result": {"topic": event["topic"], "payload": event["payload"]},
        "publish": [{"topic": "echo/" + event["topic"], "payload": event["payload"]}],
    })
