"""Builds models/digits.onnx: a classifier of 8x8 handwritten digits, and the test cases.

The images are scikit-learn's bundled digits dataset (1,797 images of 8x8 grey levels 0-16,
shipped inside the package: nothing is downloaded). A multinomial logistic regression is
trained on 80 % of them (split with a fixed seed), converted to ONNX with skl2onnx, and
checked against scikit-learn on the held-out 20 %. The same inputs give the same model bytes.

It also writes functions/classify/tests/digit-N.yaml: one held-out image of each of a few
digits, with the class the model gives it (an `edgefn test` case each).

    python3 -m venv .venv && .venv/bin/pip install -r requirements-train.txt
    .venv/bin/python train.py
"""

import base64
import json
import os

import numpy as np
import onnxruntime
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

SEED = 7
HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "models", "digits.onnx")
TESTS = os.path.join(HERE, "functions", "classify", "tests")
# Digits whose first held-out image that the model gets right with confidence >= 0.9 becomes
# a test case (an ambiguous image would make the case depend on the last bits of a float);
# the first in the shape {"pixels": [[8] x 8]}, the second as 64 numbers, the third as base64.
CASES = [0, 3, 7, 9]
SHAPES = ["rows", "flat", "base64", "rows"]

digits = load_digits()
x = digits.data.astype(np.float32)  # (1797, 64), grey levels 0..16
y = digits.target
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.2, random_state=SEED, stratify=y
)
clf = LogisticRegression(max_iter=2000, random_state=SEED)
clf.fit(x_train / 16.0, y_train)

# The ONNX graph takes the raw grey levels: the /16 scaling is folded into the weights.
clf.coef_ = clf.coef_ / 16.0
onx = to_onnx(
    clf,
    initial_types=[("pixels", FloatTensorType([None, 64]))],
    options={id(clf): {"zipmap": False}},
    target_opset={"": 17, "ai.onnx.ml": 3},
)
onx.producer_version = ""  # no tool version in the bytes
os.makedirs(os.path.dirname(MODEL), exist_ok=True)
with open(MODEL, "wb") as f:
    f.write(onx.SerializeToString())

session = onnxruntime.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
labels, probabilities = session.run(None, {"pixels": x_test})
assert (labels == clf.predict(x_test)).all(), "ONNX and scikit-learn disagree"
accuracy = float((labels == y_test).mean())
print(f"{MODEL}: {os.path.getsize(MODEL)} bytes, held-out accuracy {accuracy:.3f}")

os.makedirs(TESTS, exist_ok=True)
for digit, shape in zip(CASES, SHAPES):
    i = next(
        int(i)
        for i in np.flatnonzero(y_test == digit)
        if labels[i] == digit and probabilities[i][digit] >= 0.9
    )
    rows = x_test[i].astype(int).reshape(8, 8).tolist()
    label = int(labels[i])
    confidence = float(probabilities[i][label])
    if shape == "rows":
        payload = "{ pixels: [\n" + ",\n".join("    " + json.dumps(r) for r in rows) + "\n  ] }"
    elif shape == "flat":
        payload = "{ pixels: " + json.dumps([v for r in rows for v in r]) + " }"
    else:
        raw = bytes(v for r in rows for v in r)
        payload = '{ base64: "' + base64.b64encode(raw).decode() + '" }'
    with open(os.path.join(TESTS, f"digit-{digit}.yaml"), "w") as f:
        f.write(
            f"# A held-out {digit} from scikit-learn's digits, as {shape} (written by train.py;\n"
            f"# the model's confidence was {confidence:.3f}).\n"
            "trigger:\n"
            "  topic: images/cam-1\n"
            f"  payload: {payload}\n"
            "expect:\n"
            f"  resultContains: {{ class: {label} }}\n"
            "  publish:\n"
            "    - topic: predictions/cam-1\n"
        )
    print(f"digit {digit}: class {label}, confidence {confidence:.3f}")
