// The console's shell: the session (login or the app), the header with the screens
// the token may see, the expiry banner, and the screen of the current path.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { session } from "./session.js";
import { Link, navigate, useRoute } from "./util.js";
import { Login } from "./screens/Login.js";
import { Services } from "./screens/Services.js";
import { ServicePage } from "./screens/Service.js";
import { Deployments } from "./screens/Deployments.js";
import { DeploymentPage } from "./screens/Deployment.js";
import { SessionWatch } from "./screens/SessionWatch.js";
import { Tokens } from "./screens/Tokens.js";
import { Users } from "./screens/Users.js";

function useSession() {
  const [, setTick] = useState(0);
  useEffect(() => session.subscribe(() => setTick((t) => t + 1)), []);
}

function Screen() {
  const { path, query } = useRoute();
  const parts = path.split("/").filter(Boolean);
  if (parts.length === 0) return <Services />;
  if (parts[0] === "services" && parts.length === 2) return <ServicePage name={parts[1]} />;
  if (parts[0] === "tokens" && parts.length === 1) return <Tokens />;
  if (parts[0] === "users" && parts.length === 1) return <Users />;
  if (parts[0] === "deployments" && parts.length === 1) return <Deployments query={query} />;
  if (parts[0] === "deployments" && parts.length === 2 && /^\d+$/.test(parts[1]))
    return <DeploymentPage id={BigInt(parts[1])} />;
  return (
    <main>
      <h1>Not found</h1>
      <p>
        Nothing here. <Link to="">Back to the services</Link>
      </p>
    </main>
  );
}

function Banner() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const id = setInterval(() => setTick((t) => t + 1), 1000);
    return () => clearInterval(id);
  }, []);
  if (!session.expiring()) return null;
  const left = Math.max(0, Math.round((session.expiresAt() - Date.now()) / 1000));
  return (
    <div class="banner" role="alert" id="expiry-banner">
      Your session expires in {left} s. Save your work and log in again.
    </div>
  );
}

function App() {
  useSession();
  const { path } = useRoute();
  if (!session.active()) return <Login />;
  const here = path.split("/")[0];
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span class="brand">Slipway</span>
        <nav aria-label="Screens">
          {session.may("services:read") && (
            <Link to="" aria-current={here === "" || here === "services" ? "page" : undefined}>
              Services
            </Link>
          )}
          {session.may("deployments:read") && (
            <Link to="deployments" aria-current={here === "deployments" ? "page" : undefined}>
              Deployments
            </Link>
          )}
          {session.may("tokens:read") && (
            <Link to="tokens" aria-current={here === "tokens" ? "page" : undefined}>
              Tokens
            </Link>
          )}
          <Link to="users" aria-current={here === "users" ? "page" : undefined}>
            Users & keys
          </Link>
        </nav>
        <span class="user" id="user">
          {session.user()}
        </span>
        <button
          type="button"
          id="logout"
          onClick={() => {
            session.end("You logged out.");
            navigate("");
          }}
        >
          Log out
        </button>
      </header>
      <Banner />
      <SessionWatch />
      <div id="main">
        <Screen />
      </div>
    </>
  );
}

session.restore();
render(<App />, document.getElementById("app")!);
