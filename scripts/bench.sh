#!/usr/bin/env bash
# Side-by-side benchmark: fulcrum vs HAProxy vs NGINX on loopback.
#
#   scripts/bench.sh [tcp|http|tls|udp|all]     (default: all)
#
# The proxy under test is pinned to CPU $PROXY_CPU; load generators and backends to
# $LOAD_CPU. Each proxy runs with one worker/thread. Every figure is the median of
# $ROUNDS rounds, run alternately so drift hits every proxy alike. Besides throughput
# it reports the proxy's own CPU time per request (from /proc/PID/stat), since the
# load generator shares the machine.
#
# Needs (Debian): iperf3 wrk haproxy nginx-light libnginx-mod-stream dnsmasq-base
# dnsperf python3. Installs nothing itself.
set -euo pipefail

SUITE=${1:-all}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CONNS=${CONNS:-50}
IDLE_CONNS=${IDLE_CONNS:-3000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FULCRUM=${FULCRUM:-$ROOT/target/release/fulcrum}

missing=()
for tool in iperf3 wrk haproxy nginx dnsmasq dnsperf python3 taskset openssl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install -y iperf3 wrk haproxy nginx-light libnginx-mod-stream dnsmasq-base dnsperf python3 util-linux" >&2
  exit 2
fi
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$STREAM_MOD" ] || { echo "bench.sh: NGINX stream module missing: apt-get install -y libnginx-mod-stream" >&2; exit 2; }
case "$SUITE" in tcp|udp|http|tls|all) ;; *) echo "bench.sh: unknown suite '$SUITE' (have: tcp, http, tls, udp, all)" >&2; exit 2 ;; esac

# Room for many connections and flows (works as root; otherwise the limits stay).
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${FULCRUM_SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --quiet)
fi

WORK=$(mktemp -d /tmp/fulcrum-bench.XXXXXX)
# nginx workers run as an unprivileged user and must read the web root.
chmod 755 "$WORK"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
cleanup() {
  stop_all
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# A free port below the kernel's ephemeral range, so that no outgoing connection
# (tens of thousands per run) can take it between this check and the server's bind;
# never one handed out before in this run ($WORK/ports).
free_port() {
  python3 - "$WORK/ports" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
try:
    given = set(open(sys.argv[1]).read().split())
except FileNotFoundError:
    given = set()
for _ in range(1000):
    port = random.randrange(10000, max(low, 10001))
    if str(port) in given:
        continue
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            break
        finally:
            s.close()
    else:
        open(sys.argv[1], "a").write(f"{port}\n")
        print(port)
        break
PY
}
wait_port() {
  for _ in $(seq 200); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench.sh: nothing listening on port $1; the servers said:" >&2
  for log in "$WORK"/*.err; do
    [ -s "$log" ] && { echo "--- $(basename "$log")" >&2; tail -n 5 "$log" >&2; }
  done
  exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy and total ticks of CPU $1 so far (from /proc/stat: user to steal; guest time is inside user).
core_ticks() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(v):.2f}")' "$@"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}x" if b else "n/a")' "$1" "$2"; }

echo "fulcrum $("$FULCRUM" --version | awk '{print $2}') | $(haproxy -v | head -1 | awk '{print "HAProxy", $3}') | $(nginx -v 2>&1 | sed 's|.*/|NGINX |') | $(dnsmasq --version | head -1 | awk '{print "dnsmasq", $3}')"
echo "proxy on CPU $PROXY_CPU, load on CPU $LOAD_CPU, $ROUNDS rounds of ${SECS}s, medians"
echo

# Two nginx backends serving a fixed 128-byte body on ports $1 and $2 (load CPU).
start_web() {
  mkdir -p "$WORK/web"
  head -c 128 /dev/zero | tr '\0' 'x' > "$WORK/web/index.html"
  cat > "$WORK/web-$1.conf" <<CONF
worker_processes 1;
pid $WORK/web-$1.pid;
error_log $WORK/web-$1.err;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$1 backlog=4096; root $WORK/web; }
  server { listen 127.0.0.1:$2 backlog=4096; root $WORK/web; }
}
CONF
  taskset -c "$LOAD_CPU" nginx -c "$WORK/web-$1.conf" -g 'daemon off;' 2>/dev/null & PIDS+=($!)
}

# The row named "fulcrum" runs with its access log off, as HAProxy and NGINX do in
# these configs, so the ratios compare like with like; "logging" is the same build
# with its access log on (fulcrum's default). Call after start_quiet and before
# the runs.
headline_quiet() {
  HTTP[logging]=${HTTP[fulcrum]}; PID_logging=$PID_fulcrum
  HTTP[fulcrum]=${HTTP[quiet]}; PID_fulcrum=$PID_quiet
  unset 'HTTP[quiet]'
}

# Starts a copy of fulcrum config $1 with the listener on port $2 moved to $3,
# the bulk listener dropped, and every access log off ("quiet", pid PID_quiet).
start_quiet() {
  python3 - "$1" "$2" "$3" > "$WORK/quiet.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read().replace(f":{sys.argv[2]}\"", f":{sys.argv[3]}\"")
blocks = text.split("[[listener]]")
keep = [b for b in blocks[1:] if f":{sys.argv[3]}\"" in b]
rest = "[[pool]]" + "[[pool]]".join(blocks[-1].split("[[pool]]")[1:])
out = "".join("[[listener]]" + b.split("[[pool]]")[0].rstrip() + "\naccess_log = false\n\n" for b in keep)
print(out + rest)
PY
  taskset -c "$PROXY_CPU" "$FULCRUM" run -c "$WORK/quiet.toml" --workers 1 --log-level info 2>"$WORK/quiet.err" &
  PID_quiet=$!; PIDS+=($PID_quiet)
}

# One wrk run against proxy $1 (port ${HTTP[$1]}, pid $PID_$1; "direct" has no
# proxy pid); prints "rps cpu_us_per_request p99_ms load_core_busy_%".
wrk_run() {
  local proxy=$1; shift
  local pid_var="PID_$proxy" before=0 after=0 out load0 load1
  [ "$proxy" = direct ] || before=$(cpu_ticks "${!pid_var}")
  load0=$(core_ticks "$LOAD_CPU")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" "${SCHEME:-http}://${HOST:-127.0.0.1}:${HTTP[$proxy]}/")
  load1=$(core_ticks "$LOAD_CPU")
  [ "$proxy" = direct ] || after=$(cpu_ticks "${!pid_var}")
  python3 - "$out" "$before" "$after" "$TICK" "$load0" "$load1" <<'PY'
import re, sys
out, before, after, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(busy0, all0), (busy1, all1) = (map(int, a.split()) for a in sys.argv[5:7])
load = 100 * (busy1 - busy0) / max(all1 - all0, 1)
reqs = int(re.search(r"(\d+) requests in", out).group(1))
secs = float(re.search(r"requests in ([\d.]+)s", out).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if bad:
    print(f"wrk: {bad.group(1)} non-2xx responses", file=sys.stderr)
cpu_us = (after - before) / tick * 1e6 / max(reqs, 1)
print(f"{reqs/secs:.0f} {cpu_us:.1f} {float(p99.group(1))*scale:.2f} {load:.0f}")
PY
}

# Alternating wrk rounds against each proxy in $PROXIES (and "direct" if listed),
# then medians and ratios. $1 is the title; the rest goes to wrk.
http_suite() {
  local title=$1; shift
  declare -A RPS CPU P99 LOAD
  for _ in $(seq "$ROUNDS"); do
    for p in $PROXIES; do
      read -r rps cpu p99 load < <(wrk_run "$p" "$@")
      RPS[$p]="${RPS[$p]:-} $rps"; CPU[$p]="${CPU[$p]:-} $cpu"; P99[$p]="${P99[$p]:-} $p99"
      LOAD[$p]="${LOAD[$p]:-} $load"
    done
  done
  echo "== $title (wrk -t1 -c$CONNS)"
  # "core %" is how busy the proxy's own core was (req/s x CPU per request) and
  # "load %" how busy the load core (wrk and the backends) was: where load % is
  # near 100 and core % well under it, the load core set the pace for every row,
  # and "core req/s" (1 s / CPU per request) is what the proxy core alone could carry.
  printf '  %-8s %10s %14s %9s %7s %7s %10s\n' proxy req/s "proxy µs/req" "p99 ms" "core %" "load %" "core req/s"
  declare -A CAP
  for p in $PROXIES; do
    local r c busy=- cap=-
    # shellcheck disable=SC2086
    r=$(median ${RPS[$p]}); c=$(median ${CPU[$p]})
    if [ "$p" = direct ]; then
      c=-
    else
      busy=$(python3 -c "print(f'{$r * $c / 1e4:.0f}')")
      cap=$(python3 -c "print(f'{1e6 / max($c, 0.1):.0f}')")
      CAP[$p]=$cap
    fi
    # shellcheck disable=SC2086
    printf '  %-8s %10s %14s %9s %7s %7s %10s\n' "$p" "$r" "$c" "$(median ${P99[$p]})" "$busy" "$(median ${LOAD[$p]} | cut -d. -f1)" "$cap"
  done
  local line="" caps="" p99s=""
  for p in $PROXIES; do
    # shellcheck disable=SC2086
    p99s="$p99s $p $(median ${P99[$p]}),"
    [ "$p" = fulcrum ] && continue
    # shellcheck disable=SC2086
    line="$line fulcrum/$p $(ratio "$(median ${RPS[fulcrum]})" "$(median ${RPS[$p]})") "
    [ "$p" = direct ] || caps="$caps fulcrum/$p $(ratio "${CAP[fulcrum]}" "${CAP[$p]}") "
  done
  echo "  req/s:$line"
  echo "  core req/s:$caps"
  echo "  p99 ms:${p99s%,}"
  echo
}

suite_tcp() {
P_IPERF=$(free_port); P_WEB1=$(free_port); P_WEB2=$(free_port)
declare -A BULK HTTP
BULK[direct]=$P_IPERF
for p in fulcrum haproxy nginx; do BULK[$p]=$(free_port); HTTP[$p]=$(free_port); done

# --- backends (load CPU) -----------------------------------------------------------
taskset -c "$LOAD_CPU" iperf3 -s -p "$P_IPERF" >/dev/null 2>&1 & PIDS+=($!)
start_web "$P_WEB1" "$P_WEB2"

# --- proxies (proxy CPU) -------------------------------------------------------------
cat > "$WORK/fulcrum.toml" <<CONF
[[listener]]
name = "bulk"
bind = "127.0.0.1:${BULK[fulcrum]}"
pool = "iperf"

[[listener]]
name = "web"
bind = "127.0.0.1:${HTTP[fulcrum]}"
pool = "web"

[[pool]]
name = "iperf"
backends = ["127.0.0.1:$P_IPERF"]

[[pool]]
name = "web"
backends = ["127.0.0.1:$P_WEB1", "127.0.0.1:$P_WEB2"]
CONF
taskset -c "$PROXY_CPU" "$FULCRUM" run -c "$WORK/fulcrum.toml" --workers 1 --log-level info 2>"$WORK/fulcrum.err" &
PID_fulcrum=$!; PIDS+=($PID_fulcrum)
# "quiet": the same fulcrum with its access log off (see headline_quiet).
HTTP[quiet]=$(free_port)
start_quiet "$WORK/fulcrum.toml" "${HTTP[fulcrum]}" "${HTTP[quiet]}"

cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 3s
  timeout client 5m
  timeout server 5m
frontend bulk
  bind 127.0.0.1:${BULK[haproxy]}
  default_backend iperf
frontend web
  bind 127.0.0.1:${HTTP[haproxy]}
  default_backend web
backend iperf
  server s1 127.0.0.1:$P_IPERF
backend web
  balance roundrobin
  server w1 127.0.0.1:$P_WEB1
  server w2 127.0.0.1:$P_WEB2
CONF
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>"$WORK/haproxy.err" &
PID_haproxy=$!; PIDS+=($PID_haproxy)

cat > "$WORK/nginx.conf" <<CONF
load_module $STREAM_MOD;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 9000; }
stream {
  upstream iperf { server 127.0.0.1:$P_IPERF; }
  upstream web { server 127.0.0.1:$P_WEB1; server 127.0.0.1:$P_WEB2; }
  server { listen 127.0.0.1:${BULK[nginx]}; proxy_pass iperf; }
  server { listen 127.0.0.1:${HTTP[nginx]} backlog=4096; proxy_pass web; }
}
CONF
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -g 'daemon off; master_process off;' 2>/dev/null &
PID_nginx=$!; PIDS+=($PID_nginx)

for port in "$P_IPERF" "$P_WEB1" "$P_WEB2" "${BULK[fulcrum]}" "${HTTP[fulcrum]}" "${HTTP[quiet]}" "${BULK[haproxy]}" "${HTTP[haproxy]}" "${BULK[nginx]}" "${HTTP[nginx]}"; do
  wait_port "$port"
done

# --- TCP bulk: iperf3, one stream ------------------------------------------------------
declare -A GBPS
for _ in $(seq "$ROUNDS"); do
  for p in direct fulcrum haproxy nginx; do
    bps=$(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "${BULK[$p]}" -t "$SECS" -J |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
    GBPS[$p]="${GBPS[$p]:-} $bps"
  done
done
echo "== TCP bulk (iperf3 -P1), Gbit/s"
for p in direct fulcrum haproxy nginx; do
  # shellcheck disable=SC2086
  printf '  %-8s %8s\n' "$p" "$(median ${GBPS[$p]})"
done
# shellcheck disable=SC2086
f=$(median ${GBPS[fulcrum]}); h=$(median ${GBPS[haproxy]}); n=$(median ${GBPS[nginx]}); d=$(median ${GBPS[direct]})
echo "  fulcrum/haproxy $(ratio "$f" "$h")  fulcrum/nginx $(ratio "$f" "$n")  fulcrum/direct $(ratio "$f" "$d")"
echo

# --- HTTP through L4: wrk keep-alive and Connection: close ------------------------------
# "direct" is wrk straight to one nginx backend: the most the load core gives any
# proxy, since wrk and nginx do the same work per request with or without one.
HTTP[direct]=$P_WEB1
headline_quiet
PROXIES="direct fulcrum logging haproxy nginx"
http_suite "HTTP keep-alive through L4"
http_suite "New connections (Connection: close)" -H "Connection: close"

# --- Memory per idle proxied connection ------------------------------------------------
echo "== Memory per idle proxied connection ($IDLE_CONNS connections, RSS delta)"
for p in fulcrum haproxy nginx; do
  pid_var="PID_$p"
  kb=$(python3 - "${HTTP[$p]}" "$IDLE_CONNS" "${!pid_var}" <<'PY'
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def settle():
    # RSS stops moving once the proxy has set up every connection.
    last, same = rss(), 0
    while same < 5:
        time.sleep(0.1)
        now = rss()
        same = same + 1 if now == last else 0
        last = now
    return last
# One round: a second one would mostly reuse what the first freed and show
# the allocator's caching, not what a connection costs.
before = settle()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
after = settle()
for c in conns: c.close()
print(f"{(after - before) * 1024 / n:.0f}")
PY
)
  printf '  %-8s %8s bytes/conn\n' "$p" "$kb"
done
echo
stop_all
}

# shellcheck source=scripts/bench-udp.sh
. "$ROOT/scripts/bench-udp.sh"
# shellcheck source=scripts/bench-http.sh
. "$ROOT/scripts/bench-http.sh"
# shellcheck source=scripts/bench-tls.sh
. "$ROOT/scripts/bench-tls.sh"

case "$SUITE" in
  tcp) suite_tcp ;;
  udp) suite_udp ;;
  http) suite_http ;;
  tls) suite_tls ;;
  all) suite_tcp; suite_http; suite_tls; suite_udp ;;
esac
