// Services: every synced service with its last deployment, live; sync with each
// folder's problem; folders that are not services yet; delete with confirmation.

import { useEffect, useState } from "preact/hooks";
import type { SyncServicesResponse } from "../gen/slipway/registry/v1/registry_pb.js";
import { explain, registry } from "../api.js";
import { session } from "../session.js";
import { useStore } from "../store.js";
import { Badge, Link, mark, when } from "../util.js";

function SyncResult({ result }: { result: SyncServicesResponse }) {
  const changes = [
    ["added", result.added],
    ["updated", result.updated],
    ["deleted", result.deleted],
  ] as const;
  return (
    <section class="sync" id="sync-result" aria-label="Sync result" role="status">
      <p>
        Synced.{" "}
        {changes
          .filter(([, names]) => names.length)
          .map(([what, names]) => `${what}: ${names.join(", ")}`)
          .join("; ") || "No change."}
      </p>
      {result.problems.length > 0 && (
        <>
          <h3>Folders not synced</h3>
          <ul class="problems">
            {result.problems.map((p) => (
              <li key={p.service}>
                <strong>{p.service}</strong>: {p.reason}
              </li>
            ))}
          </ul>
        </>
      )}
      {result.warnings.length > 0 && (
        <>
          <h3>Synced, but cannot deploy as they are</h3>
          <ul class="problems">
            {result.warnings.map((p) => (
              <li key={p.service}>
                <strong>{p.service}</strong>: {p.reason}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}

export function Services() {
  const store = useStore();
  const [result, setResult] = useState<SyncServicesResponse | null>(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [folders, setFolders] = useState<string[]>([]);

  async function loadFolders() {
    try {
      setFolders((await registry.listServiceNames({})).names);
    } catch (err) {
      explain(err);
    }
  }
  useEffect(() => {
    if (session.may("services:read")) void loadFolders();
  }, []);

  async function sync() {
    setBusy(true);
    setError("");
    try {
      setResult(await registry.syncServices({}));
      void loadFolders();
    } catch (err) {
      setError(explain(err));
    } finally {
      setBusy(false);
    }
  }

  async function remove(name: string, id: bigint) {
    if (!confirm(`Delete the service ${name}? Its folder stays; a sync adds it again.`)) return;
    try {
      await registry.deleteService({ id });
    } catch (err) {
      setError(explain(err));
    }
  }

  useEffect(() => {
    if (store.servicesLoaded) mark("console:services-ready");
  }, [store.servicesLoaded]);

  const services = [...store.services.values()].sort((a, b) => a.name.localeCompare(b.name));
  const notYet = folders.filter((f) => !store.services.has(f));
  return (
    <main>
      <div class="title">
        <h1>Services</h1>
        <span class={`live ${store.live}`} id="services-live" data-state={store.live}>
          {store.live}
        </span>
        {session.may("services:sync") && (
          <button type="button" id="sync" onClick={sync} disabled={busy}>
            {busy ? "Syncing…" : "Sync"}
          </button>
        )}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {store.servicesError && <p class="error" role="alert">{store.servicesError}</p>}
      {result && <SyncResult result={result} />}
      {!store.servicesLoaded ? (
        <p>Loading…</p>
      ) : services.length === 0 ? (
        <p>No service yet: add a folder to the services directory and sync.</p>
      ) : (
        <table class="list" id="services">
          <thead>
            <tr>
              <th>Service</th>
              <th>Description</th>
              <th>Last deployment</th>
              <th class="hide-narrow">When</th>
              <th class="hide-narrow">By</th>
              {session.may("services:delete") && <th><span class="sr">Actions</span></th>}
            </tr>
          </thead>
          <tbody>
            {services.map((s) => {
              const last = store.last.get(s.name);
              const description = s.data?.["description"];
              return (
                <tr key={s.name} data-service={s.name}>
                  <td>
                    <Link to={`services/${encodeURIComponent(s.name)}`}>{s.name}</Link>
                  </td>
                  <td>{typeof description === "string" ? description : ""}</td>
                  <td class="last">
                    {last ? (
                      <Link to={`deployments/${last.id}`}>
                        #{String(last.id)} <Badge status={last.status} />
                      </Link>
                    ) : (
                      "never"
                    )}
                  </td>
                  <td class="hide-narrow">{last ? when(last.started) : ""}</td>
                  <td class="hide-narrow">{last ? last.user || last.origin : ""}</td>
                  {session.may("services:delete") && (
                    <td>
                      <button type="button" class="danger small" onClick={() => remove(s.name, s.id)}
                        aria-label={`Delete ${s.name}`}>
                        Delete
                      </button>
                    </td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {notYet.length > 0 && (
        <section aria-label="Folders not services yet">
          <h2>Folders not services yet</h2>
          <p class="muted">{notYet.join(", ")}</p>
        </section>
      )}
    </main>
  );
}
