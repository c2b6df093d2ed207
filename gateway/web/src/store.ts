// What several screens show, kept live while a screen shows it: the services (the
// registry's WatchServices, the list read again whenever the stream (re)opens, so a
// drop misses nothing), each service's last deployment and every deployment change
// (the deploy service's WatchEvents, live). A stream that ends UNAUTHENTICATED ends
// the session: this is how a token revoked elsewhere sends the console to login
// (every screen follows at least one stream).

import { useEffect, useState } from "preact/hooks";
import type { Service } from "./gen/slipway/registry/v1/registry_pb.js";
import type { Deployment } from "./gen/slipway/deploy/v1/deploy_pb.js";
import { deploy, explain, registry } from "./api.js";
import { session } from "./session.js";
import { follow, type Live } from "./util.js";

export const store = {
  services: new Map<string, Service>(),
  /** Whether the services were listed once. */
  servicesLoaded: false,
  servicesError: "",
  last: new Map<string, Deployment>(),
  live: "connecting" as Live,
};

const listeners = new Set<() => void>();
const deploymentListeners = new Set<(d: Deployment) => void>();
const reopenListeners = new Set<() => void>();
let changed = 0;

function notify() {
  if (changed) return;
  changed = requestAnimationFrame(() => {
    changed = 0;
    listeners.forEach((l) => l());
  });
}

export function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Every deployment change seen live (a new one, a status change); the feeds stay
 * open while there is a listener. */
export function onDeployment(listener: (d: Deployment) => void): () => void {
  deploymentListeners.add(listener);
  const release = want();
  return () => (deploymentListeners.delete(listener), release());
}

/** The deployments feed opened again after a drop: what it missed is to be read again. */
export function onReopen(listener: () => void): () => void {
  reopenListeners.add(listener);
  return () => reopenListeners.delete(listener);
}

function noteDeployment(d: Deployment) {
  const last = store.last.get(d.service);
  if (!last || last.id <= d.id) store.last.set(d.service, d);
}

async function loadServices() {
  try {
    const all = new Map<string, Service>();
    let pageToken = "";
    do {
      const page = await registry.listServices({ pageSize: 500, pageToken });
      page.services.forEach((s) => all.set(s.name, s));
      pageToken = page.nextPageToken;
    } while (pageToken);
    store.services = all;
    store.servicesLoaded = true;
    store.servicesError = "";
  } catch (err) {
    store.servicesError = explain(err);
  }
  notify();
}

async function loadLast() {
  try {
    const page = await deploy.listDeployments({ pageSize: 200, newestFirst: true });
    for (const d of page.deployments) noteDeployment(d);
    notify();
  } catch (err) {
    explain(err);
  }
}

let running: AbortController | null = null;
/** Screens showing what the feeds keep; the feeds are open while there are any. */
let wanted = 0;
let idle = 0;

/** Opens the session's feeds (if the session may read what they carry). */
function open() {
  running?.abort();
  const abort = new AbortController();
  running = abort;
  const signal = abort.signal;
  if (session.may("services:read")) {
    void follow(
      signal,
      ({ signal, onHeader }) =>
        registry.watchServices({}, { signal, onHeader: () => (onHeader(), void loadServices()) }),
      (event) => {
        if (!event.service) return;
        if (event.deleted) store.services.delete(event.service.name);
        else store.services.set(event.service.name, event.service);
        notify();
      },
      (state) => {
        store.live = state;
        notify();
      },
    );
  }
  if (session.may("deployments:read")) {
    let opened = 0;
    const reopened = () => {
      void loadLast();
      if (opened++ > 0) reopenListeners.forEach((l) => l());
    };
    void follow(
      signal,
      ({ signal, onHeader }) =>
        deploy.watchEvents({ afterSequence: 0n }, { signal, onHeader: () => (onHeader(), reopened()) }),
      (event) => {
        if (event.payload.case !== "deployment") return;
        const d = event.payload.value;
        noteDeployment(d);
        deploymentListeners.forEach((l) => l(d));
        notify();
      },
      () => {},
    );
  }
}

/**
 * A screen that shows what the feeds keep wants them open; call the answer when it
 * goes. They close a few seconds after the last such screen went (not at once, so
 * moving between screens keeps them): a deployment's page, which follows its own
 * streams, holds no others, as each stream holds one of the browser's few HTTP/1.1
 * connections to the gateway.
 */
export function want(): () => void {
  wanted++;
  clearTimeout(idle);
  if (!running && session.active()) open();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--wanted > 0) return;
    idle = window.setTimeout(() => {
      if (wanted > 0) return;
      running?.abort();
      running = null;
    }, 3000);
  };
}

/** A new session (a login): what the last one read is forgotten. */
export function start() {
  running?.abort();
  running = null;
  store.services = new Map();
  store.servicesLoaded = false;
  store.last = new Map();
  store.live = "connecting";
  if (wanted > 0) open();
}

export function stop() {
  clearTimeout(idle);
  running?.abort();
  running = null;
}

/** Re-renders the calling component on every store change. */
export function useStore() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const unsubscribe = subscribe(() => setTick((t) => t + 1));
    const release = want();
    return () => (unsubscribe(), release());
  }, []);
  return store;
}
