# edgefn python3 shim: loads `module.func` from the bundle and serves the invocation protocol
# (runtime/PROTOCOL.md) on fd 3. Run as: python3 -B -c <this file> <module.func> <triggered|continuous>
import base64
import codecs
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
MAX_TEXT = 64 << 10  # longest error type, message or traceback sent
EXIT_OUT_OF_MEMORY = 251
# NaN and infinities are not JSON: refusing them makes the handler's value an error, not a frame
# the runtime cannot read.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_loads = json.loads
_read = os.read
_write = os.write


def _utf8(text):
    """`text` as UTF-8, with what cannot be encoded (lone surrogates, e.g. from bytes decoded
    with `surrogateescape`) replaced by U+FFFD; surrogate pairs become the character they make."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed.encode("utf-8", "replace")


def _send(msg):
    data = _utf8(_dumps(msg))
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


def _text(value, fallback):
    """`str(value)`, or `fallback` when that fails."""
    try:
        return str(value)
    except BaseException:  # a hostile __str__ must not take the instance down
        return fallback


def _error(exc):
    """The wire form of exception `exc` (its traceback also goes to stderr); never raises."""
    name = _text(getattr(type(exc), "__name__", None), "Exception")
    try:
        tb = traceback.format_exc()
    except BaseException:
        tb = None
    try:
        sys.stderr.write(tb or ("%s: %s\n" % (name, _text(exc, ""))))
        sys.stderr.flush()
    except BaseException:
        pass
    # Bounded, so that the error always fits in a frame.
    cut = lambda s: s if s is None or len(s) <= MAX_TEXT else s[:MAX_TEXT] + "\u2026"
    return {"type": cut(name), "message": cut(_text(exc, "<unprintable %s>" % name)), "traceback": cut(tb)}


def _reply(reply):
    """Sends a result; when the handler's values cannot be sent (not JSON-serializable, NaN,
    too deep, too large), sends the reason as the handler's error instead."""
    try:
        _send(reply)
    except MemoryError:
        raise
    except Exception as exc:
        _send({"type": "result", "id": reply["id"], "error": _error(exc)})


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
        except MemoryError:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_OUT_OF_MEMORY)
        except Exception as exc:  # the handler's failure becomes a structured error
            reply["error"] = _error(exc)
        if published:
            reply["publish"] = published
        try:
            _reply(reply)
        except MemoryError:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(EXIT_OUT_OF_MEMORY)


_surrogateescape = codecs.lookup_error("surrogateescape")
_backslashreplace = codecs.lookup_error("backslashreplace")


def _log_errors(err):
    try:
        return _surrogateescape(err)
    except UnicodeError:
        return _backslashreplace(err)


def _on_term(signum, frame):
    # In a container the instance is pid 1, which the kernel shields from signals it does not
    # handle: exit on SIGTERM explicitly (running `finally` blocks on the way out).
    sys.exit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, _on_term)
    # What a handler prints never fails for its text: bytes decoded with `surrogateescape` are
    # written back as they were, other unencodable characters are escaped (`\ud83d`).
    codecs.register_error("edgefn-log", _log_errors)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="edgefn-log")
        except (AttributeError, ValueError):
            pass
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
