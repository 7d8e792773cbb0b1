#!/usr/bin/env bash
# Side-by-side benchmark: fulcrum vs HAProxy vs NGINX on loopback, at an equal CPU budget.
#
#   scripts/bench.sh [--json FILE] [tcp|http|tls|grpc|udp|edge|all] (default: all)
#   scripts/bench.sh compare A.json B.json                     ratios of B to A
#
# Every proxy runs pinned to CPU $PROXY_CPU inside a cgroup of its own that may use
# $BUDGET percent of that core (all its threads and processes inside); load
# generators and backends run on $LOAD_CPU. On a small machine this is what makes
# req/s a measure of the proxy: without it the load core saturates first and every
# proxy looks the same. Each row says whether its proxy was actually throttled
# (budget-bound); BUDGET=0 runs without a budget. Each proxy runs with one
# worker/thread. Every figure is the median of $ROUNDS rounds, run alternately so
# drift hits every proxy alike. Besides throughput it reports the proxy's own CPU
# time per request (from /proc/PID/stat) and the whole machine's (all cores, from
# /proc/stat), so work pushed into other processes or softirq is counted.
#
# Needs (Debian): iperf3 wrk haproxy nginx-light libnginx-mod-stream dnsmasq-base
# dnsperf python3. Installs nothing itself.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATS="$ROOT/scripts/bench-stats.py"
if [ "${1:-}" = compare ]; then
  [ $# -eq 3 ] || { echo "usage: scripts/bench.sh compare A.json B.json" >&2; exit 2; }
  exec python3 "$STATS" compare "$2" "$3"
fi
JSON_OUT=
if [ "${1:-}" = --json ]; then
  [ $# -ge 2 ] || { echo "bench.sh: --json needs a file name" >&2; exit 2; }
  JSON_OUT=$(realpath -m "$2"); shift 2
fi
SUITE=${1:-all}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
CONNS=${CONNS:-50}
IDLE_CONNS=${IDLE_CONNS:-3000}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUDGET=${BUDGET:-40}
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
case "$SUITE" in tcp|udp|http|tls|grpc|edge|all) ;; *) echo "bench.sh: unknown suite '$SUITE' (have: tcp, http, tls, grpc, udp, edge, all)" >&2; exit 2 ;; esac

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
  # A cgroup can go once its processes have; its name was its first process's pid.
  [ -z "${CG_BASE:-}" ] || rmdir "$CG_BASE"/p* 2>/dev/null || true
}
cleanup() {
  stop_all
  [ -z "${CG_BASE:-}" ] || rmdir "$CG_BASE" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
SAMPLES=$WORK/samples.tsv
: > "$SAMPLES"

# --- The CPU budget ------------------------------------------------------------------
# Each proxy gets a cgroup of its own under $CG_BASE allowed BUDGET% of every
# $CG_PERIOD µs: cgroup v2 (cpu.max) where the cpu controller is on the unified
# hierarchy, v1 (cpu.cfs_quota_us) otherwise. A short period spreads the throttling
# finely, so latency figures show the budget and not 100 ms stalls.
CG_PERIOD=10000
CG_BASE=
if [ "$BUDGET" != 0 ]; then
  case "$BUDGET" in *[!0-9]*) echo "bench.sh: BUDGET is a percentage of one core (1-100), or 0 for none" >&2; exit 2 ;; esac
  [ "$BUDGET" -le 100 ] || { echo "bench.sh: BUDGET is a percentage of one core (1-100), or 0 for none" >&2; exit 2; }
  if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG_VER=2; CG_MOUNT=/sys/fs/cgroup
    grep -qw cpu "$CG_MOUNT/cgroup.subtree_control" || echo +cpu > "$CG_MOUNT/cgroup.subtree_control"
  elif [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    CG_VER=1; CG_MOUNT=/sys/fs/cgroup/cpu
  else
    echo "bench.sh: no cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us); run as root, or with BUDGET=0" >&2
    exit 2
  fi
  CG_BASE=$CG_MOUNT/fulcrum-bench.$$
  mkdir "$CG_BASE" || { echo "bench.sh: cannot make a cgroup at $CG_BASE; run as root, or with BUDGET=0" >&2; exit 2; }
  [ "$CG_VER" = 1 ] || echo +cpu > "$CG_BASE/cgroup.subtree_control"
fi
CG_QUOTA=$((CG_PERIOD * BUDGET / 100))

# Runs "$@" on the proxy CPU inside a new cgroup with the budget. Call it in the
# background: it execs, so $! is the proxy's pid, and every thread or process the
# proxy starts stays in its cgroup.
proxy_exec() {
  if [ -n "$CG_BASE" ]; then
    local cg="$CG_BASE/p$BASHPID"
    mkdir "$cg"
    if [ "$CG_VER" = 2 ]; then
      echo "$CG_QUOTA $CG_PERIOD" > "$cg/cpu.max"
    else
      echo "$CG_PERIOD" > "$cg/cpu.cfs_period_us"
      echo "$CG_QUOTA" > "$cg/cpu.cfs_quota_us"
    fi
    echo "$BASHPID" > "$cg/cgroup.procs"
  fi
  exec taskset -c "$PROXY_CPU" "$@"
}
# The cgroup directory pid $1 runs in.
cg_dir() {
  echo "$CG_MOUNT$(awk -F: -v v="$CG_VER" '(v == 2 && $1 == "0") || (v == 1 && $2 ~ /(^|,)cpu(,|$)/) { print $3 }' "/proc/$1/cgroup")"
}
# "periods throttled" so far of the cgroup pid $1 runs in.
cg_stat() {
  awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { t = $2 } END { print p + 0, t + 0 }' "$(cg_dir "$1")/cpu.stat"
}
# Gives the proxies with pids $2... a budget of $1 percent (for a suite where the
# usual budget would not bind; every proxy still gets the same).
set_budget() {
  [ -n "$CG_BASE" ] || return 0
  local pct=$1 quota pid; shift
  quota=$((CG_PERIOD * pct / 100))
  for pid in "$@"; do
    if [ "$CG_VER" = 2 ]; then echo "$quota $CG_PERIOD" > "$(cg_dir "$pid")/cpu.max"
    else echo "$quota" > "$(cg_dir "$pid")/cpu.cfs_quota_us"; fi
  done
}
# Busy ticks of the whole machine (all cores: user, nice, system, irq, softirq).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# "proxy_ticks periods throttled machine_busy load_busy load_all proxy_user_ticks"
# now, for pid $1 ("-": no proxy); two of these around a run give its cost
# (bench-stats.py cost).
snap() {
  local ticks=0 cg="0 0" user=0
  if [ "$1" != - ]; then
    ticks=$(cpu_ticks "$1")
    user=$(user_ticks "$1")
    [ -z "$CG_BASE" ] || cg=$(cg_stat "$1")
  fi
  echo "$ticks $cg $(machine_ticks) $(core_ticks "$LOAD_CPU") $user"
}

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
# Of those, the ticks spent in user space (the rest is the kernel's: syscalls, TCP).
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
# Busy and total ticks of CPU $1 so far (from /proc/stat: user to steal; guest time is inside user).
core_ticks() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
TICK=$(getconf CLK_TCK)

echo "fulcrum $("$FULCRUM" --version | awk '{print $2}') | $(haproxy -v | head -1 | awk '{print "HAProxy", $3}') | $(nginx -v 2>&1 | sed 's|.*/|NGINX |') | $(dnsmasq --version | head -1 | awk '{print "dnsmasq", $3}')"
if [ -n "$CG_BASE" ]; then budget="$BUDGET% of CPU $PROXY_CPU each (cgroup v$CG_VER, period ${CG_PERIOD} µs)"; else budget="CPU $PROXY_CPU, no budget"; fi
echo "proxies on $budget; load on CPU $LOAD_CPU; $ROUNDS rounds of ${SECS}s, medians"
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
  proxy_exec "$FULCRUM" run -c "$WORK/quiet.toml" --workers 1 --log-level info 2>"$WORK/quiet.err" &
  PID_quiet=$!; PIDS+=($PID_quiet)
}

# Starts the quiet config on port $1 with hyper's HTTP/1 path (http1_engine =
# "hyper") instead of fulcrum's own: the "hyper" row (pid PID_hyper), for the
# two paths side by side. Call after start_quiet.
start_hyper() {
  sed -e "s/:${HTTP[quiet]}\"/:$1\"/" -e 's/^access_log = false$/access_log = false\nhttp1_engine = "hyper"/' \
    "$WORK/quiet.toml" > "$WORK/hyper.toml"
  proxy_exec "$FULCRUM" run -c "$WORK/hyper.toml" --workers 1 --log-level info 2>"$WORK/hyper.err" &
  PID_hyper=$!; PIDS+=($PID_hyper)
  HTTP[hyper]=$1
}

# One wrk run for row $2 of suite $1 (port ${HTTP[$2]}, pid $PID_$2; "direct" has
# no proxy pid); the rest goes to wrk. Records req/s (or conn/s with WRK_KEY=cps),
# p50, p99 and the run's CPU figures.
wrk_run() {
  local suite=$1 row=$2; shift 2
  local pid_var="PID_$row" pid=- before after out reqs
  [ "$row" = direct ] || pid=${!pid_var}
  before=$(snap "$pid")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" "${SCHEME:-http}://${HOST:-127.0.0.1}:${HTTP[$row]}${WRK_PATH:-/}")
  after=$(snap "$pid")
  reqs=$(python3 "$STATS" wrk "$SAMPLES" "$suite" "$row" "$out" "${WRK_KEY:-rps}")
  python3 "$STATS" cost "$SAMPLES" "$suite" "$row" "$reqs" "$TICK" "$before" "$after"
}

# Alternating wrk rounds against each proxy in $PROXIES (and "direct" if listed),
# then the table of medians and ratios. $1 is the suite's key in the JSON, $2 its
# title; the rest goes to wrk.
http_suite() {
  local suite=$1 title=$2; shift 2
  for _ in $(seq "$ROUNDS"); do
    for p in $PROXIES; do wrk_run "$suite" "$p" "$@"; done
  done
  table "$suite" "$title (wrk -t1 -c$CONNS; µs per request)"
}
table() { python3 "$STATS" table "$SAMPLES" "$1" "$2" "$BUDGET"; }

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
proxy_exec "$FULCRUM" run -c "$WORK/fulcrum.toml" --workers 1 --log-level info 2>"$WORK/fulcrum.err" &
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
proxy_exec haproxy -f "$WORK/haproxy.cfg" -db >/dev/null 2>"$WORK/haproxy.err" &
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
proxy_exec nginx -c "$WORK/nginx.conf" -g 'daemon off; master_process off;' 2>/dev/null &
PID_nginx=$!; PIDS+=($PID_nginx)

for port in "$P_IPERF" "$P_WEB1" "$P_WEB2" "${BULK[fulcrum]}" "${HTTP[fulcrum]}" "${HTTP[quiet]}" "${BULK[haproxy]}" "${HTTP[haproxy]}" "${BULK[nginx]}" "${HTTP[nginx]}"; do
  wait_port "$port"
done

# --- TCP bulk: iperf3, one stream ------------------------------------------------------
for _ in $(seq "$ROUNDS"); do
  for p in direct fulcrum haproxy nginx; do bulk_run tcp_bulk "$p" "${BULK[$p]}"; done
done
table tcp_bulk "TCP bulk (iperf3 -P1; µs per MB)"

# --- HTTP through L4: wrk keep-alive and Connection: close ------------------------------
# "direct" is wrk straight to one nginx backend: the most the load core gives any
# proxy, since wrk and nginx do the same work per request with or without one.
HTTP[direct]=$P_WEB1
headline_quiet
PROXIES="direct fulcrum logging haproxy nginx"
http_suite l4_keepalive "HTTP keep-alive through L4"
WRK_KEY=cps http_suite l4_close "New connections through L4 (Connection: close)" -H "Connection: close"

# --- Memory per idle proxied connection ------------------------------------------------
for p in fulcrum haproxy nginx; do
  mem_row mem_l4_idle "$p" idle "${HTTP[$p]}" "$IDLE_CONNS"
done
table mem_l4_idle "Memory per idle proxied connection ($IDLE_CONNS connections, RSS delta)"
stop_all
}

# One iperf3 -P1 run of $SECS seconds for row $2 of suite $1 through port $3:
# Gbit/s and the CPU per megabyte moved.
bulk_run() {
  local suite=$1 row=$2 port=$3 pid_var="PID_$2" pid=- before after out
  [ "$row" = direct ] || pid=${!pid_var}
  before=$(snap "$pid")
  out=$(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J)
  after=$(snap "$pid")
  read -r gbps mbytes < <(python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum_received"]; print(e["bits_per_second"]/1e9, e["bytes"]/1e6)' <<<"$out")
  python3 "$STATS" add "$SAMPLES" "$suite" "$row" gbps "$gbps"
  python3 "$STATS" cost "$SAMPLES" "$suite" "$row" "$mbytes" "$TICK" "$before" "$after"
}

# Stops row $1's proxy and runs the command after $2 (its port) and $3 (where its
# stderr goes) in its place, in a cgroup of its own, until port $2 listens: a
# memory row then measures a fresh process.
restart_row() {
  local pid_var="PID_$1" port=$2 err=$3
  shift 3
  kill "${!pid_var}" 2>/dev/null || true
  wait "${!pid_var}" 2>/dev/null || true
  proxy_exec "$@" >/dev/null 2>>"$err" &
  printf -v "$pid_var" '%s' "$!"
  PIDS+=($!)
  wait_port "$port"
}

# Memory row $2 of suite $1: bench-mem.py MODE PORT PID ARGS... ($3 on); a
# "kept" figure (memory not returned after the clients left) when it gives one.
mem_row() {
  local suite=$1 row=$2 mode=$3 port=$4 pid_var="PID_$2" bytes kept; shift 4
  bytes=$(python3 "$ROOT/scripts/bench-mem.py" "$mode" "$port" "${!pid_var}" "$@" 2>"$WORK/mem.err")
  python3 "$STATS" add "$SAMPLES" "$suite" "$row" bytes "$bytes"
  kept=$(awk '$1 == "kept" { print $2 }' "$WORK/mem.err")
  [ -z "$kept" ] || python3 "$STATS" add "$SAMPLES" "$suite" "$row" kept "$kept"
}

# shellcheck source=scripts/bench-udp.sh
. "$ROOT/scripts/bench-udp.sh"
# shellcheck source=scripts/bench-http.sh
. "$ROOT/scripts/bench-http.sh"
# shellcheck source=scripts/bench-tls.sh
. "$ROOT/scripts/bench-tls.sh"
# shellcheck source=scripts/bench-grpc.sh
. "$ROOT/scripts/bench-grpc.sh"
# shellcheck source=scripts/bench-edge.sh
. "$ROOT/scripts/bench-edge.sh"

case "$SUITE" in
  tcp) suite_tcp ;;
  udp) suite_udp ;;
  http) suite_http ;;
  tls) suite_tls ;;
  grpc) suite_grpc ;;
  edge) suite_edge ;;
  all) suite_tcp; suite_http; suite_tls; suite_grpc; suite_udp; suite_edge ;;
esac
if [ -n "$JSON_OUT" ]; then
  python3 "$STATS" json "$SAMPLES" "$JSON_OUT"
  echo "figures written to $JSON_OUT (compare two with: scripts/bench.sh compare A.json B.json)"
fi
