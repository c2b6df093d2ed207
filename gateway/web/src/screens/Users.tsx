// Users and signing keys: create a user; every user (ListUsers, paged) with disable,
// enable and delete on each row (by name for a token that may not list users); change
// one's own password; the signing keys' ids and rotate.

import { useEffect, useState } from "preact/hooks";
import type { Jwk, User } from "../gen/slipway/auth/v1/auth_pb.js";
import { auth, explain } from "../api.js";
import { session } from "../session.js";
import { useStore } from "../store.js";
import { when } from "../util.js";

const PAGE = 50;

function useForm() {
  const [message, setMessage] = useState("");
  const run = async (action: () => Promise<string>) => {
    try {
      setMessage(await action());
    } catch (err) {
      setMessage(explain(err));
    }
  };
  return { message, run };
}

/** Every user, by name, paged, with disable, enable and delete on each row. */
function UserList({ reload, run }: { reload: number; run: (action: () => Promise<string>) => Promise<void> }) {
  const [users, setUsers] = useState<User[]>([]);
  const [next, setNext] = useState("");
  const [error, setError] = useState("");
  const [again, setAgain] = useState(0);

  /** Reads the pages up to `upTo` (at least one), so a refresh keeps the rows shown. */
  async function load(upTo: number) {
    try {
      const all: User[] = [];
      let pageToken = "";
      do {
        const page = await auth.listUsers({ pageSize: PAGE, pageToken });
        all.push(...page.users);
        pageToken = page.nextPageToken;
      } while (pageToken && all.length < upTo);
      setUsers(all);
      setNext(pageToken);
      setError("");
    } catch (err) {
      setError(explain(err));
    }
  }

  useEffect(() => void load(Math.max(users.length, 1)), [reload, again]);

  async function more() {
    try {
      const page = await auth.listUsers({ pageSize: PAGE, pageToken: next });
      setUsers((old) => [...old, ...page.users.filter((u) => !old.some((o) => o.name === u.name))]);
      setNext(page.nextPageToken);
    } catch (err) {
      setError(explain(err));
    }
  }

  const act = (action: () => Promise<string>) => run(action).then(() => setAgain((a) => a + 1));
  const write = session.may("users:write");
  return (
    <section class="box" aria-label="Users">
      <h2>Users</h2>
      {error && <p class="error" role="alert">{error}</p>}
      <table class="list" id="users">
        <thead>
          <tr>
            <th>Name</th>
            <th class="hide-narrow">Created</th>
            <th>Status</th>
            {write && <th>Actions</th>}
          </tr>
        </thead>
        <tbody>
          {users.map((u) => {
            const self = u.name === session.user();
            return (
              <tr key={u.name} data-user={u.name} data-disabled={u.disabledAt ? "true" : "false"}>
                <td>{u.name}{self && " (you)"}</td>
                <td class="hide-narrow">{when(u.createdAt)}</td>
                <td>{u.disabledAt ? `disabled ${when(u.disabledAt)} by ${u.disabledBy}` : "enabled"}</td>
                {write && (
                  <td class="row">
                    {!self && !u.disabledAt && (
                      <button type="button" data-action="disable" onClick={() => act(async () => {
                        const answer = await auth.disableUser({ name: u.name });
                        return `Disabled ${u.name}; ${answer.revokedTokens} token(s) revoked.`;
                      })}>Disable</button>
                    )}
                    {!self && u.disabledAt && (
                      <button type="button" data-action="enable"
                        onClick={() => act(async () => (await auth.enableUser({ name: u.name }), `Enabled ${u.name}.`))}>
                        Enable
                      </button>
                    )}
                    {!self && (
                      <button type="button" class="danger" data-action="delete" onClick={() => {
                        if (!confirm(`Delete the user ${u.name} and revoke every token they hold or minted?`)) return;
                        void act(async () =>
                          `Deleted ${u.name}; ${(await auth.deleteUser({ name: u.name })).revokedTokens} token(s) revoked.`);
                      }}>Delete</button>
                    )}
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      {next && (
        <button type="button" class="more" onClick={() => void more()}>
          More users
        </button>
      )}
    </section>
  );
}

/** Disable, enable or delete a user by name, for a token that may not list users. */
function ByName({ run }: { run: (action: () => Promise<string>) => Promise<void> }) {
  const [target, setTarget] = useState("");
  return (
    <form class="box" aria-label="Disable, enable or delete a user" onSubmit={(e) => e.preventDefault()}>
      <h2>Disable, enable or delete a user</h2>
      <label>
        Name
        <input id="target-user" value={target} onInput={(e) => setTarget(e.currentTarget.value)} />
      </label>
      <p class="row">
        <button type="button" onClick={() => run(async () => {
          const answer = await auth.disableUser({ name: target });
          return `Disabled ${target}; ${answer.revokedTokens} token(s) revoked.`;
        })}>Disable</button>
        <button type="button" onClick={() => run(async () => (await auth.enableUser({ name: target }), `Enabled ${target}.`))}>
          Enable
        </button>
        <button type="button" class="danger" onClick={() => {
          if (!confirm(`Delete the user ${target} and revoke every token they hold or minted?`)) return;
          void run(async () => `Deleted ${target}; ${(await auth.deleteUser({ name: target })).revokedTokens} token(s) revoked.`);
        }}>Delete</button>
      </p>
    </form>
  );
}

function Admin() {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [reload, setReload] = useState(0);
  const { message, run } = useForm();
  return (
    <>
      {session.may("users:write") && (
        <form class="box" aria-label="Create a user"
          onSubmit={(e) => (e.preventDefault(), run(async () => {
            const created = await auth.createUser({ name, password });
            setReload((r) => r + 1);
            return `Created ${created.name}.`;
          }))}>
          <h2>Create a user</h2>
          <div class="fields">
            <label>
              Name
              <input id="new-user" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
            </label>
            <label>
              Password
              <input id="new-password" type="password" autocomplete="new-password" required value={password}
                onInput={(e) => setPassword(e.currentTarget.value)} />
            </label>
          </div>
          <button type="submit" class="primary">Create</button>
        </form>
      )}
      {message && <p class="notice" role="status">{message}</p>}
      {session.may("users:read") ? (
        <UserList reload={reload} run={run} />
      ) : (
        session.may("users:write") && <ByName run={run} />
      )}
    </>
  );
}

function Password() {
  const [old, setOld] = useState("");
  const [fresh, setFresh] = useState("");
  const { message, run } = useForm();
  return (
    <form class="box" aria-label="Change your password"
      onSubmit={(e) => (e.preventDefault(), run(async () => {
        const answer = await auth.changePassword({ oldPassword: old, newPassword: fresh });
        session.end(`Password changed; ${answer.revokedTokens} token(s) revoked. Log in with the new password.`);
        return "";
      }))}>
      <h2>Change your password</h2>
      <div class="fields">
        <label>
          Current password
          <input type="password" autocomplete="current-password" required value={old} onInput={(e) => setOld(e.currentTarget.value)} />
        </label>
        <label>
          New password
          <input type="password" autocomplete="new-password" required value={fresh} onInput={(e) => setFresh(e.currentTarget.value)} />
        </label>
      </div>
      <button type="submit">Change</button>
      {message && <p class="notice" role="status">{message}</p>}
    </form>
  );
}

function Keys() {
  const [keys, setKeys] = useState<Jwk[]>([]);
  const [reload, setReload] = useState(0);
  const { message, run } = useForm();
  useEffect(() => {
    auth.getJwks({}).then((jwks) => setKeys(jwks.keys)).catch(explain);
  }, [reload]);
  return (
    <section class="box" aria-label="Signing keys">
      <h2>Signing keys</h2>
      <ul id="keys">
        {keys.map((k) => (
          <li key={k.kid}>
            <code>{k.kid}</code> {k.alg} {k.crv}
          </li>
        ))}
      </ul>
      {session.may("keys:rotate") && (
        <button type="button" onClick={() => run(async () => {
          const answer = await auth.rotateKeys({});
          setReload((r) => r + 1);
          return `Now signing with ${answer.kid}; older keys verify until their tokens expire.`;
        })}>
          Rotate
        </button>
      )}
      {message && <p class="notice" role="status">{message}</p>}
    </section>
  );
}

export function Users() {
  // The session's feeds stay open here too: a token revoked elsewhere ends them, and
  // so the session, at once.
  useStore();
  return (
    <main>
      <h1>Users and keys</h1>
      {(session.may("users:write") || session.may("users:read")) && <Admin />}
      <Password />
      <Keys />
    </main>
  );
}
