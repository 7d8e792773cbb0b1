#!/usr/bin/env bash
# A fault run through an L7 listener: three nginx backends at RATE requests a
# second (h2load --h1, 20 clients), one of them made to answer 503 to everything,
# then to hang (its requests go to a listener that never answers). Each phase
# runs twice: fulcrum with its defaults, and with retry_on = ["503", "504",
# "reset"], try_timeout = "500ms" and eject_after_5xx = 3. Prints, per phase and
# config, what the clients saw: responses by class and requests that never got
# one.
#
#   scripts/fault-run.sh [FULCRUM]        needs nginx and h2load (nghttp2-client)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FULCRUM=${1:-$ROOT/target/release/fulcrum}
RATE=${RATE:-2000}
SECS=${SECS:-10}
for tool in nginx h2load python3; do
  command -v "$tool" >/dev/null || { echo "fault-run.sh: needs $tool" >&2; exit 2; }
done
WORK=$(mktemp -d /tmp/fulcrum-fault.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
P1=$(port); P2=$(port); P3=$(port); HANG=$(port); FRONT=$(port)

# A listener that accepts (in the kernel's backlog) and never reads or answers.
python3 -c "
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', $HANG)); s.listen(4096)
time.sleep(10**6)" & PIDS+=($!)

# $1: what the third backend does: ok | 503 | hang
backends() {
  local third
  case "$1" in
    ok) third="return 200 \"ok\";" ;;
    503) third="return 503;" ;;
    hang) third="proxy_pass http://127.0.0.1:$HANG; proxy_read_timeout 1h;" ;;
  esac
  cat > "$WORK/web.conf" <<CONF
worker_processes 1;
pid $WORK/web.pid;
error_log $WORK/web.err;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$P1; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$P2; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$P3; location / { $third } }
}
CONF
  if [ -f "$WORK/web.pid" ]; then nginx -c "$WORK/web.conf" -s reload 2>/dev/null; sleep 0.5; else
    nginx -c "$WORK/web.conf" -g 'daemon off;' 2>/dev/null & PIDS+=($!); wait_port "$P3"; fi
}

# $1: extra listener keys, $2: extra pool keys
front() {
  cat > "$WORK/front.toml" <<CONF
[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:$FRONT"
pool = "web"
access_log = false
request_timeout = "5s"
$1

[[pool]]
name = "web"
backends = ["127.0.0.1:$P1", "127.0.0.1:$P2", "127.0.0.1:$P3"]
$2
CONF
  "$FULCRUM" run -c "$WORK/front.toml" --workers 1 --log-level error 2>>"$WORK/fulcrum.err" &
  FPID=$!; PIDS+=($FPID)
  wait_port "$FRONT"
}

run() {
  local label=$1 out
  out=$(h2load --h1 -t1 -c20 --rps $((RATE / 20)) -D "$SECS" -N 6s "http://127.0.0.1:$FRONT/" 2>&1 || true)
  python3 - "$label" "$out" <<'PY'
import re, sys
label, out = sys.argv[1], sys.argv[2]
req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
total, started, done = int(req.group(1)), int(req.group(2)), int(req.group(3))
ok, bad = int(codes.group(1)), int(codes.group(4))
lost = started - done + int(req.group(6)) + int(req.group(7))
err = 100.0 * (bad + lost) / max(started, 1)
print(f"  {label:<42} {started:>7} sent {ok:>7} 2xx {bad:>6} 5xx {lost:>6} unanswered  {err:5.1f}% errors")
PY
}

echo "fault run: 3 backends, ${RATE} req/s offered for ${SECS}s per phase (h2load --h1 -c20)"
for phase in ok 503 hang; do
  backends "$phase"
  echo "third backend: $phase"
  front "" ""
  run "defaults"
  kill "$FPID"; wait "$FPID" 2>/dev/null || true
  front 'retry_on = ["503", "504", "reset"]
try_timeout = "500ms"' 'eject_after_5xx = 3'
  run "retry_on + try_timeout + eject_after_5xx"
  kill "$FPID"; wait "$FPID" 2>/dev/null || true
done
