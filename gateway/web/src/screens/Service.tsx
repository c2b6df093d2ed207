// A service's page: what it is, a Deploy button with optional env key/values, and its
// deployments (paged, live).

import { useEffect, useState } from "preact/hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import { deploy, explain } from "../api.js";
import { session } from "../session.js";
import { useStore } from "../store.js";
import { navigate } from "../util.js";
import { DeploymentList } from "./DeploymentList.js";
import { type TokenInfo, TokenType } from "../gen/slipway/auth/v1/auth_pb.js";
import { auth } from "../api.js";
import { Minted, TokenTable, useRevoked } from "../tokens.js";

function ServiceTokens({ service }: { service: string }) {
  const revoked = useRevoked();
  const [tokens, setTokens] = useState<TokenInfo[]>([]);
  const [origin, setOrigin] = useState("");
  const [name, setName] = useState("");
  const [days, setDays] = useState("30");
  const [minted, setMinted] = useState("");
  const [message, setMessage] = useState("");
  const [reload, setReload] = useState(0);

  useEffect(() => {
    if (!session.may("tokens:read")) return;
    auth
      .listTokens({ service, type: TokenType.SERVICE, pageSize: 100 })
      .then((page) => setTokens(page.tokens))
      .catch((err) => setMessage(explain(err)));
  }, [service, reload]);

  async function mint(e: Event) {
    e.preventDefault();
    setMessage("");
    try {
      const answer = await auth.mintServiceToken({ service, origin, name, expirationInDays: Number(days) || 0 });
      setMinted(answer.token);
      setReload((r) => r + 1);
    } catch (err) {
      setMessage(explain(err));
    }
  }

  return (
    <section aria-label="Service tokens">
      <h2>Service tokens</h2>
      {minted && <Minted token={minted} onClose={() => setMinted("")} />}
      {message && (
        <p class="notice" role="status" id="service-tokens-message">
          {message}
        </p>
      )}
      {session.may("tokens:read") && (
        <TokenTable tokens={tokens} revoked={revoked} onChange={(m) => (setMessage(m), setReload((r) => r + 1))} />
      )}
      {session.may("tokens:mint") && (
        <form class="box" onSubmit={mint} aria-label={`Create a service token for ${service}`}>
          <div class="fields">
            <label>
              Origin
              <input id="token-origin" required placeholder="ci" value={origin}
                onInput={(e) => setOrigin(e.currentTarget.value)} />
            </label>
            <label>
              Name
              <input id="token-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
            </label>
            <label>
              Lifetime (days)
              <input id="token-days" type="number" min="1" value={days} onInput={(e) => setDays(e.currentTarget.value)} />
            </label>
          </div>
          <button type="submit" id="create-token">
            Create a service token
          </button>
        </form>
      )}
    </section>
  );
}

function DeployForm({ service }: { service: string }) {
  const [rows, setRows] = useState<[string, string][]>([]);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function start(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError("");
    const env: JsonObject = {};
    for (const [key, value] of rows) if (key.trim()) env[key.trim()] = value;
    try {
      const started = await deploy.startDeployment({ service, env });
      navigate(`deployments/${started.id}`);
    } catch (err) {
      setError(explain(err));
      setBusy(false);
    }
  }

  const edit = (i: number, at: 0 | 1, value: string) =>
    setRows(rows.map((row, j) => (j === i ? (at === 0 ? [value, row[1]] : [row[0], value]) : row)));
  return (
    <form class="deploy" onSubmit={start} aria-label={`Deploy ${service}`}>
      <fieldset>
        <legend>Environment (optional)</legend>
        {rows.map(([key, value], i) => (
          <div class="env-row" key={i}>
            <input aria-label="Key" placeholder="KEY" value={key} onInput={(e) => edit(i, 0, e.currentTarget.value)} />
            <input aria-label="Value" placeholder="value" value={value}
              onInput={(e) => edit(i, 1, e.currentTarget.value)} />
            <button type="button" class="small" aria-label={`Remove ${key || "row"}`}
              onClick={() => setRows(rows.filter((_, j) => j !== i))}>
              ×
            </button>
          </div>
        ))}
        <button type="button" class="small" id="add-env" onClick={() => setRows([...rows, ["", ""]])}>
          Add a variable
        </button>
      </fieldset>
      {error && <p class="error" role="alert" id="deploy-error">{error}</p>}
      <button type="submit" id="deploy" class="primary" disabled={busy}>
        {busy ? "Starting…" : `Deploy ${service}`}
      </button>
    </form>
  );
}

export function ServicePage({ name }: { name: string }) {
  const store = useStore();
  const service = store.services.get(name);
  const data = service?.data ?? {};
  const steps = Array.isArray(data["steps"]) ? data["steps"] : [];
  return (
    <main>
      <h1>{name}</h1>
      {store.servicesLoaded && !service && <p class="error">No service {name} (removed, or not synced).</p>}
      {typeof data["description"] === "string" && <p>{data["description"]}</p>}
      {steps.length > 0 && (
        <p class="muted">
          Steps:{" "}
          {steps
            .map((s) => (s && typeof s === "object" && !Array.isArray(s) && typeof s["name"] === "string" ? s["name"] : "?"))
            .join(" → ")}
        </p>
      )}
      {service && session.may("deployments:start") && <DeployForm service={name} />}
      {service && (session.may("tokens:read") || session.may("tokens:mint")) && <ServiceTokens service={name} />}
      {session.may("deployments:read") && (
        <>
          <h2>Deployments</h2>
          <DeploymentList filter={{ service: name, status: "", origin: "", user: "" }} id="service-deployments" />
        </>
      )}
    </main>
  );
}
