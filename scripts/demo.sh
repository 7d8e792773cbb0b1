#!/usr/bin/env bash
# fulcrum demo: three local backends, one fulcrum in front with weights 1:1:3,
# 20 connections through it, and the split they took. Needs only cargo and bash.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

echo "building fulcrum (release)..."
cargo build --release --quiet --bin fulcrum --example hello_backend
BIN=target/release
WORK=$(mktemp -d /tmp/fulcrum-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

backends=()
for name in alpha beta gamma; do
  "$BIN/examples/hello_backend" "$name" > "$WORK/$name.addr" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$WORK/$name.addr" ] && break; sleep 0.05; done
  backends+=("$(cat "$WORK/$name.addr")")
done
echo "backends: alpha=${backends[0]} beta=${backends[1]} gamma=${backends[2]} (weights 1, 1, 3)"

"$BIN/fulcrum" tcp --listen 127.0.0.1:0 --workers 1 \
  --backend "${backends[0]}" --backend "${backends[1]}" --backend "${backends[2]},weight=3" \
  2> "$WORK/fulcrum.log" &
PIDS+=($!)
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening.* addr=\([0-9.:]*\).*/\1/p' "$WORK/fulcrum.log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.05
done
[ -n "$addr" ] || { echo "fulcrum did not start:"; cat "$WORK/fulcrum.log"; exit 1; }
echo "fulcrum listening on $addr (round-robin, smooth weighted)"
echo

host=${addr%:*}; port=${addr##*:}
declare -A count
for i in $(seq 20); do
  exec 3<>"/dev/tcp/$host/$port"
  read -r line <&3
  exec 3<&-
  printf '%2d  %s\n' "$i" "$line"
  name=${line##* }
  count[$name]=$(( ${count[$name]:-0} + 1 ))
done
echo
echo "split over 20 connections: alpha=${count[alpha]:-0} beta=${count[beta]:-0} gamma=${count[gamma]:-0} (expected 4, 4, 12)"
