#!/usr/bin/env bash
# Runs the client tests against a real flowtrace: started from the given binary on a throwaway embedded cluster and
# a free loopback port, stopped (with its cluster) at the end, pass or fail.
#   bash clients/run-tests.sh path/to/flowtrace
set -euo pipefail
binary="$(realpath "${1:?usage: run-tests.sh path/to/flowtrace}")"
cd "$(dirname "$0")"

tmp="$(mktemp -d)"
# As root the embedded cluster runs as the `postgres` user, which must reach its folder inside this one.
chmod 755 "$tmp"
log="$tmp/server.log"
"$binary" --data-dir "$tmp/data" serve --bind 127.0.0.1:0 >"$log" 2>&1 &
server=$!
stop() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$tmp"
}
trap stop EXIT

url=""
for _ in $(seq 120); do
  if ! kill -0 "$server" 2>/dev/null; then
    cat "$log" >&2
    echo "flowtrace exited before it listened" >&2
    exit 1
  fi
  url="$(sed -n 's|.*flowtrace listening on \(http://[0-9.:]*\).*|\1|p' "$log" | head -n 1)"
  [ -n "$url" ] && break
  sleep 0.5
done
if [ -z "$url" ]; then
  cat "$log" >&2
  echo "flowtrace did not listen within 60 s" >&2
  exit 1
fi

npm ci --no-audit --no-fund --loglevel=error
FLOWTRACE_URL="$url/graphql" npm test
