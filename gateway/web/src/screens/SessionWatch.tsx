// Starts the session's live streams (store.ts) when the app mounts, stops them on logout.

import { useEffect } from "preact/hooks";
import { start, stop } from "../store.js";

export function SessionWatch() {
  useEffect(() => {
    start();
    return stop;
  }, []);
  return null;
}

