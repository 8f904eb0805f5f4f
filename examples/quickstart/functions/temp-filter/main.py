"""temp-filter: flags temperature readings above THRESHOLD (degrees Celsius).

Triggered by `sensors/<line>/temperature` messages with a payload like {"celsius": 45.2}.
A reading above the threshold is published on `alerts/<line>`, which a route sends to the cloud.
"""

import os

THRESHOLD = float(os.environ.get("THRESHOLD", "40"))


def handle(event, context):
    celsius = float(event["payload"]["celsius"])
    line = event["topic"].split("/")[1]
    alert = celsius > THRESHOLD
    if alert:
        context.publish("alerts/" + line, {"line": line, "celsius": celsius, "device": context.device})
    return {"line": line, "celsius": celsius, "alert": alert}
