// A minimal grpc-web client in plain JS, enough for the browser test: binary
// protobuf messages in grpc-web frames over fetch, unary and server streaming.
//
// grpc-web frame: 1 flag byte (0x00 message, 0x80 trailers), 4-byte big-endian
// length, then that many bytes (a protobuf message, or trailers as HTTP header lines).

export class GrpcError extends Error {
  constructor(code, message) {
    super(`grpc status ${code}: ${message}`);
    this.code = code;
    this.grpcMessage = message;
  }
}

function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

// ---- protobuf wire format: the few kinds these messages use ----

function varint(n) {
  const bytes = [];
  let v = BigInt.asUintN(64, BigInt(n)); // negative int64s take ten bytes
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    bytes.push(b);
  } while (v > 0n);
  return bytes;
}

// fields: [[number, value], ...] with value a string, a number (varint) or bytes.
export function encode(fields) {
  const out = [];
  for (const [number, value] of fields) {
    if (typeof value === 'number' || typeof value === 'bigint') {
      out.push(...varint((number << 3) | 0), ...varint(value));
    } else {
      const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value;
      out.push(...varint((number << 3) | 2), ...varint(bytes.length), ...bytes);
    }
  }
  return new Uint8Array(out);
}

// Returns {number: [values]}: varints as Numbers, length-delimited fields as bytes.
export function decode(bytes) {
  const fields = {};
  let at = 0;
  const readVarint = () => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const b = bytes[at++];
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
  };
  while (at < bytes.length) {
    const key = Number(readVarint());
    const [number, wire] = [key >> 3, key & 7];
    let value;
    if (wire === 0) value = Number(readVarint());
    else if (wire === 2) {
      const length = Number(readVarint());
      value = bytes.subarray(at, at + length);
      at += length;
    } else if (wire === 1) { value = bytes.subarray(at, at + 8); at += 8; }
    else if (wire === 5) { value = bytes.subarray(at, at + 4); at += 4; }
    else throw new Error(`unsupported wire type ${wire}`);
    (fields[number] ??= []).push(value);
  }
  return fields;
}

export const text = (bytes) => (bytes ? new TextDecoder().decode(bytes) : '');

// ---- calls ----

function trailers(bytes) {
  const result = {};
  for (const line of text(bytes).split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon > 0) result[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return result;
}

function check(status, message) {
  if (status !== '0') throw new GrpcError(Number(status), decodeURIComponent(message ?? ''));
}

async function* messages(response) {
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  try {
    for (;;) {
      while (buffer.length >= 5) {
        const length = new DataView(buffer.buffer, buffer.byteOffset).getUint32(1);
        if (buffer.length < 5 + length) break;
        const [flag, payload] = [buffer[0], buffer.slice(5, 5 + length)];
        buffer = buffer.slice(5 + length);
        if (flag & 0x80) {
          const t = trailers(payload);
          check(t['grpc-status'], t['grpc-message']);
          return;
        }
        yield payload;
      }
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
    throw new Error('the stream ended without trailers');
  } finally {
    reader.cancel().catch(() => {});
  }
}

// Starts a call; resolves once the response headers are in, with an async iterator
// over the response messages (which throws a GrpcError for a non-OK status).
export async function open(base, path, request, token) {
  const headers = {
    'content-type': 'application/grpc-web+proto',
    accept: 'application/grpc-web+proto',
    'x-grpc-web': '1',
  };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + path, { method: 'POST', headers, body: frame(request) });
  if (!response.ok) throw new Error(`HTTP ${response.status} for ${path}`);
  // A trailers-only answer (a refusal) carries its status in the headers.
  const status = response.headers.get('grpc-status');
  if (status !== null) {
    check(status, response.headers.get('grpc-message'));
  }
  return messages(response);
}

export async function unary(base, path, request, token) {
  let last;
  for await (const message of await open(base, path, request, token)) last = message;
  if (last === undefined) throw new Error(`no response message for ${path}`);
  return last;
}
