# shellcheck shell=bash
# The edge suite of scripts/bench.sh (sourced by it; uses its helpers and settings):
# what a rate limit that never triggers and gzip of a 10 KB text answer cost, in
# fulcrum, HAProxy and NGINX alike, at the same CPU budget. L7 keep-alive, two
# nginx backends. Rows: NAME (plain), NAME_rl (a per-address limit far above the
# load: the bookkeeping alone), NAME_gz (the same proxy compressing /10k.txt with
# gzip level 6; the plain row fetches it uncompressed for the baseline).

# One proxy process per row, each in its own cgroup.
edge_fulcrum() { # row, extra listener lines
  cat > "$WORK/edge-$1.toml" <<CONF
[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:${HTTP[$1]}"
pool = "web"
access_log = false
$2

[[pool]]
name = "web"
backends = ["127.0.0.1:$P_WEB1", "127.0.0.1:$P_WEB2"]
CONF
  proxy_exec "$FULCRUM" run -c "$WORK/edge-$1.toml" --workers 1 --log-level warn 2>"$WORK/edge-$1.err" &
  printf -v "PID_$1" '%s' "$!"; PIDS+=($!)
}

edge_haproxy() { # row, global lines, frontend lines, backend lines
  cat > "$WORK/edge-$1.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
$2
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 3s
  timeout client 5m
  timeout server 5m
  timeout http-keep-alive 5m
frontend web
  bind 127.0.0.1:${HTTP[$1]}
$3
  default_backend web
backend web
$(haproxy_forwarding http)
$4
  balance roundrobin
  server w1 127.0.0.1:$P_WEB1
  server w2 127.0.0.1:$P_WEB2
CONF
  proxy_exec haproxy -f "$WORK/edge-$1.cfg" -db >/dev/null 2>"$WORK/edge-$1.err" &
  printf -v "PID_$1" '%s' "$!"; PIDS+=($!)
}

edge_nginx() { # row, http lines, location lines
  cat > "$WORK/edge-$1.conf" <<CONF
worker_processes 1;
pid $WORK/edge-$1.pid;
error_log $WORK/edge-$1.err;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_requests 1000000;
$2
  upstream web {
    server 127.0.0.1:$P_WEB1;
    server 127.0.0.1:$P_WEB2;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${HTTP[$1]} backlog=4096;
    location / {
$3
$(nginx_proxy_web)
    }
  }
}
CONF
  proxy_exec nginx -c "$WORK/edge-$1.conf" -g 'daemon off; master_process off;' 2>/dev/null &
  printf -v "PID_$1" '%s' "$!"; PIDS+=($!)
}

suite_edge() {
  local P_WEB1 P_WEB2 name
  P_WEB1=$(free_port); P_WEB2=$(free_port)
  declare -A HTTP
  local rows="fulcrum fulcrum_rl fulcrum_gz haproxy haproxy_rl haproxy_gz nginx nginx_rl nginx_gz"
  for name in $rows; do HTTP[$name]=$(free_port); done
  start_web "$P_WEB1" "$P_WEB2"
  # 10 KB of text (nginx serves it as text/plain).
  python3 -c 'import sys; w=["load ","balancer ","request ","backend "]; sys.stdout.write("".join(w[i*7%4]+str(i)+" " for i in range(2000))[:10240])' > "$WORK/web/10k.txt"

  edge_fulcrum fulcrum ""
  edge_fulcrum fulcrum_rl 'rate_limit = { rate = "100000000/s", burst = 100000000 }'
  edge_fulcrum fulcrum_gz 'compress = ["gzip"]'
  edge_haproxy haproxy "" "" ""
  edge_haproxy haproxy_rl "" "  stick-table type ip size 100k expire 10s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100000000 }" ""
  edge_haproxy haproxy_gz "  tune.comp.maxlevel 6" "" "  compression algo gzip
  compression type text/plain"
  edge_nginx nginx "" ""
  edge_nginx nginx_rl "  limit_req_zone \$binary_remote_addr zone=rl:10m rate=100000000r/s;" "      limit_req zone=rl burst=100000000 nodelay;"
  edge_nginx nginx_gz "  gzip on; gzip_types text/plain; gzip_proxied any; gzip_comp_level 6; gzip_min_length 1024;" ""
  for name in $rows; do wait_port "${HTTP[$name]}"; done

  PROXIES="fulcrum fulcrum_rl haproxy haproxy_rl nginx nginx_rl"
  http_suite edge_ratelimit "L7 keep-alive with a rate limit that never triggers (NAME_rl) and without"
  PROXIES="fulcrum fulcrum_gz haproxy haproxy_gz nginx nginx_gz"
  WRK_PATH=/10k.txt http_suite edge_gzip "L7 keep-alive, a 10 KB text answer gzipped (NAME_gz, level 6) and not" -H "Accept-Encoding: gzip"
  rm -f "$WORK/web/10k.txt"
  stop_all
}
