# edgefn python3 shim: loads `module.func` from the bundle and serves the invocation protocol
# (runtime/PROTOCOL.md) on fd 3. Run as: python3 -B -c <this file> <module.func> <triggered|continuous>
import base64
import importlib
import json
import os
import signal
import sys
import time
import traceback

FD = 3
PROTOCOL = 1
MAX_FRAME = 16 << 20
EXIT_OUT_OF_MEMORY = 251
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads
_read = os.read
_write = os.write


def _send(msg):
    data = _dumps(msg).encode()
    if len(data) > MAX_FRAME:
        raise ValueError("frame of %d bytes exceeds the limit of %d bytes" % (len(data), MAX_FRAME))
    out = memoryview(len(data).to_bytes(4, "big") + data)
    while out:
        n = _write(FD, out)
        out = out[n:]


def _payload(value):
    """A payload for the wire: (value, encoding)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii"), "base64"
    return value, None


def _wire_message(topic, payload):
    value, enc = _payload(payload)
    m = {"topic": str(topic), "payload": value}
    if enc:
        m["encoding"] = enc
    return m


class Context:
    """What a handler knows about its call: names, deadline, and `publish`."""

    __slots__ = ("function", "binding", "device", "revision", "deadline_ms", "_published", "_stream")

    def __init__(self, stream):
        self.function = os.environ.get("EDGEFN_FUNCTION", "")
        self.binding = os.environ.get("EDGEFN_BINDING", "")
        self.device = os.environ.get("EDGEFN_DEVICE", "")
        self.revision = int(os.environ.get("EDGEFN_REVISION", "0") or 0)
        self.deadline_ms = None
        self._published = []
        self._stream = stream

    def publish(self, topic, payload=None):
        """Publish `payload` (JSON-serializable value, or bytes) to `topic`."""
        m = _wire_message(topic, payload)
        if self._stream:
            m["type"] = "publish"
            _send(m)
        else:
            self._published.append(m)

    def remaining_ms(self):
        """Milliseconds left before the runtime gives up on this event (None if no deadline)."""
        if self.deadline_ms is None:
            return None
        return max(0, self.deadline_ms - int(time.time() * 1000))


def _error(exc):
    tb = traceback.format_exc()
    sys.stderr.write(tb)
    sys.stderr.flush()
    return {"type": type(exc).__name__, "message": str(exc), "traceback": tb}


def _load(spec):
    module, _, func = spec.rpartition(".")
    if not module or not func:
        raise ValueError("handler %r must be module.func" % spec)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    fn = getattr(importlib.import_module(module), func, None)
    if fn is None:
        raise AttributeError("module %r has no function %r" % (module, func))
    if not callable(fn):
        raise TypeError("%s is not callable" % spec)
    return fn


def _serve(handler, ctx):
    buf = b""
    while True:
        while len(buf) < 4:
            chunk = _read(FD, 65536)
            if not chunk:
                return
            buf += chunk
        n = int.from_bytes(buf[:4], "big")
        if n > MAX_FRAME:
            raise ValueError("frame of %d bytes exceeds the limit" % n)
        while len(buf) < 4 + n:
            chunk = _read(FD, max(65536, 4 + n - len(buf)))
            if not chunk:
                return
            buf += chunk
        msg = _loads(buf[4 : 4 + n])
        buf = buf[4 + n :]
        if msg.get("type") != "invoke":
            continue
        payload = msg.get("payload")
        if msg.get("encoding") == "base64":
            payload = base64.b64decode(payload)
        event = {"topic": msg["topic"], "payload": payload, "id": msg["id"]}
        ctx.deadline_ms = msg.get("deadline_ms")
        ctx._published = published = []
        reply = {"type": "result", "id": msg["id"]}
        try:
            result = handler(event, ctx)
            value, enc = _payload(result)
            reply["result"] = value
            if enc:
                reply["encoding"] = enc
            if published:
                reply["publish"] = published
            try:
                _send(reply)
            except (TypeError, ValueError) as exc:
                reply = {"type": "result", "id": msg["id"], "error": _error(exc)}
                _send(reply)
        except MemoryError:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_OUT_OF_MEMORY)
        except Exception as exc:  # the handler's failure becomes a structured error
            reply["error"] = _error(exc)
            if published:
                reply["publish"] = published
            _send(reply)


def _on_term(signum, frame):
    # In a container the instance is pid 1, which the kernel shields from signals it does not
    # handle: exit on SIGTERM explicitly (running `finally` blocks on the way out).
    sys.exit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _on_term)
    spec = sys.argv[1]
    mode = sys.argv[2] if len(sys.argv) > 2 else "triggered"
    try:
        handler = _load(spec)
    except MemoryError:
        traceback.print_exc()
        os._exit(EXIT_OUT_OF_MEMORY)
    except BaseException as exc:
        _send({"type": "init_error", "protocol": PROTOCOL, "error": _error(exc)})
        sys.exit(1)
    _send({"type": "hello", "protocol": PROTOCOL, "runtime": "python3 " + sys.version.split()[0]})
    if mode == "continuous":
        try:
            handler(Context(stream=True))
        except MemoryError:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_OUT_OF_MEMORY)
        return
    _serve(handler, Context(stream=False))


main()
