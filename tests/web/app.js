// The browser scenario: log in, list services, watch the services' events while a
// sync adds one, try calls the gateway must refuse, and post everything seen to the
// test's server, which asserts on it.
import { GrpcError, decode, encode, open, text, unary } from './grpc-web.js';

const AUTH = '/slipway.auth.v1.AuthService';
const REGISTRY = '/slipway.registry.v1.RegistryService';
const DEPLOY = '/slipway.deploy.v1.DeployService';
const EMPTY = new Uint8Array(0);

// A Service message: id = 1, name = 2 (data = 3 is not needed here).
const service = (bytes) => {
  const fields = decode(bytes);
  return { id: fields[1]?.[0] ?? 0, name: text(fields[2]?.[0]) };
};

// Deployment: id = 1, service = 3, status = 9; Step: id = 1, deployment_id = 2,
// name = 3, state = 4; Event: sequence = 1, deployment = 2 | step = 3, deleted = 4.
const deployment = (bytes) => {
  const f = decode(bytes);
  return { id: f[1]?.[0] ?? 0, service: text(f[3]?.[0]), status: f[9]?.[0] ?? 0, finished: f[7] !== undefined };
};
const step = (bytes) => {
  const f = decode(bytes);
  return { id: f[1]?.[0] ?? 0, deploymentId: f[2]?.[0] ?? 0, name: text(f[3]?.[0]), state: text(f[4]?.[0]) };
};
const deployEvent = (bytes) => {
  const f = decode(bytes);
  const event = { sequence: f[1]?.[0] ?? 0, deleted: (f[4]?.[0] ?? 0) === 1 };
  if (f[2]) event.deployment = deployment(f[2][0]);
  if (f[3]) event.step = step(f[3][0]);
  return event;
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

  // A deployment's events: watch the service (from now on), start a deployment of it,
  // and follow its events until the deployment is finished.
  const watch = await open(gateway, `${DEPLOY}/WatchEvents`, encode([[1, 'alpha']]), token);
  const started = deployment(await unary(gateway, `${DEPLOY}/StartDeployment`, encode([[2, 'alpha']]), token));
  report.started = started;
  report.deployEvents = [];
  for (;;) {
    const next = await within(30000, watch.next(), 'deployment event');
    const seen = deployEvent(next.value);
    report.deployEvents.push(seen);
    if (seen.deployment?.id === started.id && seen.deployment.finished) break;
  }
  await watch.return();
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
