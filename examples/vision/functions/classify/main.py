"""classify: recognises a handwritten digit in an 8x8 grey image with an ONNX model.

Triggered by `images/<camera>` messages. The payload is one image, 8x8 grey levels 0-16 (the
format of scikit-learn's digits; 0 is background, 16 full ink), in one of three shapes:

    {"pixels": [[r0c0, ..., r0c7], ..., [r7c0, ..., r7c7]]}   8 rows of 8 numbers
    {"pixels": [p0, ..., p63]}                                 64 numbers, row by row
    {"base64": "..."}                                          64 bytes, row by row

The answer, {"class": N, "confidence": 0.97} (the digit and the model's probability for it,
rounded to 3 decimals), is returned and published on `predictions/<camera>`, which a route
sends to the cloud. A payload of another shape is a handler error (ValueError) that says which
shape was expected; the instance stays warm.

The model (models/digits.onnx, declared in edgefn.yaml's `models:`) is found at
$EDGEFN_MODEL_DIGITS and loaded once, when the instance imports this module (the agent starts
one instance when the release starts, so even the first image finds it loaded): a warm instance
answers every later image without loading it again. The load time is logged. onnxruntime and numpy come from this
function's dependency layer (requirements.txt).
"""

import time

_started = time.perf_counter()

import base64  # noqa: E402
import binascii  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

IMPORT_MS = (time.perf_counter() - _started) * 1000

SIDE = 8
SIZE = SIDE * SIDE
MAX_LEVEL = 16
EXPECTED = (
    'an 8x8 image of grey levels 0-16: {"pixels": [[8 numbers] x 8 rows]}, '
    '{"pixels": [64 numbers]}, or {"base64": "<64 bytes>"}'
)

_started = time.perf_counter()
_options = onnxruntime.SessionOptions()
# One instance serves one image at a time; more threads only contend on a small device.
_options.intra_op_num_threads = 1
_options.inter_op_num_threads = 1
SESSION = onnxruntime.InferenceSession(
    os.environ["EDGEFN_MODEL_DIGITS"], _options, providers=["CPUExecutionProvider"]
)
INPUT = SESSION.get_inputs()[0].name
LOAD_MS = (time.perf_counter() - _started) * 1000
print(
    f"classify: model loaded in {LOAD_MS:.1f} ms (numpy and onnxruntime imported in "
    f"{IMPORT_MS:.1f} ms)",
    file=sys.stderr,
    flush=True,
)


def pixels(payload):
    """The image as a (1, 64) float32 array; ValueError naming the expected shape otherwise."""
    if not isinstance(payload, dict):
        raise ValueError(f"expected {EXPECTED}; got {type(payload).__name__}")
    if "base64" in payload:
        text = payload["base64"]
        if not isinstance(text, str) or len(text) > 4 * SIZE:
            raise ValueError(f"expected {EXPECTED}; base64 is not a string of 64 bytes")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"expected {EXPECTED}; base64 is not valid base64") from None
        if len(raw) != SIZE:
            raise ValueError(f"expected {EXPECTED}; base64 holds {len(raw)} bytes")
        values = list(raw)
    elif "pixels" in payload:
        rows = payload["pixels"]
        if not isinstance(rows, list):
            raise ValueError(f"expected {EXPECTED}; pixels is not a list")
        if len(rows) == SIDE and all(isinstance(r, list) for r in rows):
            bad = [i for i, r in enumerate(rows) if len(r) != SIDE]
            if bad:
                raise ValueError(
                    f"expected {EXPECTED}; row {bad[0]} has {len(rows[bad[0]])} numbers"
                )
            values = [v for r in rows for v in r]
        elif any(isinstance(r, list) for r in rows):
            raise ValueError(f"expected {EXPECTED}; pixels has {len(rows)} rows")
        elif len(rows) == SIZE:
            values = rows
        else:
            raise ValueError(f"expected {EXPECTED}; pixels has {len(rows)} numbers")
    else:
        raise ValueError(f"expected {EXPECTED}; got the keys {sorted(payload)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_LEVEL:
            raise ValueError(
                f"expected {EXPECTED}; pixel {i} (row {i // SIDE}, column {i % SIDE}) is {v!r}"
            )
    return np.asarray(values, dtype=np.float32).reshape(1, SIZE)


def classify(image):
    """(class, confidence) of a (1, 64) image."""
    labels, probabilities = SESSION.run(None, {INPUT: image})
    label = int(labels[0])
    return label, float(probabilities[0][label])


def handle(event, context):
    label, confidence = classify(pixels(event.get("payload")))
    answer = {"class": label, "confidence": round(confidence, 3)}
    camera = event["topic"].split("/", 1)[1] if "/" in event["topic"] else "default"
    context.publish("predictions/" + camera, answer)
    return answer
