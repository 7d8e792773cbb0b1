# shellcheck shell=bash
# The gRPC suite of scripts/bench.sh (sourced by it; uses its helpers and settings).
#
# gRPC-shaped unary calls over HTTP/2 in the clear: h2load (one client thread,
# GRPC_CONNS connections, GRPC_STREAMS calls in flight on each) POSTs a 5-byte-
# framed message with content-type application/grpc and te: trailers; the backend,
# nginx speaking h2c on the load core, answers 200 with a small body and a
# grpc-status trailer. Through fulcrum (an http listener, pool http_version = "2"),
# HAProxy (bind proto h2, server proto h2, http-reuse always) and NGINX (listen
# http2, grpc_pass with upstream keepalive), each adding the same four forwarding
# headers as in the L7 suite: every request is balanced on its own over the
# proxy's multiplexed upstream connections. p50/p99 come from h2load's log of
# every request.

GRPC_CONNS=${GRPC_CONNS:-10}
GRPC_STREAMS=${GRPC_STREAMS:-10}
GRPC_IDLE_CONNS=${GRPC_IDLE_CONNS:-1000}
GRPC_UNREAD_CONNS=${GRPC_UNREAD_CONNS:-10}

# Starts gRPC row $1's proxy again, fresh (see restart_row).
restart_grpc() {
  case "$1" in
    fulcrum) restart_row fulcrum "${GRPC[fulcrum]}" "$WORK/fulcrum-grpc.err" "$FULCRUM" run -c "$WORK/fulcrum-grpc.toml" --workers 1 --log-level info ;;
    haproxy) restart_row haproxy "${GRPC[haproxy]}" "$WORK/haproxy-grpc.err" haproxy -f "$WORK/haproxy-grpc.cfg" -db ;;
    nginx) restart_row nginx "${GRPC[nginx]}" /dev/null nginx -c "$WORK/nginx-grpc.conf" -g 'daemon off; master_process off;' ;;
  esac
}

suite_grpc() {
  command -v h2load >/dev/null || { echo "bench.sh: the grpc suite needs h2load: apt-get install -y nghttp2-client" >&2; exit 2; }
  local P_G1 P_G2 name
  P_G1=$(free_port); P_G2=$(free_port)
  declare -A GRPC
  GRPC[direct]=$P_G1
  for name in fulcrum haproxy nginx; do GRPC[$name]=$(free_port); done

  # What the memory row's unread streams ask for: more than any proxy queues.
  head -c 8M /dev/zero > "$WORK/grpc-big.bin"
  cat > "$WORK/grpc-web.conf" <<CONF
worker_processes 1;
pid $WORK/grpc-web.pid;
error_log $WORK/grpc-web.err;
events { worker_connections 9000; }
http {
  access_log off;
  http2_max_requests 100000000;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$P_G1 http2 backlog=4096;
    listen 127.0.0.1:$P_G2 http2 backlog=4096;
    location = /big { alias $WORK/grpc-big.bin; }
    location / {
      default_type application/grpc;
      add_trailer grpc-status 0 always;
      return 200 "ok";
    }
  }
}
CONF
  taskset -c "$LOAD_CPU" nginx -c "$WORK/grpc-web.conf" -g 'daemon off;' 2>/dev/null & PIDS+=($!)

  cat > "$WORK/fulcrum-grpc.toml" <<CONF
[[listener]]
name = "grpc"
protocol = "http"
bind = "127.0.0.1:${GRPC[fulcrum]}"
pool = "grpc"
access_log = false   # as HAProxy and NGINX here, which log nothing

[[pool]]
name = "grpc"
http_version = "2"
backends = ["127.0.0.1:$P_G1", "127.0.0.1:$P_G2"]
CONF
  proxy_exec "$FULCRUM" run -c "$WORK/fulcrum-grpc.toml" --workers 1 --log-level info 2>"$WORK/fulcrum-grpc.err" &
  PID_fulcrum=$!; PIDS+=($PID_fulcrum)

  cat > "$WORK/haproxy-grpc.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  http-reuse always
  timeout connect 3s
  timeout client 5m
  timeout server 5m
frontend grpc
  bind 127.0.0.1:${GRPC[haproxy]} proto h2
  default_backend grpc
backend grpc
$(haproxy_forwarding http)
  balance roundrobin
  server g1 127.0.0.1:$P_G1 proto h2
  server g2 127.0.0.1:$P_G2 proto h2
CONF
  proxy_exec haproxy -f "$WORK/haproxy-grpc.cfg" -db >/dev/null 2>"$WORK/haproxy-grpc.err" &
  PID_haproxy=$!; PIDS+=($PID_haproxy)

  cat > "$WORK/nginx-grpc.conf" <<CONF
worker_processes 1;
pid $WORK/nginx-grpc.pid;
error_log $WORK/nginx-grpc.err;
events { worker_connections 9000; }
http {
  access_log off;
  # Since 1.19.7 keepalive_requests (default 1000) also ends an HTTP/2 client
  # connection: h2load does not reconnect, so the run went on without them.
  keepalive_requests 100000000;
  http2_max_requests 100000000;
  upstream grpc {
    server 127.0.0.1:$P_G1;
    server 127.0.0.1:$P_G2;
    keepalive 32;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:${GRPC[nginx]} http2 backlog=4096;
    location / {
      grpc_pass grpc://grpc;
      grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      grpc_set_header Forwarded "for=\$remote_addr;proto=\$scheme;host=\$http_host";
      grpc_set_header X-Forwarded-Proto \$scheme;
      grpc_set_header X-Forwarded-Host \$http_host;
    }
  }
}
CONF
  proxy_exec nginx -c "$WORK/nginx-grpc.conf" -g 'daemon off; master_process off;' 2>/dev/null &
  PID_nginx=$!; PIDS+=($PID_nginx)

  for port in "$P_G1" "$P_G2" "${GRPC[fulcrum]}" "${GRPC[haproxy]}" "${GRPC[nginx]}"; do
    wait_port "$port"
  done

  # A 5-byte gRPC frame header and a 32-byte message.
  printf '\x00\x00\x00\x00\x20%s' "$(head -c 32 /dev/zero | tr '\0' 'm')" > "$WORK/grpc-req.bin"
  local row out before after pid_var pid done_n
  for _ in $(seq "$ROUNDS"); do
    for row in direct fulcrum haproxy nginx; do
      pid_var="PID_$row"; pid=-
      [ "$row" = direct ] || pid=${!pid_var}
      rm -f "$WORK/h2load.log"
      before=$(snap "$pid")
      out=$(taskset -c "$LOAD_CPU" h2load -t1 -c"$GRPC_CONNS" -m"$GRPC_STREAMS" -D"$SECS" \
        -d "$WORK/grpc-req.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
        --log-file="$WORK/h2load.log" "http://127.0.0.1:${GRPC[$row]}/bench.Echo/Unary" 2>&1)
      after=$(snap "$pid")
      done_n=$(python3 "$STATS" h2load "$SAMPLES" grpc "$row" "$out" "$WORK/h2load.log")
      python3 "$STATS" cost "$SAMPLES" grpc "$row" "$done_n" "$TICK" "$before" "$after"
    done
  done
  table grpc "gRPC-shaped unary calls over h2c (h2load -t1 -c$GRPC_CONNS -m$GRPC_STREAMS; µs per call)"

  for name in fulcrum haproxy nginx; do
    restart_grpc "$name"
    mem_row mem_h2_idle "$name" h2after "${GRPC[$name]}" "$GRPC_IDLE_CONNS" /
  done
  table mem_h2_idle "Memory per idle HTTP/2 client after one request ($GRPC_IDLE_CONNS h2c clients, RSS delta)"

  # A client that asks for 100 large responses at once, grants every window and
  # reads nothing: what a proxy queues for it is bounded by its own limits only.
  for name in fulcrum haproxy nginx; do
    restart_grpc "$name"
    mem_row mem_h2_unread "$name" h2unread "${GRPC[$name]}" "$GRPC_UNREAD_CONNS" /big "$SECS"
  done
  table mem_h2_unread "Memory per HTTP/2 client reading none of 100 large responses ($GRPC_UNREAD_CONNS h2c clients, peak RSS delta)"

  # A client that opens 100 uploads and stops each one partway (60 KiB of a
  # declared 10 MB): what a proxy buffers for it is bounded by its own limits.
  for name in fulcrum haproxy nginx; do
    restart_grpc "$name"
    mem_row mem_h2_upload "$name" h2upload "${GRPC[$name]}" "$GRPC_UNREAD_CONNS" /upload "$SECS"
  done
  table mem_h2_upload "Memory per HTTP/2 client with 100 uploads stalled at 60 KiB ($GRPC_UNREAD_CONNS h2c clients, peak RSS delta)"
}
