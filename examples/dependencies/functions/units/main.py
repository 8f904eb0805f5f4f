"""units: answers with the text it was sent and the `six` it imported.

`six` is not on the device: it comes from the function's dependency layer (requirements.txt),
which edgefn installs with pip, packs apart from this code, and puts on PYTHONPATH.
"""

import six


def handle(event, context):
    payload = event.get("payload") or {}
    text = six.ensure_text(str(payload.get("text", "")))
    return {"six": six.__version__, "text": text.upper()}
