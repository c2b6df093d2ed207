// A deployment's output (what its script printed), live: WatchDeploymentLog from the
// first kept line, then live lines until the run ends; after a drop it resumes after
// the last line number seen, and a line at or below it is ignored, so nothing is
// missed or doubled. Lines arriving together are applied once per frame, and only the
// rows in view (plus a margin) are in the page, each row one fixed height, so 10,000
// lines or more scroll smoothly. The view follows the end until the reader scrolls up
// (then "Follow" brings it back; End does too). A filter shows the matching lines only;
// Download saves the whole log (read again in pages with GetDeploymentLog) as text.

import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { LogStream, type LogLine } from "../gen/slipway/deploy/v1/deploy_pb.js";
import { deploy, explain } from "../api.js";
import { follow, type Live } from "../util.js";

/** One row's height in CSS pixels: the same as `.output .ln` in style.css. */
const ROW = 20;
/** Rows kept in the page above and below the visible ones. */
const MARGIN = 30;

const END = Symbol("end");

const CLASS: Record<number, string> = {
  [LogStream.STDOUT]: "stdout",
  [LogStream.STDERR]: "stderr",
  [LogStream.MARKER]: "marker",
};

export function Output({ id }: { id: bigint }) {
  const lines = useRef<LogLine[]>([]);
  const lastLine = useRef(0n);
  const pending = useRef<LogLine[]>([]);
  const frame = useRef(0);
  const box = useRef<HTMLDivElement>(null);
  const [count, setCount] = useState(0);
  const [live, setLive] = useState<Live>("connecting");
  const [ended, setEnded] = useState(false);
  const [error, setError] = useState("");
  const [following, setFollowing] = useState(true);
  const [filter, setFilter] = useState("");
  const [scroll, setScroll] = useState({ top: 0, height: 400 });
  const [downloading, setDownloading] = useState(false);

  useEffect(() => {
    const abort = new AbortController();
    lines.current = [];
    pending.current = [];
    lastLine.current = 0n;
    setCount(0);
    setEnded(false);
    const flush = () => {
      frame.current = 0;
      const start = performance.now();
      lines.current.push(...pending.current);
      pending.current = [];
      setCount(lines.current.length);
      // The console bench reads how long applying a batch took (with its render).
      requestAnimationFrame(() => performance.measure("output-batch", { start, end: performance.now() }));
    };
    async function* open({ signal, onHeader }: { signal: AbortSignal; onHeader: () => void }) {
      yield* deploy.watchDeploymentLog({ deploymentId: id, afterLine: lastLine.current }, { signal, onHeader });
      // A clean end is the run's end, or a gateway that stopped: the log says which.
      const page = await deploy.getDeploymentLog({ deploymentId: id, afterLine: lastLine.current, limit: 1 }, { signal });
      if (page.complete && !page.more) yield END;
    }
    void follow(
      abort.signal,
      open,
      (line) => {
        if (line === END) {
          setEnded(true);
          return "stop";
        }
        if (line.line <= lastLine.current) return;
        lastLine.current = line.line;
        pending.current.push(line);
        if (!frame.current) frame.current = requestAnimationFrame(flush);
      },
      (state, why) => {
        setLive(state);
        if (why) setError(why);
      },
    );
    return () => {
      abort.abort();
      cancelAnimationFrame(frame.current);
      frame.current = 0;
    };
  }, [id]);

  // The lines shown: all, or the matching ones (indices into `lines`).
  const needle = filter.trim().toLowerCase();
  const shown = useMemo(() => {
    if (!needle) return null;
    const at: number[] = [];
    lines.current.forEach((l, i) => l.text.toLowerCase().includes(needle) && at.push(i));
    return at;
  }, [needle, count]);
  const total = shown ? shown.length : count;

  // Following: the end stays in view as lines arrive.
  useLayoutEffect(() => {
    const el = box.current;
    if (el && following) el.scrollTop = el.scrollHeight;
  }, [total, following]);

  function onScroll() {
    const el = box.current;
    if (!el) return;
    setScroll({ top: el.scrollTop, height: el.clientHeight });
    const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - ROW;
    if (atEnd !== following) setFollowing(atEnd);
  }

  async function download() {
    setDownloading(true);
    try {
      const parts: string[] = [];
      let after = 0n;
      for (;;) {
        const page = await deploy.getDeploymentLog({ deploymentId: id, afterLine: after, limit: 5000 });
        for (const l of page.lines) parts.push(l.text, "\n");
        if (!page.more || page.lines.length === 0) break;
        after = page.lines[page.lines.length - 1].line;
      }
      const url = URL.createObjectURL(new Blob(parts, { type: "text/plain;charset=utf-8" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `deployment-${id}.log`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      setError(explain(err));
    } finally {
      setDownloading(false);
    }
  }

  const first = Math.max(0, Math.floor(scroll.top / ROW) - MARGIN);
  const last = Math.min(total, Math.ceil((scroll.top + scroll.height) / ROW) + MARGIN);
  const rows: LogLine[] = [];
  for (let i = first; i < last; i++) {
    const line = lines.current[shown ? shown[i] : i];
    if (line) rows.push(line);
  }
  const lastNumber = count > 0 ? String(lines.current[count - 1].line) : "0";

  return (
    <section class="output-panel" aria-labelledby="output-title">
      <div class="title">
        <h2 id="output-title">Output</h2>
        <span class={`live ${ended ? "ended" : live}`} id="output-live" data-state={ended ? "ended" : live}>
          {ended ? "ended" : live}
        </span>
      </div>
      <div class="output-tools">
        <input
          type="search"
          id="output-filter"
          aria-label="Filter the output"
          placeholder="Filter"
          value={filter}
          onInput={(e) => setFilter(e.currentTarget.value)}
        />
        {!following && (
          <button type="button" id="output-follow" class="small" onClick={() => setFollowing(true)}>
            Follow ↓
          </button>
        )}
        <button type="button" id="output-download" class="small" onClick={download} disabled={downloading || count === 0}>
          {downloading ? "Preparing…" : "Download"}
        </button>
        <span class="muted" id="output-count" aria-live="polite">
          {shown ? `${shown.length} of ${count} lines` : `${count} lines`}
        </span>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      <div
        class="output"
        id="output"
        ref={box}
        tabIndex={0}
        role="region"
        aria-label="Deployment output (arrow keys scroll, End follows)"
        data-lines={count}
        data-last-line={lastNumber}
        data-following={String(following)}
        data-ended={String(ended)}
        onScroll={onScroll}
      >
        {total === 0 ? (
          <p class="muted empty">{count === 0 ? (ended ? "No output." : "No output yet.") : "No line matches."}</p>
        ) : (
          <div class="rows" style={{ height: `${total * ROW}px` }}>
            <div class="window" style={{ transform: `translateY(${first * ROW}px)` }}>
              {rows.map((l) => (
                <div key={String(l.line)} class={`ln ${CLASS[l.stream] ?? "stdout"}`} data-line={String(l.line)}>
                  <span class="no" aria-hidden="true">
                    {String(l.line)}
                  </span>
                  {l.stream === LogStream.STDERR && <span class="sr">stderr: </span>}
                  <span class="text">{l.text}</span>
                </div>
              ))}
            </div>
          </div>
        )}
      </div>
    </section>
  );
}
