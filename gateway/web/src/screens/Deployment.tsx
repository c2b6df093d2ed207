// A deployment's page: its steps as they happen (state, message, start, duration),
// the running step kept in view, the failure reason, Cancel while queued or running.
// Live from WatchEvents for this deployment: first every stored event (after sequence
// -1, so nothing between the first read and the stream is lost), then live ones;
// after a drop it resumes after the last sequence seen, and an event at or below it
// is ignored, so nothing is missed or doubled. Below the steps, the run's output
// (Output.tsx).

import { useEffect, useRef, useState } from "preact/hooks";
import type { Deployment, Step } from "../gen/slipway/deploy/v1/deploy_pb.js";
import { deploy, explain } from "../api.js";
import { session } from "../session.js";
import { Output } from "./Output.js";
import { Badge, Link, STATUS, StateBadge, active, duration, follow, useNow, when, type Live } from "../util.js";

type View = { deployment: Deployment | null; steps: Step[]; last: bigint; applied: number };

function upsert(steps: Step[], step: Step): Step[] {
  const at = steps.findIndex((s) => s.id === step.id || (s.id === 0n && s.name === step.name));
  if (at < 0) return [...steps, step];
  return steps.map((s, i) => (i === at ? step : s));
}

export function DeploymentPage({ id }: { id: bigint }) {
  const [view, setView] = useState<View>({ deployment: null, steps: [], last: 0n, applied: 0 });
  const [live, setLive] = useState<Live>("connecting");
  const [error, setError] = useState("");
  const [cancelling, setCancelling] = useState(false);
  const lastSeen = useRef(0n);
  const runningRow = useRef<HTMLTableRowElement>(null);

  useEffect(() => {
    const abort = new AbortController();
    lastSeen.current = 0n;
    setView({ deployment: null, steps: [], last: 0n, applied: 0 });
    deploy
      .getDeployment({ id }, { signal: abort.signal })
      .then((d) =>
        setView((v) => ({
          ...v,
          deployment: v.deployment ?? d,
          steps: d.steps.reduce((steps, s) => (steps.some((o) => o.id === s.id) ? steps : [...steps, s]), v.steps),
        })),
      )
      .catch((err) => abort.signal.aborted || setError(explain(err)));
    void follow(
      abort.signal,
      ({ signal, onHeader }) =>
        deploy.watchEvents(
          { deploymentId: id, afterSequence: lastSeen.current > 0n ? lastSeen.current : -1n },
          { signal, onHeader },
        ),
      (event) => {
        if (event.sequence <= lastSeen.current) return;
        lastSeen.current = event.sequence;
        setView((v) => {
          const next = { ...v, last: event.sequence, applied: v.applied + 1 };
          if (event.payload.case === "deployment") {
            const d = event.payload.value;
            next.deployment = d;
          } else if (event.payload.case === "step") {
            next.steps = upsert(v.steps, event.payload.value);
          }
          return next;
        });
      },
      (state, why) => {
        setLive(state);
        if (why) setError(why);
      },
    );
    return () => abort.abort();
  }, [id]);

  const d = view.deployment;
  const running = d !== null && active(d.status);
  const now = useNow(running);
  const runningStep = view.steps.find((s) => s.state === "running");
  useEffect(() => {
    runningRow.current?.scrollIntoView({ block: "nearest" });
  }, [runningStep?.id]);

  async function cancel() {
    if (!confirm(`Cancel deployment #${id}?`)) return;
    setCancelling(true);
    try {
      await deploy.cancelDeployment({ id });
    } catch (err) {
      setError(explain(err));
    } finally {
      setCancelling(false);
    }
  }

  return (
    <main>
      <div class="title">
        <h1>Deployment #{String(id)}</h1>
        <span class={`live ${live}`} id="deployment-live" data-state={live} data-last-sequence={String(view.last)}>
          {live}
        </span>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {d && (
        <dl class="facts" id="deployment" data-status={STATUS[d.status]}>
          <dt>Service</dt>
          <dd>
            <Link to={`services/${encodeURIComponent(d.service)}`}>{d.service}</Link>
          </dd>
          <dt>Status</dt>
          <dd id="deployment-status">
            <Badge status={d.status} />
          </dd>
          <dt>Started</dt>
          <dd>
            {when(d.started)} by {d.user || d.origin}
          </dd>
          <dt>Duration</dt>
          <dd>{duration(d.runStarted ?? d.started, d.finished, now)}</dd>
        </dl>
      )}
      {d?.failureReason && (
        <p class="error" id="failure-reason" role="alert">
          Failed: {d.failureReason}
        </p>
      )}
      {d && running && session.may("deployments:cancel") && (
        <button type="button" id="cancel" class="danger" onClick={cancel} disabled={cancelling}>
          {cancelling ? "Cancelling…" : "Cancel deployment"}
        </button>
      )}
      <h2>Steps</h2>
      {view.steps.length === 0 ? (
        <p>{running ? "No step reported yet." : "No steps."}</p>
      ) : (
        <table class="list steps" id="steps" aria-live="polite">
          <thead>
            <tr>
              <th>Step</th>
              <th>State</th>
              <th>Message</th>
              <th class="hide-narrow">Started</th>
              <th>Duration</th>
            </tr>
          </thead>
          <tbody>
            {view.steps.map((s) => (
              <tr key={String(s.id) + s.name} data-step={s.name} data-state={s.state}
                ref={s === runningStep ? runningRow : undefined} class={s.state}>
                <td>{s.name}</td>
                <td>
                  <StateBadge state={s.state} />
                </td>
                <td class="message">{s.message}</td>
                <td class="hide-narrow">{when(s.started)}</td>
                <td>{duration(s.started, s.finished, now)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <Output id={id} />
    </main>
  );
}
