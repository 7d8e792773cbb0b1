# shellcheck shell=bash
# The UDP suite of scripts/bench.sh (sourced by it; uses its helpers and settings).
#
# dnsperf against dnsmasq directly, through fulcrum (udp, responses = 1) and through
# NGINX stream (udp, proxy_responses 1); iperf3 -u at a fixed rate through each,
# with loss; and the RSS cost of one live flow. HAProxy has no UDP in its free
# edition, so it is not in this suite.

# Faster than a budget-bound proxy can relay, so the row shows what it carries (and
# loses) at the budget; with BUDGET=0, 500 Mbit/s as before.
if [ "$BUDGET" = 0 ]; then UDP_RATE=${UDP_RATE:-500M}; else UDP_RATE=${UDP_RATE:-1G}; fi
FLOWS=${FLOWS:-100000}

suite_udp() {
  local P_DNS P_IPERF_U P_SINK P_FLOWS name
  P_DNS=$(free_port); P_IPERF_U=$(free_port); P_SINK=$(free_port); P_FLOWS=$(free_port)
  declare -A DNS UDPB
  DNS[direct]=$P_DNS; UDPB[direct]=$P_IPERF_U
  for name in fulcrum nginx; do DNS[$name]=$(free_port); UDPB[$name]=$(free_port); done

  taskset -c "$LOAD_CPU" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address=127.0.0.1 --port="$P_DNS" --address=/fulcrum.test/192.0.2.53 \
    --cache-size=10000 --pid-file="$WORK/dnsmasq.pid" --user=root 2>"$WORK/dnsmasq.err" & PIDS+=($!)
  taskset -c "$LOAD_CPU" iperf3 -s -p "$P_IPERF_U" >/dev/null 2>&1 & PIDS+=($!)

  # iperf3 -u keeps a TCP control connection on the same port, so each proxy
  # relays both protocols there.
  cat > "$WORK/fulcrum-udp.toml" <<CONF
[[listener]]
name = "dns"
protocol = "udp"
bind = "127.0.0.1:${DNS[fulcrum]}"
pool = "dns"
responses = 1

[[listener]]
name = "iperf-data"
protocol = "udp"
bind = "127.0.0.1:${UDPB[fulcrum]}"
pool = "iperf"

[[listener]]
name = "iperf-control"
bind = "127.0.0.1:${UDPB[fulcrum]}"
pool = "iperf"

[[listener]]
name = "flows"
protocol = "udp"
bind = "127.0.0.1:$P_FLOWS"
pool = "sink"

[[pool]]
name = "dns"
backends = ["127.0.0.1:$P_DNS"]

[[pool]]
name = "sink"
backends = ["127.0.0.1:$P_SINK"]

[[pool]]
name = "iperf"
backends = ["127.0.0.1:$P_IPERF_U"]
CONF
  proxy_exec "$FULCRUM" run -c "$WORK/fulcrum-udp.toml" --workers 1 --log-level info 2>"$WORK/fulcrum-udp.err" &
  PID_fulcrum=$!; PIDS+=($PID_fulcrum)

  cat > "$WORK/nginx-udp.conf" <<CONF
load_module $STREAM_MOD;
worker_processes 1;
pid $WORK/nginx-udp.pid;
error_log $WORK/nginx-udp.err;
events { worker_connections 9000; }
stream {
  server { listen 127.0.0.1:${DNS[nginx]} udp; proxy_pass 127.0.0.1:$P_DNS; proxy_responses 1; }
  server { listen 127.0.0.1:${UDPB[nginx]} udp; proxy_pass 127.0.0.1:$P_IPERF_U; }
  server { listen 127.0.0.1:${UDPB[nginx]}; proxy_pass 127.0.0.1:$P_IPERF_U; }
}
CONF
  proxy_exec nginx -c "$WORK/nginx-udp.conf" -g 'daemon off; master_process off;' 2>/dev/null &
  PID_nginx=$!; PIDS+=($PID_nginx)

  for port in "$P_IPERF_U" "${UDPB[fulcrum]}" "${UDPB[nginx]}"; do wait_port "$port"; done
  for _ in $(seq 1000); do echo "fulcrum.test A"; done > "$WORK/queries.txt"

  # --- DNS: dnsperf, 10 client sockets ------------------------------------------------
  local out before after pid_var pid
  for _ in $(seq "$ROUNDS"); do
    for name in direct fulcrum nginx; do
      pid_var="PID_$name"; pid=-
      [ "$name" = direct ] || pid=${!pid_var}
      before=$(snap "$pid")
      out=$(taskset -c "$LOAD_CPU" dnsperf -s 127.0.0.1 -p "${DNS[$name]}" -d "$WORK/queries.txt" -l "$SECS" -c 10 2>&1)
      after=$(snap "$pid")
      read -r qps lost completed < <(python3 -c '
import re, sys
out = sys.argv[1]
qps = re.search(r"Queries per second:\s+([\d.]+)", out).group(1)
lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
done = re.search(r"Queries completed:\s+(\d+)", out).group(1)
print(qps, lost, done)' "$out")
      python3 "$STATS" add "$SAMPLES" dns "$name" qps "$qps"
      python3 "$STATS" add "$SAMPLES" dns "$name" lost "$lost"
      python3 "$STATS" cost "$SAMPLES" dns "$name" "$completed" "$TICK" "$before" "$after"
    done
  done
  table dns "DNS through UDP (dnsperf -c10 against dnsmasq; fulcrum responses = 1, NGINX proxy_responses 1; µs per query)"

  # --- iperf3 -u at a fixed rate --------------------------------------------------------
  for _ in $(seq "$ROUNDS"); do
    for name in direct fulcrum nginx; do
      pid_var="PID_$name"; pid=-
      [ "$name" = direct ] || pid=${!pid_var}
      before=$(snap "$pid")
      read -r loss got mbytes < <(taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "${UDPB[$name]}" -u -b "$UDP_RATE" -l 1400 -t "$SECS" -J |
        python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]["sum"]; got=1-e["lost_percent"]/100; print(e["lost_percent"], e["bits_per_second"]*got/1e6, e["bytes"]*got/1e6)')
      after=$(snap "$pid")
      python3 "$STATS" add "$SAMPLES" udp_stream "$name" mbps "$got"
      python3 "$STATS" add "$SAMPLES" udp_stream "$name" loss "$loss"
      python3 "$STATS" cost "$SAMPLES" udp_stream "$name" "$mbytes" "$TICK" "$before" "$after"
    done
  done
  table udp_stream "UDP stream (iperf3 -u -b $UDP_RATE -l 1400; Mbit/s delivered; µs per MB delivered)"

  # --- memory per live flow ----------------------------------------------------------
  echo "== Memory per live UDP flow (up to $FLOWS clients, one datagram each to a backend that never answers, RSS delta)"
  python3 - "$P_FLOWS" "$FLOWS" "$PID_fulcrum" "$P_SINK" "$SAMPLES" <<'PY'
import resource, socket, sys, time
port, n, pid, sink_port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", sink_port))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def fds():
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))
def settle():
    last, same = rss(), 0
    while same < 5:
        time.sleep(0.1)
        now = rss(); same = same + 1 if now == last else 0; last = now
    return last
# Each flow is one descriptor in fulcrum and one client socket here: both processes'
# open-file limits cap the count (fulcrum keeps 70% of its limit for flows).
n = min(n, int(soft * 0.6))
base_fds, before = fds(), settle()
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(100):
        try:
            s.sendto(b"x", ("127.0.0.1", port))
            break
        except BlockingIOError:
            # Loopback is momentarily out of buffer space: let the proxy catch up.
            time.sleep(0.01)
    socks.append(s)
after = settle()
flows = fds() - base_fds
per = (after - before) * 1024 / max(flows, 1)
open(sys.argv[5], "a").write(f"mem_udp_flow\tfulcrum\tbytes\t{per:.0f}\n")
print(f"  fulcrum  {per:.0f} bytes/flow over {flows} live flows (open-file limit {soft}); 100k flows = {per * 1e5 / 2**20:.0f} MiB")
PY
  echo
  stop_all
}
