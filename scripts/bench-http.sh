# shellcheck shell=bash
# The L7 suite of scripts/bench.sh (sourced by it; uses its helpers and settings).
#
# wrk keep-alive against two nginx backends: direct to one backend, through
# fulcrum (protocol = "http", access log off as in the others; "logging" is the same
# with it on),
# through HAProxy (mode http,
# http-reuse always) and through NGINX (proxy_pass, upstream keepalive). Each proxy
# keeps its upstream connections alive, so this measures HTTP parsing, routing and
# header rewriting, not connection set-up. HAProxy and NGINX are told to add the
# four forwarding headers fulcrum adds by default (X-Forwarded-For, -Proto, -Host
# and Forwarded), so every proxy does the same work and every backend parses the
# same request.

# HAProxy 2.6 lines adding the forwarding headers fulcrum adds by default, for
# scheme $1 (2.6 has no "option forwarded": Forwarded is set by hand).
haproxy_forwarding() {
  cat <<CONF
  option forwardfor
  http-request set-header X-Forwarded-Proto $1
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded "for=%[src];proto=$1;host=%[req.hdr(host)]"
CONF
}

# NGINX lines of a location passing to upstream "web" over kept-alive HTTP/1.1
# with the forwarding headers fulcrum adds by default.
nginx_proxy_web() {
  cat <<'CONF'
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=$http_host";
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
CONF
}

# Starts L7 row $1's proxy again, fresh (see restart_row; fulcrum is its quiet
# instance here).
restart_l7() {
  case "$1" in
    fulcrum) restart_row fulcrum "${HTTP[fulcrum]}" "$WORK/quiet.err" "$FULCRUM" run -c "$WORK/quiet.toml" --workers 1 --log-level info ;;
    hyper) restart_row hyper "${HTTP[hyper]}" "$WORK/hyper.err" "$FULCRUM" run -c "$WORK/hyper.toml" --workers 1 --log-level info ;;
    haproxy) restart_row haproxy "${HTTP[haproxy]}" "$WORK/haproxy-http.err" haproxy -f "$WORK/haproxy-http.cfg" -db ;;
    nginx) restart_row nginx "${HTTP[nginx]}" /dev/null nginx -c "$WORK/nginx-http.conf" -g 'daemon off; master_process off;' ;;
  esac
}

L7_IDLE_CONNS=${L7_IDLE_CONNS:-1000}
DL_MB=${DL_MB:-1024}

# One curl download of /dl.bin for row $2 of suite $1: Gbit/s and CPU per MB.
download_run() {
  local suite=$1 row=$2 pid_var="PID_$2" pid=- before after speed size
  [ "$row" = direct ] || pid=${!pid_var}
  before=$(snap "$pid")
  read -r speed size < <(taskset -c "$LOAD_CPU" curl -s -o /dev/null -w '%{speed_download} %{size_download}\n' "http://127.0.0.1:${HTTP[$row]}/dl.bin")
  after=$(snap "$pid")
  python3 "$STATS" add "$SAMPLES" "$suite" "$row" gbps "$(python3 -c "print($speed * 8 / 1e9)")"
  python3 "$STATS" cost "$SAMPLES" "$suite" "$row" "$(python3 -c "print($size / 1e6)")" "$TICK" "$before" "$after"
}
SLOW_CONNS=${SLOW_CONNS:-1000}
SLOW_SECS=${SLOW_SECS:-8}

suite_http() {
  local P_WEB1 P_WEB2 name
  P_WEB1=$(free_port); P_WEB2=$(free_port)
  declare -A HTTP
  HTTP[direct]=$P_WEB1
  for name in fulcrum haproxy nginx; do HTTP[$name]=$(free_port); done

  start_web "$P_WEB1" "$P_WEB2"

  cat > "$WORK/fulcrum-http.toml" <<CONF
[[listener]]
name = "web"
protocol = "http"
bind = "127.0.0.1:${HTTP[fulcrum]}"
pool = "web"

[[pool]]
name = "web"
backends = ["127.0.0.1:$P_WEB1", "127.0.0.1:$P_WEB2"]
CONF
  proxy_exec "$FULCRUM" run -c "$WORK/fulcrum-http.toml" --workers 1 --log-level info 2>"$WORK/fulcrum-http.err" &
  PID_fulcrum=$!; PIDS+=($PID_fulcrum)
  HTTP[quiet]=$(free_port)
  start_quiet "$WORK/fulcrum-http.toml" "${HTTP[fulcrum]}" "${HTTP[quiet]}"
  start_hyper "$(free_port)"

  cat > "$WORK/haproxy-http.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 3s
  timeout client 5m
  timeout server 5m
  timeout http-keep-alive 5m
frontend web
  bind 127.0.0.1:${HTTP[haproxy]}
  default_backend web
backend web
$(haproxy_forwarding http)
  balance roundrobin
  server w1 127.0.0.1:$P_WEB1
  server w2 127.0.0.1:$P_WEB2
CONF
  proxy_exec haproxy -f "$WORK/haproxy-http.cfg" -db >/dev/null 2>"$WORK/haproxy-http.err" &
  PID_haproxy=$!; PIDS+=($PID_haproxy)

  cat > "$WORK/nginx-http.conf" <<CONF
worker_processes 1;
pid $WORK/nginx-http.pid;
error_log $WORK/nginx-http.err;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream web {
    server 127.0.0.1:$P_WEB1;
    server 127.0.0.1:$P_WEB2;
    keepalive 128;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${HTTP[nginx]} backlog=4096;
    location / {
$(nginx_proxy_web)
    }
  }
}
CONF
  proxy_exec nginx -c "$WORK/nginx-http.conf" -g 'daemon off; master_process off;' 2>/dev/null &
  PID_nginx=$!; PIDS+=($PID_nginx)

  for port in "$P_WEB1" "$P_WEB2" "${HTTP[fulcrum]}" "${HTTP[quiet]}" "${HTTP[hyper]}" "${HTTP[haproxy]}" "${HTTP[nginx]}"; do
    wait_port "$port"
  done

  headline_quiet
  PROXIES="direct fulcrum hyper logging haproxy nginx"
  http_suite l7_keepalive "HTTP keep-alive through L7 proxies"
  WRK_KEY=cps http_suite l7_close "New connections through L7 proxies (Connection: close)" -H "Connection: close"

  # One large download per proxy (curl, one connection): what a body costs.
  head -c $((DL_MB * 1024 * 1024)) /dev/zero > "$WORK/web/dl.bin"
  for _ in $(seq "$ROUNDS"); do
    for p in direct fulcrum hyper haproxy nginx; do download_run l7_download "$p"; done
  done
  table l7_download "A $DL_MB MiB download through L7 proxies (curl; µs per MB)"
  rm -f "$WORK/web/dl.bin"

  # Memory per L7 client: idle keep-alive after a small and after a 2 MB response,
  # and a slow reader of a large response (10 KB/s, proxy holding back the backend).
  head -c $((2 * 1024 * 1024)) /dev/zero > "$WORK/web/2m.bin"
  head -c $((256 * 1024 * 1024)) /dev/zero > "$WORK/web/big.bin"
  # Each row in a fresh process: memory freed by an earlier row would otherwise be
  # reused and the later row would look cheaper than it is.
  for name in fulcrum hyper haproxy nginx; do
    restart_l7 "$name"
    mem_row mem_l7_idle_small "$name" after "${HTTP[$name]}" "$L7_IDLE_CONNS" /
    restart_l7 "$name"
    mem_row mem_l7_idle_2m "$name" after "${HTTP[$name]}" "$L7_IDLE_CONNS" /2m.bin
    restart_l7 "$name"
    mem_row mem_l7_slow_reader "$name" slow "${HTTP[$name]}" "$SLOW_CONNS" /big.bin "$SLOW_SECS"
  done
  table mem_l7_idle_small "Memory per idle keep-alive L7 client after a 128 B response ($L7_IDLE_CONNS clients, RSS delta)"
  table mem_l7_idle_2m "Memory per idle keep-alive L7 client after a 2 MB response ($L7_IDLE_CONNS clients, RSS delta)"
  table mem_l7_slow_reader "Memory per slow reader of a 256 MB L7 response ($SLOW_CONNS clients at 10 KB/s for ${SLOW_SECS}s, peak RSS delta)"
  rm -f "$WORK/web/big.bin" "$WORK/web/2m.bin"
  stop_all
}
