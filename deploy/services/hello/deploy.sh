#!/bin/sh
# Example deploy script: Slipway runs it as `deploy.sh --config <file>` and reads each
# JSON line on stdout as a step report; other lines are log output.
set -eu
for step in build migrate restart; do
  echo "working on $step"
  sleep 1
  printf '{"name": "%s", "state": "success", "message": "%s done"}\n' "$step" "$step"
done
