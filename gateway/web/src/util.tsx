// Small helpers shared by the screens: the router (paths under /ui/), following a
// server stream with reconnects, and formatting.

import { useEffect, useState } from "preact/hooks";
import type { JSX } from "preact";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { DeploymentStatus } from "./gen/slipway/deploy/v1/deploy_pb.js";
import { aborted, explain, retriable } from "./api.js";

export const BASE = "/ui/";

const routeListeners = new Set<() => void>();
window.addEventListener("popstate", () => routeListeners.forEach((l) => l()));

export function navigate(path: string) {
  history.pushState(null, "", BASE + path.replace(/^\//, ""));
  routeListeners.forEach((l) => l());
  window.scrollTo(0, 0);
  // Keyboard and screen-reader users land on the new screen's heading.
  requestAnimationFrame(() => {
    const heading = document.querySelector<HTMLElement>("main h1");
    if (!heading) return;
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  });
}

/** The app path (after /ui/) and query of the current location. */
export function useRoute(): { path: string; query: URLSearchParams } {
  const [, setTick] = useState(0);
  useEffect(() => {
    const listener = () => setTick((t) => t + 1);
    routeListeners.add(listener);
    return () => routeListeners.delete(listener);
  }, []);
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "";
  return { path: decodeURIComponent(path), query: new URLSearchParams(location.search) };
}

export function Link(props: { to: string; children: preact.ComponentChildren } & JSX.HTMLAttributes<HTMLAnchorElement>) {
  const { to, children, ...rest } = props;
  return (
    <a
      {...rest}
      href={BASE + to}
      onClick={(e) => {
        if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(to);
      }}
    >
      {children}
    </a>
  );
}

export type Live = "connecting" | "live" | "reconnecting" | "stopped";

/** Resolves once the page is visible (at once if it is) or `signal` aborts. */
function shown(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const check = () => {
      if (document.hidden && !signal.aborted) return;
      document.removeEventListener("visibilitychange", check);
      signal.removeEventListener("abort", check);
      resolve();
    };
    document.addEventListener("visibilitychange", check);
    signal.addEventListener("abort", check);
    check();
  });
}

/**
 * Follows a server stream until `signal` aborts: each message to `onMessage`; when the
 * stream drops (a network error, a gateway restart) it is opened again with `open`
 * (which resumes from what was seen), after 0.25 s, then up to 4 s. A refusal stops it
 * (and an UNAUTHENTICATED one ends the session).
 *
 * While the page is hidden (another tab in front, a minimized window) the stream is
 * closed, and opened again (resuming) as soon as the page shows: over HTTP/1.1 every
 * open stream holds one of the browser's 6 connections to the gateway, so tabs in
 * the background would otherwise starve the one in front.
 */
export async function follow<T>(
  signal: AbortSignal,
  open: (options: { signal: AbortSignal; onHeader: () => void }) => AsyncIterable<T>,
  onMessage: (message: T) => void | "stop",
  onState: (state: Live, error?: string) => void,
) {
  let delay = 250;
  onState("connecting");
  while (!signal.aborted) {
    await shown(signal);
    if (signal.aborted) return;
    const attempt = new AbortController();
    const end = () => attempt.abort();
    const hide = () => document.hidden && attempt.abort();
    signal.addEventListener("abort", end);
    document.addEventListener("visibilitychange", hide);
    try {
      const onHeader = () => {
        onState("live");
        delay = 250;
      };
      for await (const message of open({ signal: attempt.signal, onHeader })) {
        if (onMessage(message) === "stop") {
          onState("stopped");
          return;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (!attempt.signal.aborted) {
        if (aborted(err)) return;
        if (!retriable(err)) {
          onState("stopped", explain(err));
          return;
        }
      }
    } finally {
      signal.removeEventListener("abort", end);
      document.removeEventListener("visibilitychange", hide);
    }
    if (signal.aborted) return;
    onState("reconnecting");
    // Closed because the page was hidden: open again as soon as it shows.
    if (attempt.signal.aborted) continue;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 4000);
  }
}

export const STATUS: Record<number, string> = {
  [DeploymentStatus.UNSPECIFIED]: "unknown",
  [DeploymentStatus.QUEUED]: "queued",
  [DeploymentStatus.RUNNING]: "running",
  [DeploymentStatus.SUCCEEDED]: "succeeded",
  [DeploymentStatus.FAILED]: "failed",
  [DeploymentStatus.CANCELLED]: "cancelled",
};

export function active(status: DeploymentStatus): boolean {
  return status === DeploymentStatus.QUEUED || status === DeploymentStatus.RUNNING;
}

export function ms(t: Timestamp | undefined): number {
  return t ? timestampMs(t) : 0;
}

export function when(t: Timestamp | undefined): string {
  if (!t) return "";
  const d = new Date(timestampMs(t));
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function duration(from: Timestamp | undefined, to: Timestamp | undefined, now: number): string {
  if (!from) return "";
  const s = Math.max(0, ((to ? ms(to) : Math.max(now, Date.now())) - ms(from)) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function Badge({ status }: { status: DeploymentStatus }) {
  const name = STATUS[status] ?? "unknown";
  return <span class={`badge ${name}`}>{name}</span>;
}

export function StateBadge({ state }: { state: string }) {
  return <span class={`badge ${state}`}>{state}</span>;
}

/** A ticking clock for running durations (one per screen that shows them). */
export function useNow(running: boolean): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!running) return;
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [running]);
  return now;
}

/** A performance mark, once per page load: when a screen first became usable (the
 * console bench reads them). */
export function mark(name: string) {
  if (performance.getEntriesByName(name).length === 0) performance.mark(name);
}
