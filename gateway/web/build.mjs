// Bundles the console into dist/: app-[hash].js and app-[hash].css (minified, content
// hashed, so the gateway serves them as immutable), index.html naming them, and a
// gzip copy of each (fflate: pure JavaScript, so the bytes are the same on every
// machine and CI can check the committed build is what the locked sources make).

import { build } from "esbuild";
import { gzipSync } from "fflate";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

const dist = "dist";
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets"), { recursive: true });

const result = await build({
  entryPoints: { app: "src/main.tsx", style: "src/style.css" },
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  legalComments: "none",
  charset: "utf8",
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = outputs.find((f) => f.startsWith("app-") && f.endsWith(".js"));
const css = outputs.find((f) => f.startsWith("style-") && f.endsWith(".css"));
const html = readFileSync("src/index.html", "utf8")
  .replace("%SCRIPT%", `/ui/assets/${js}`)
  .replace("%STYLE%", `/ui/assets/${css}`);
writeFileSync(join(dist, "index.html"), html);

let jsGzip = 0;
for (const file of ["index.html", `assets/${js}`, `assets/${css}`]) {
  const bytes = readFileSync(join(dist, file));
  const gz = gzipSync(bytes, { level: 9, mtime: 0 });
  writeFileSync(join(dist, `${file}.gz`), gz);
  if (file.endsWith(".js")) jsGzip = gz.length;
  console.log(`${file}: ${bytes.length} bytes, ${gz.length} gzipped`);
}
const budget = 150 * 1024;
if (jsGzip > budget) {
  console.error(`the console's JavaScript is ${jsGzip} bytes gzipped, over the ${budget} budget`);
  process.exit(1);
}
