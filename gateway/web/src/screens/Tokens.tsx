// Tokens: every token (paged, filtered by type, service, creator, revoked or not), live
// as they are revoked; revoke saying first how many derived tokens go with it; mint a
// config token; debug a pasted token.

import { useEffect, useState } from "preact/hooks";
import type { JsonObject } from "@bufbuild/protobuf";
import { type DebugTokenResponse, type TokenInfo, TokenType } from "../gen/slipway/auth/v1/auth_pb.js";
import { auth, explain } from "../api.js";
import { session } from "../session.js";
import { Minted, TokenTable, TYPE, useRevoked } from "../tokens.js";

const PAGE = 50;

function ConfigTokenForm({ onMinted }: { onMinted: (token: string) => void }) {
  const [services, setServices] = useState("");
  const [name, setName] = useState("");
  const [days, setDays] = useState("30");
  const [claims, setClaims] = useState("");
  const [error, setError] = useState("");
  async function mint(e: Event) {
    e.preventDefault();
    setError("");
    let extraClaims: JsonObject | undefined;
    try {
      extraClaims = claims.trim() ? (JSON.parse(claims) as JsonObject) : undefined;
    } catch {
      setError("Extra claims must be a JSON object.");
      return;
    }
    try {
      const minted = await auth.mintConfigToken({
        services: services.split(",").map((s) => s.trim()).filter(Boolean),
        name,
        expirationInDays: Number(days) || 0,
        extraClaims,
      });
      onMinted(minted.token);
    } catch (err) {
      setError(explain(err));
    }
  }
  return (
    <form class="box" onSubmit={mint} aria-label="Create a config token">
      <h2>Create a config token</h2>
      <div class="fields">
        <label>
          Name
          <input id="config-name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Services (comma-separated; empty: all)
          <input id="config-services" value={services} onInput={(e) => setServices(e.currentTarget.value)} />
        </label>
        <label>
          Lifetime (days)
          <input id="config-days" type="number" min="1" value={days} onInput={(e) => setDays(e.currentTarget.value)} />
        </label>
        <label class="wide">
          Extra claims (JSON object, optional)
          <input id="config-claims" value={claims} placeholder='{"env": "staging"}'
            onInput={(e) => setClaims(e.currentTarget.value)} />
        </label>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <button type="submit" class="primary">Create</button>
    </form>
  );
}

/** A narrower token derived from the session's own (AttenuateToken). */
function AttenuateForm({ onMinted }: { onMinted: (token: string) => void }) {
  const [permissions, setPermissions] = useState("deployments:read");
  const [minutes, setMinutes] = useState("60");
  const [origin, setOrigin] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState("");
  async function derive(e: Event) {
    e.preventDefault();
    setError("");
    try {
      const minted = await auth.attenuateToken({
        permissions: permissions.split(",").map((p) => p.trim()).filter(Boolean),
        lifetimeSeconds: BigInt(Math.max(0, Math.round(Number(minutes) * 60) || 0)),
        origin,
        name,
      });
      onMinted(minted.token);
    } catch (err) {
      setError(explain(err));
    }
  }
  return (
    <form class="box" onSubmit={derive} aria-label="Attenuate your token">
      <h2>Derive a narrower token from yours</h2>
      <div class="fields">
        <label class="wide">
          Permissions (comma-separated, a subset of yours)
          <input id="attenuate-permissions" value={permissions} onInput={(e) => setPermissions(e.currentTarget.value)} />
        </label>
        <label>
          Lifetime (minutes)
          <input type="number" min="1" value={minutes} onInput={(e) => setMinutes(e.currentTarget.value)} />
        </label>
        <label>
          Origin
          <input value={origin} onInput={(e) => setOrigin(e.currentTarget.value)} />
        </label>
        <label>
          Name
          <input value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <button type="submit">Derive</button>
    </form>
  );
}

function Debug() {
  const [token, setToken] = useState("");
  const [answer, setAnswer] = useState<DebugTokenResponse | null>(null);
  const [error, setError] = useState("");
  async function debug(e: Event) {
    e.preventDefault();
    setError("");
    try {
      setAnswer(await auth.debugToken({ token: token.trim() }));
    } catch (err) {
      setAnswer(null);
      setError(explain(err));
    }
  }
  return (
    <form class="box" onSubmit={debug} aria-label="Debug a token">
      <h2>Debug a token</h2>
      <label>
        Token
        <input id="debug-token" value={token} autocomplete="off" onInput={(e) => setToken(e.currentTarget.value)} />
      </label>
      <p>
        <button type="submit">Debug</button>
      </p>
      {error && <p class="error" role="alert">{error}</p>}
      {answer && (
        <div id="debug-answer">
          <p>
            {answer.valid ? (
              <span class="badge success">valid now</span>
            ) : (
              <span class="badge failure">not valid: {answer.reason}</span>
            )}
          </p>
          <p>May: {answer.permissions.join(", ") || "nothing"}</p>
          <pre>{JSON.stringify(answer.claims ?? {}, null, 2)}</pre>
        </div>
      )}
    </form>
  );
}

export function Tokens() {
  const revoked = useRevoked();
  const [filter, setFilter] = useState({ type: 0, service: "", createdBy: "", includeRevoked: false });
  const [tokens, setTokens] = useState<TokenInfo[]>([]);
  const [next, setNext] = useState("");
  const [message, setMessage] = useState("");
  const [minted, setMinted] = useState("");
  const [reload, setReload] = useState(0);

  async function page(pageToken: string) {
    try {
      const answer = await auth.listTokens({
        type: filter.type as TokenType,
        service: filter.service,
        createdBy: filter.createdBy,
        includeRevoked: filter.includeRevoked,
        pageSize: PAGE,
        pageToken,
      });
      setTokens((old) => (pageToken ? [...old, ...answer.tokens] : answer.tokens));
      setNext(answer.nextPageToken);
    } catch (err) {
      setMessage(explain(err));
    }
  }
  useEffect(() => void page(""), [filter, reload]);

  return (
    <main>
      <h1>Tokens</h1>
      {minted && <Minted token={minted} onClose={() => setMinted("")} />}
      {message && (
        <p class="notice" role="status" id="tokens-message">
          {message}
        </p>
      )}
      <form class="filters" aria-label="Filter tokens" onSubmit={(e) => e.preventDefault()}>
        <label>
          Type
          <select value={String(filter.type)} onChange={(e) => setFilter({ ...filter, type: Number(e.currentTarget.value) })}>
            <option value="0">all</option>
            {[TokenType.USER, TokenType.SERVICE, TokenType.DEPLOYMENT, TokenType.CONFIG].map((t) => (
              <option key={t} value={String(t)}>
                {TYPE[t]}
              </option>
            ))}
          </select>
        </label>
        <label>
          Service
          <input value={filter.service} onChange={(e) => setFilter({ ...filter, service: e.currentTarget.value })} />
        </label>
        <label>
          Created by
          <input value={filter.createdBy} onChange={(e) => setFilter({ ...filter, createdBy: e.currentTarget.value })} />
        </label>
        <label class="check">
          <input type="checkbox" checked={filter.includeRevoked}
            onChange={(e) => setFilter({ ...filter, includeRevoked: e.currentTarget.checked })} />
          Include revoked
        </label>
      </form>
      <TokenTable tokens={tokens} revoked={revoked} onChange={(m) => (setMessage(m), setReload((r) => r + 1))} />
      {next && (
        <button type="button" class="more" onClick={() => page(next)}>
          Load more tokens
        </button>
      )}
      {session.may("tokens:mint") && <ConfigTokenForm onMinted={(t) => (setMinted(t), setReload((r) => r + 1))} />}
      <AttenuateForm onMinted={(t) => (setMinted(t), setReload((r) => r + 1))} />
      <Debug />
    </main>
  );
}
