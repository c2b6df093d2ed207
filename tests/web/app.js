// The browser scenario: log in, list services, watch the services' events while a
// sync adds one, try calls the gateway must refuse, and post everything seen to the
// test's server, which asserts on it.
import { GrpcError, decode, encode, open, text, unary } from './grpc-web.js';

const AUTH = '/slipway.auth.v1.AuthService';
const REGISTRY = '/slipway.registry.v1.RegistryService';
const EMPTY = new Uint8Array(0);

// A Service message: id = 1, name = 2 (data = 3 is not needed here).
const service = (bytes) => {
  const fields = decode(bytes);
  return { id: fields[1]?.[0] ?? 0, name: text(fields[2]?.[0]) };
};

const refusal = async (call) => {
  try {
    await call();
    return { code: 0 };
  } catch (e) {
    if (e instanceof GrpcError) return { code: e.code, message: e.grpcMessage };
    throw e;
  }
};

const within = (ms, promise, what) =>
  Promise.race([promise, new Promise((_, fail) => setTimeout(() => fail(new Error(`no ${what} in ${ms} ms`)), ms))]);

async function scenario({ gateway, username, password }) {
  const report = {};
  const login = decode(await unary(gateway, `${AUTH}/Login`, encode([[1, username], [2, password]])));
  const token = text(login[1][0]);
  report.token = token;
  report.tokenType = text(login[2]?.[0]);
  report.wrongPassword = await refusal(() => unary(gateway, `${AUTH}/Login`, encode([[1, username], [2, 'wrong']])));

  const listed = decode(await unary(gateway, `${REGISTRY}/ListServices`, EMPTY, token));
  report.services = (listed[1] ?? []).map(service);
  report.anonymous = await refusal(() => unary(gateway, `${REGISTRY}/ListServices`, EMPTY));
  report.internal = await refusal(() =>
    unary(gateway, `${REGISTRY}/PublishDeployedService`, encode([[1, 1], [2, 'alpha']]), token));

  // Server streaming: the watch is open (headers in) before the sync that adds a service.
  const events = await open(gateway, `${REGISTRY}/WatchServices`, EMPTY, token);
  const synced = decode(await unary(gateway, `${REGISTRY}/SyncServices`, EMPTY, token));
  report.added = (synced[1] ?? []).map(text);
  const next = await within(10000, events.next(), 'service event');
  const event = decode(next.value);
  report.event = { service: service(event[1][0]), deleted: (event[2]?.[0] ?? 0) === 1 };
  await events.return();
  return report;
}

async function main() {
  let report;
  try {
    const config = await (await fetch('/config')).json();
    report = await scenario(config);
  } catch (e) {
    report = { error: String(e), stack: e.stack };
  }
  document.getElementById('log').textContent = JSON.stringify(report, null, 2);
  await fetch('/report', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(report) });
}

main();
