// Users and signing keys: create a user, disable, enable or delete one by name (there
// is no list of users to read), change one's own password; the signing keys' ids and
// rotate.

import { useEffect, useState } from "preact/hooks";
import type { Jwk } from "../gen/slipway/auth/v1/auth_pb.js";
import { auth, explain } from "../api.js";
import { session } from "../session.js";

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

function Admin() {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [target, setTarget] = useState("");
  const { message, run } = useForm();
  return (
    <>
      <form class="box" aria-label="Create a user"
        onSubmit={(e) => (e.preventDefault(), run(async () => `Created ${(await auth.createUser({ name, password })).name}.`))}>
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
      {message && <p class="notice" role="status">{message}</p>}
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
  return (
    <main>
      <h1>Users and keys</h1>
      {session.may("users:write") && <Admin />}
      <Password />
      <Keys />
    </main>
  );
}
