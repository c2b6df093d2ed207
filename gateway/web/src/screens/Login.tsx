// Log in with name and password (the auth service's Login); then read who the token
// is (WhoAmI) and what it may do (DebugToken on itself) so screens offer only that.

import { useEffect, useState } from "preact/hooks";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { auth } from "../api.js";
import { session } from "../session.js";
import { ConnectError } from "@connectrpc/connect";
import { mark } from "../util.js";

export function Login() {
  const [name, setName] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  useEffect(() => mark("console:login-ready"), []);

  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError("");
    try {
      const login = await auth.login({ username: name, password });
      const token = login.accessToken;
      const headers = { authorization: `Bearer ${token}` };
      const [me, debug] = await Promise.all([auth.whoAmI({}, { headers }), auth.debugToken({ token }, { headers })]);
      const expires = login.expiresAt ? timestampMs(login.expiresAt) : Date.now() + 3600_000;
      session.start(token, expires, me.name, debug.permissions);
    } catch (err) {
      setError(ConnectError.from(err).rawMessage);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="login">
      <h1>Slipway</h1>
      {session.reason() && (
        <p class="notice" id="login-reason" role="status">
          {session.reason()}
        </p>
      )}
      <form onSubmit={submit} aria-label="Log in">
        <label>
          Name
          <input id="username" name="username" autocomplete="username" required value={name}
            onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Password
          <input id="password" name="password" type="password" autocomplete="current-password" required
            value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
        </label>
        {error && (
          <p class="error" id="login-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" id="login" disabled={busy}>
          Log in
        </button>
      </form>
    </main>
  );
}
