// Deployments: all of them, newest first, paged, filtered on the server by service,
// status, origin and user (exact), live.

import { useStore } from "../store.js";
import { navigate, STATUS } from "../util.js";
import { DeploymentList, type Filter } from "./DeploymentList.js";

export function Deployments({ query }: { query: URLSearchParams }) {
  const store = useStore();
  const filter: Filter = {
    service: query.get("service") ?? "",
    status: query.get("status") ?? "",
    origin: query.get("origin") ?? "",
    user: query.get("user") ?? "",
  };
  function set(key: keyof Filter, value: string) {
    const next = new URLSearchParams(query);
    if (value) next.set(key, value);
    else next.delete(key);
    const q = next.toString();
    navigate(`deployments${q ? `?${q}` : ""}`);
  }
  const services = [...store.services.keys()].sort();
  return (
    <main>
      <h1>Deployments</h1>
      <form class="filters" aria-label="Filter deployments" onSubmit={(e) => e.preventDefault()}>
        <label>
          Service
          <select id="filter-service" value={filter.service} onChange={(e) => set("service", e.currentTarget.value)}>
            <option value="">all</option>
            {services.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select id="filter-status" value={filter.status} onChange={(e) => set("status", e.currentTarget.value)}>
            <option value="">all</option>
            {Object.values(STATUS)
              .filter((s) => s !== "unknown")
              .map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
          </select>
        </label>
        <label>
          Origin
          <input id="filter-origin" value={filter.origin} onChange={(e) => set("origin", e.currentTarget.value)} />
        </label>
        <label>
          User
          <input id="filter-user" value={filter.user} onChange={(e) => set("user", e.currentTarget.value)} />
        </label>
      </form>
      <DeploymentList filter={filter} id="deployments" />
    </main>
  );
}
