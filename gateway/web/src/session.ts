// The session: the user token (in memory, and in sessionStorage so a reload keeps it),
// when it expires, who it is and what it may do. Screens read it and subscribe to its
// changes; `end` sends the console back to login with the reason shown there.

export type Permissions = ReadonlySet<string>;

type State = {
  token: string;
  expiresAt: number; // ms since the epoch
  user: string;
  permissions: Permissions;
};

const KEY = "slipway.session";
let state: State | null = null;
let reason = "";
let warnTimer = 0;
let endTimer = 0;
const listeners = new Set<() => void>();

function notify() {
  for (const listener of listeners) listener();
}

function schedule() {
  clearTimeout(warnTimer);
  clearTimeout(endTimer);
  if (!state) return;
  const left = state.expiresAt - Date.now();
  warnTimer = window.setTimeout(notify, Math.max(0, left - 60_000));
  endTimer = window.setTimeout(() => session.end("Your session expired; log in again."), Math.max(0, left));
}

export const session = {
  token: () => state?.token ?? "",
  user: () => state?.user ?? "",
  expiresAt: () => state?.expiresAt ?? 0,
  /** The reason the last session ended, for the login page. */
  reason: () => reason,
  active: () => state !== null,
  may: (permission: string) => state?.permissions.has(permission) ?? false,
  /** Under a minute left. */
  expiring: () => state !== null && state.expiresAt - Date.now() <= 60_000,

  start(token: string, expiresAt: number, user: string, permissions: string[]) {
    state = { token, expiresAt, user, permissions: new Set(permissions) };
    reason = "";
    sessionStorage.setItem(KEY, JSON.stringify({ ...state, permissions }));
    schedule();
    notify();
  },

  /** The session kept in sessionStorage, if any and not expired. */
  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
      if (saved && typeof saved.token === "string" && saved.expiresAt > Date.now()) {
        state = { ...saved, permissions: new Set(saved.permissions) };
        schedule();
      }
    } catch {
      sessionStorage.removeItem(KEY);
    }
  },

  end(why: string) {
    if (!state) return;
    state = null;
    reason = why;
    sessionStorage.removeItem(KEY);
    schedule();
    notify();
  },

  subscribe(listener: () => void): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
