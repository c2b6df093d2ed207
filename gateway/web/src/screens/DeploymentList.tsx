// A paged, live list of deployments, newest first: ListDeployments filters on the
// server (service, status, origin, user; so a page holds only matching deployments),
// older pages on demand, and every change from the session's live feed: a new
// deployment that matches on top, a status change in place, one that stops matching
// taken out.

import { useEffect, useRef, useState } from "preact/hooks";
import type { Deployment } from "../gen/slipway/deploy/v1/deploy_pb.js";
import { deploy, explain } from "../api.js";
import { onDeployment, onReopen } from "../store.js";
import { Badge, Link, STATUS, duration, useNow, when, active } from "../util.js";

export type Filter = { service: string; status: string; origin: string; user: string };

function matches(d: Deployment, f: Filter): boolean {
  return (
    (!f.service || d.service === f.service) &&
    (!f.status || STATUS[d.status] === f.status) &&
    (!f.origin || d.origin === f.origin) &&
    (!f.user || d.user === f.user)
  );
}

/** The status number of a status name ("" and unknown names: any). */
function statusNumber(name: string): number {
  const found = Object.entries(STATUS).find(([, n]) => n === name && name !== "unknown");
  return found ? Number(found[0]) : 0;
}

const PAGE = 25;
const newestFirst = (a: Deployment, b: Deployment) => (a.id < b.id ? 1 : -1);

export function DeploymentList({ filter, id }: { filter: Filter; id: string }) {
  const [list, setList] = useState<Deployment[]>([]);
  const [next, setNext] = useState("");
  const [loaded, setLoaded] = useState(false);
  const [error, setError] = useState("");
  const key = [filter.service, filter.status, filter.origin, filter.user].join("\u0000");
  // The filters now shown: a page asked for under others is dropped when it comes.
  const current = useRef(key);
  current.current = key;

  /** Reads a page; `again` reads the first page again without moving the paging. */
  async function page(pageToken: string, again = false) {
    const asked = key;
    try {
      const answer = await deploy.listDeployments({
        service: filter.service,
        status: statusNumber(filter.status),
        origin: filter.origin,
        user: filter.user,
        newestFirst: true,
        pageSize: PAGE,
        pageToken,
      });
      if (current.current !== asked) return;
      // Merged by id: a first page read again (after the feed dropped) updates the
      // deployments it has and keeps the older pages loaded.
      setList((old) => {
        const fresh = new Map(answer.deployments.map((d) => [d.id, d]));
        const kept = old.map((d) => fresh.get(d.id) ?? d);
        const known = new Set(old.map((d) => d.id));
        const added = answer.deployments.filter((d) => !known.has(d.id));
        return [...kept, ...added].filter((d) => matches(d, filter)).sort(newestFirst);
      });
      if (!again) setNext(answer.nextPageToken);
      setLoaded(true);
      setError("");
    } catch (err) {
      setError(explain(err));
    }
  }

  useEffect(() => {
    setList([]);
    setNext("");
    setLoaded(false);
    void page("");
    const stopReopen = onReopen(() => void page("", true));
    const stopLive = onDeployment((d) => {
      setList((old) => {
        const at = old.findIndex((o) => o.id === d.id);
        if (!matches(d, filter)) return at >= 0 ? old.filter((o) => o.id !== d.id) : old;
        if (at >= 0) return old.map((o, i) => (i === at ? d : o));
        return [d, ...old].sort(newestFirst);
      });
    });
    return () => (stopReopen(), stopLive());
  }, [key]);

  const shown = list;
  const now = useNow(shown.some((d) => active(d.status)));
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!loaded) return <p>Loading…</p>;
  return (
    <>
      {shown.length === 0 ? (
        <p id={`${id}-empty`}>No deployment{filter.status || filter.origin || filter.user ? " matches" : " yet"}.</p>
      ) : (
        <table class="list" id={id}>
          <thead>
            <tr>
              <th>#</th>
              <th>Service</th>
              <th>Status</th>
              <th>Started</th>
              <th class="hide-narrow">Duration</th>
              <th class="hide-narrow">By</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((d) => (
              <tr key={String(d.id)} data-deployment={String(d.id)} data-status={STATUS[d.status]}>
                <td>
                  <Link to={`deployments/${d.id}`}>#{String(d.id)}</Link>
                </td>
                <td>{d.service}</td>
                <td>
                  <Badge status={d.status} />
                </td>
                <td>{when(d.started)}</td>
                <td class="hide-narrow">{duration(d.runStarted ?? d.started, d.finished, now)}</td>
                <td class="hide-narrow">{d.user || d.origin}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {next && (
        <button type="button" class="more" onClick={() => page(next)}>
          Load older deployments
        </button>
      )}
    </>
  );
}
