#!/usr/bin/env bash
# Rebuilds the console from its locked sources: `npm ci` (package-lock.json), the
# client generated from ../../proto (buf + protoc-gen-es into src/gen), a type check,
# and the bundle in dist/ (build.mjs). Run it after changing a .proto file or
# anything under src/, and commit src/gen and dist: the gateway embeds dist, so
# `cargo build` never needs Node. CI runs it and fails if the result differs from what
# is committed.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
