// edgefn node shim: loads `file.export` from the bundle and serves the invocation protocol
// (runtime/PROTOCOL.md) on fd 3. Run as: node -e <this file> <file.export> <triggered|continuous>
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');

const FD = 3;
const PROTOCOL = 1;
const MAX_FRAME = 16 << 20;
// Longest error type, message or stack sent (in UTF-16 units).
const MAX_TEXT = 64 << 10;

function frame(msg) {
  const body = Buffer.from(JSON.stringify(msg));
  if (body.length > MAX_FRAME) {
    throw new RangeError(`frame of ${body.length} bytes exceeds the limit of ${MAX_FRAME} bytes`);
  }
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

function sendSync(msg) {
  const buf = frame(msg);
  let off = 0;
  while (off < buf.length) off += fs.writeSync(FD, buf, off);
}

// Resolves once what `stream` has queued is written to its file: node writes to a pipe
// asynchronously, queueing what the pipe cannot take at once.
function flushed(stream) {
  if (!stream.writableLength) return Promise.resolve();
  return new Promise((resolve) => stream.write('', () => resolve()));
}

function wirePayload(value) {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) {
    return [Buffer.from(value).toString('base64'), 'base64'];
  }
  return [value === undefined ? null : value, null];
}

function wireMessage(topic, payload) {
  const [value, enc] = wirePayload(payload);
  const m = { topic: String(topic), payload: value };
  if (enc) m.encoding = enc;
  return m;
}

// `String(value)`, or `fallback` when that throws (a hostile getter or toString, an object
// without a prototype).
function text(value, fallback) {
  try {
    return String(value);
  } catch (_) {
    return fallback;
  }
}

// `fn()`, or `fallback` when it throws.
function attempt(fn, fallback) {
  try {
    return fn();
  } catch (_) {
    return fallback;
  }
}

// The wire form of a thrown value (its stack also goes to stderr); never throws.
function wireError(err) {
  const isErr = attempt(() => err instanceof Error, false);
  const stack = isErr ? attempt(() => (err.stack ? text(err.stack, undefined) : undefined)) : undefined;
  const type = isErr
    ? attempt(() => text((err.constructor && err.constructor.name) || err.name || 'Error', 'Error'), 'Error')
    : 'Error';
  const message = isErr ? attempt(() => text(err.message, '<unprintable error>'), '<unprintable error>')
    : text(err, '<unprintable value>');
  attempt(() => process.stderr.write((stack || `${type}: ${message}`) + '\n'));
  // Bounded, so that the error always fits in a frame.
  const cut = (s) => (typeof s === 'string' && s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) + '…' : s);
  return { type: cut(type), message: cut(message), traceback: cut(stack) };
}

// A promise rejected with nothing to handle it, or an error thrown from a callback (a timer, an
// event) outside of any event: logged against this instance; the event in flight, if any, goes
// on, and the instance stays.
process.on('unhandledRejection', (reason) => {
  attempt(() => process.stderr.write('unhandled promise rejection: '));
  wireError(reason);
});
process.on('uncaughtException', (err) => {
  attempt(() => process.stderr.write('uncaught exception: '));
  wireError(err);
});

class Context {
  constructor(stream) {
    this.function = process.env.EDGEFN_FUNCTION || '';
    this.binding = process.env.EDGEFN_BINDING || '';
    this.device = process.env.EDGEFN_DEVICE || '';
    this.revision = Number(process.env.EDGEFN_REVISION || 0);
    this.deadlineMs = null;
    this._published = [];
    this._stream = stream;
  }
  /** Publish `payload` (a JSON value, or a Buffer) to `topic`. */
  publish(topic, payload) {
    const m = wireMessage(topic, payload);
    if (this._stream) sendSync(Object.assign({ type: 'publish' }, m));
    else this._published.push(m);
  }
  /** Milliseconds left before the runtime gives up on this event. */
  remainingMs() {
    return this.deadlineMs == null ? null : Math.max(0, this.deadlineMs - Date.now());
  }
}

function load(spec) {
  const dot = spec.lastIndexOf('.');
  if (dot <= 0 || dot === spec.length - 1) throw new Error(`handler '${spec}' must be file.export`);
  const file = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const mod = require(path.resolve(process.cwd(), file));
  const fn = mod[name];
  if (typeof fn !== 'function') throw new TypeError(`${file} does not export a function '${name}'`);
  return fn;
}

async function serve(handler, ctx) {
  const sock = new net.Socket({ fd: FD, readable: true, writable: true });
  let buf = Buffer.alloc(0);
  let busy = false;
  const pump = async () => {
    if (busy) return;
    busy = true;
    while (buf.length >= 4) {
      const n = buf.readUInt32BE(0);
      if (n > MAX_FRAME) throw new RangeError(`frame of ${n} bytes exceeds the limit`);
      if (buf.length < 4 + n) break;
      const msg = JSON.parse(buf.toString('utf8', 4, 4 + n));
      buf = buf.subarray(4 + n);
      if (msg.type !== 'invoke') continue;
      let payload = msg.payload;
      if (msg.encoding === 'base64') payload = Buffer.from(payload, 'base64');
      const event = { topic: msg.topic, payload, id: msg.id };
      ctx.deadlineMs = msg.deadline_ms;
      const published = (ctx._published = []);
      const reply = { type: 'result', id: msg.id };
      try {
        const [value, enc] = wirePayload(await handler(event, ctx));
        reply.result = value;
        if (enc) reply.encoding = enc;
      } catch (err) {
        reply.error = wireError(err);
      }
      if (published.length) reply.publish = published;
      let out;
      try {
        out = frame(reply);
      } catch (err) {
        out = frame({ type: 'result', id: msg.id, error: wireError(err) });
      }
      // What the handler printed is in its pipes before its result is sent: an invocation's
      // logs are what its instance wrote before it answered (`edgefn test` shows them).
      await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
      sock.write(out);
    }
    busy = false;
  };
  sock.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    pump().catch((err) => {
      wireError(err);
      process.exit(1);
    });
  });
  sock.on('end', () => process.exit(0));
  sock.on('error', () => process.exit(0));
}

async function main() {
  // In a container the instance is pid 1, which the kernel shields from signals it does not
  // handle: exit on SIGTERM explicitly.
  process.on('SIGTERM', () => process.exit(128 + 15));
  const args = process.argv.slice(1).filter((a) => a !== '--');
  const spec = args[0];
  const mode = args[1] || 'triggered';
  let handler;
  try {
    handler = load(spec);
  } catch (err) {
    sendSync({ type: 'init_error', protocol: PROTOCOL, error: wireError(err) });
    process.exit(1);
  }
  sendSync({ type: 'hello', protocol: PROTOCOL, runtime: `node ${process.version}` });
  if (mode === 'continuous') {
    // The function runs until its promise settles, also when it awaits nothing node counts as
    // pending work (`await new Promise(() => {})`): without a timer, node would exit at once.
    const alive = setInterval(() => {}, 1 << 30);
    try {
      await handler(new Context(true));
    } finally {
      clearInterval(alive);
    }
    return;
  }
  await serve(handler, new Context(false));
}

main().catch((err) => {
  wireError(err);
  process.exit(1);
});
