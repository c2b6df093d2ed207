// Pieces of the token screens: a token's status, the count of the tokens derived from
// one (what a revocation takes with it), the list with Revoke, and a minted token
// shown once with a copy button.

import { useEffect, useState } from "preact/hooks";
import { type TokenInfo, TokenType } from "./gen/slipway/auth/v1/auth_pb.js";
import { auth, explain } from "./api.js";
import { session } from "./session.js";
import { follow, ms, when } from "./util.js";

export const TYPE: Record<number, string> = {
  [TokenType.UNSPECIFIED]: "?",
  [TokenType.USER]: "user",
  [TokenType.SERVICE]: "service",
  [TokenType.DEPLOYMENT]: "deployment",
  [TokenType.CONFIG]: "config",
};

export function status(t: TokenInfo, revoked: ReadonlySet<string>): string {
  if (t.revokedAt || revoked.has(t.id)) return "revoked";
  if (t.expiresAt && ms(t.expiresAt) <= Date.now()) return "expired";
  return "active";
}

/** Every token not revoked, all pages: to count what a revocation takes with it. */
async function allActive(): Promise<TokenInfo[]> {
  const all: TokenInfo[] = [];
  let pageToken = "";
  do {
    const page = await auth.listTokens({ pageSize: 500, pageToken });
    all.push(...page.tokens);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}

/** How many tokens derive from `id` (children, their children, …), not revoked yet. */
export async function derivedCount(id: string): Promise<number> {
  const children = new Map<string, string[]>();
  for (const t of await allActive()) {
    if (!t.parentId) continue;
    children.set(t.parentId, [...(children.get(t.parentId) ?? []), t.id]);
  }
  let count = 0;
  const todo = [...(children.get(id) ?? [])];
  const seen = new Set<string>();
  while (todo.length) {
    const next = todo.pop()!;
    if (seen.has(next)) continue;
    seen.add(next);
    count += 1;
    todo.push(...(children.get(next) ?? []));
  }
  return count;
}

/** The ids revoked, live from the revocation feed (a snapshot, then each batch). */
export function useRevoked(): ReadonlySet<string> {
  const [revoked, setRevoked] = useState<ReadonlySet<string>>(new Set());
  useEffect(() => {
    const abort = new AbortController();
    let after = 0n;
    void follow(
      abort.signal,
      ({ signal, onHeader }) => auth.watchRevocations({ afterSequence: after }, { signal, onHeader }),
      (event) => {
        after = event.sequence > after ? event.sequence : after;
        setRevoked((old) => new Set([...old, ...event.tokenIds]));
      },
      () => {},
    );
    return () => abort.abort();
  }, []);
  return revoked;
}

function RevokeButton({ token, onDone }: { token: TokenInfo; onDone: (message: string) => void }) {
  const [asking, setAsking] = useState<number | null>(null);
  const [busy, setBusy] = useState(false);
  const label = token.name || token.id.slice(0, 8);

  async function ask() {
    setBusy(true);
    try {
      setAsking(await derivedCount(token.id));
    } catch (err) {
      onDone(explain(err));
    } finally {
      setBusy(false);
    }
  }

  async function revoke() {
    setBusy(true);
    try {
      const answer = await auth.revokeTokens({ ids: [token.id] });
      onDone(`Revoked ${label} and ${answer.revokedIds.length - 1} derived token(s).`);
      setAsking(null);
    } catch (err) {
      onDone(explain(err));
    } finally {
      setBusy(false);
    }
  }

  if (asking === null)
    return (
      <button type="button" class="danger small revoke" onClick={ask} disabled={busy} aria-label={`Revoke ${label}`}>
        Revoke
      </button>
    );
  return (
    <span class="ask" role="group" aria-label={`Confirm revoking ${label}`}>
      <span class="derived" data-derived={asking}>
        {asking === 0 ? "No derived token." : `${asking} derived token${asking === 1 ? "" : "s"} go${asking === 1 ? "es" : ""} with it.`}
      </span>{" "}
      <button type="button" class="danger small confirm-revoke" onClick={revoke} disabled={busy}>
        Revoke
      </button>{" "}
      <button type="button" class="small" onClick={() => setAsking(null)}>
        Keep
      </button>
    </span>
  );
}

export function TokenTable(props: { tokens: TokenInfo[]; revoked: ReadonlySet<string>; onChange: (message: string) => void }) {
  const mayRevoke = session.may("tokens:revoke");
  if (props.tokens.length === 0) return <p>No token.</p>;
  return (
    <table class="list tokens" id="tokens">
      <thead>
        <tr>
          <th>Name</th>
          <th>Type</th>
          <th>Service</th>
          <th class="hide-narrow">Origin</th>
          <th class="hide-narrow">Created by</th>
          <th class="hide-narrow">Created</th>
          <th class="hide-narrow">Expires</th>
          <th>Status</th>
          {mayRevoke && <th><span class="sr">Actions</span></th>}
        </tr>
      </thead>
      <tbody>
        {props.tokens.map((t) => {
          const state = status(t, props.revoked);
          return (
            <tr key={t.id} data-token={t.id} data-name={t.name} data-status={state}>
              <td title={t.id}>{t.name || <span class="muted">{t.id.slice(0, 8)}</span>}</td>
              <td>{TYPE[t.type]}</td>
              <td>{t.service}</td>
              <td class="hide-narrow">{t.origin}</td>
              <td class="hide-narrow">{t.createdBy}</td>
              <td class="hide-narrow">{when(t.createdAt)}</td>
              <td class="hide-narrow">{when(t.expiresAt)}</td>
              <td>
                <span class={`badge ${state === "active" ? "success" : "failure"}`}>{state}</span>
              </td>
              {mayRevoke && <td>{state === "active" && <RevokeButton token={t} onDone={props.onChange} />}</td>}
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

/** A token just minted: shown once, with a copy button. */
export function Minted({ token, onClose }: { token: string; onClose: () => void }) {
  const [copied, setCopied] = useState("");
  async function copy() {
    try {
      await navigator.clipboard.writeText(token);
      setCopied("Copied.");
    } catch {
      setCopied("Copy failed: select the token and copy it.");
    }
  }
  return (
    <section class="minted" role="status" aria-label="New token">
      <p>
        <strong>Copy this token now:</strong> it is shown once.
      </p>
      <code id="minted-token" tabIndex={0}>
        {token}
      </code>
      <p>
        <button type="button" id="copy-token" onClick={copy}>
          Copy
        </button>{" "}
        <button type="button" onClick={onClose}>
          Done
        </button>{" "}
        <span>{copied}</span>
      </p>
    </section>
  );
}
