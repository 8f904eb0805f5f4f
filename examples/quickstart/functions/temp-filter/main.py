"""temp-filter: flags temperature readings above THRESHOLD (degrees Celsius).

Triggered by `sensors/<line>/temperature` messages with a payload like {"celsius": 45.2}.
"""

import os

THRESHOLD = float(os.environ.get("THRESHOLD", "40"))


def handle(event, context):
    celsius = float(event["payload"]["celsius"])
    line = event["topic"].split("/")[1]
    return {"line": line, "celsius": celsius, "alert": celsius > THRESHOLD}
