# shellcheck shell=bash
# The TLS suite of scripts/bench.sh (sourced by it; uses its helpers and settings).
#
# One ECDSA P-256 certificate for "localhost", made with openssl for the run.
# - HTTPS termination: wrk keep-alive and Connection: close (a full handshake per
#   request) through fulcrum (protocol = "https") and HAProxy (bind ... ssl crt,
#   mode http, http-reuse always, adding fulcrum's forwarding headers as in the
#   L7 suite) in front of the two nginx backends;
# - TLS passthrough: wrk downloading a 64 MiB file over HTTPS from an nginx TLS
#   backend through fulcrum (protocol = "tls", routed by SNI) and HAProxy (mode tcp,
#   req.ssl_sni), and direct.

BIG_MB=${BIG_MB:-64}

suite_tls() {
  local P_WEB1 P_WEB2 P_TLSWEB name
  P_WEB1=$(free_port); P_WEB2=$(free_port); P_TLSWEB=$(free_port)
  declare -A HTTPS PASS
  for name in fulcrum haproxy; do HTTPS[$name]=$(free_port); PASS[$name]=$(free_port); done
  PASS[direct]=$P_TLSWEB

  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/site.key" -out "$WORK/site.pem" 2>/dev/null
  cat "$WORK/site.pem" "$WORK/site.key" > "$WORK/site-combined.pem"
  chmod 644 "$WORK/site.key" "$WORK/site-combined.pem"

  start_web "$P_WEB1" "$P_WEB2"
  mkdir -p "$WORK/big"
  head -c "$((BIG_MB * 1024 * 1024))" /dev/urandom > "$WORK/big/big.bin"
  cat > "$WORK/tlsweb.conf" <<CONF
worker_processes 1;
pid $WORK/tlsweb.pid;
error_log $WORK/tlsweb.err;
events { worker_connections 9000; }
http {
  access_log off;
  keepalive_requests 1000000;
  sendfile on;
  server {
    listen 127.0.0.1:$P_TLSWEB ssl backlog=4096;
    ssl_certificate $WORK/site.pem;
    ssl_certificate_key $WORK/site.key;
    root $WORK/big;
  }
}
CONF
  taskset -c "$LOAD_CPU" nginx -c "$WORK/tlsweb.conf" -g 'daemon off;' 2>/dev/null & PIDS+=($!)

  cat > "$WORK/fulcrum-tls.toml" <<CONF
[[listener]]
name = "https"
protocol = "https"
bind = "127.0.0.1:${HTTPS[fulcrum]}"
pool = "web"
tls = [{ cert = "$WORK/site.pem", key = "$WORK/site.key" }]
access_log = false   # as HAProxy here, which logs nothing

[[listener]]
name = "pass"
protocol = "tls"
bind = "127.0.0.1:${PASS[fulcrum]}"

[[listener.route]]
sni = "localhost"
pool = "tlsweb"

[[pool]]
name = "web"
backends = ["127.0.0.1:$P_WEB1", "127.0.0.1:$P_WEB2"]

[[pool]]
name = "tlsweb"
backends = ["127.0.0.1:$P_TLSWEB"]
CONF
  taskset -c "$PROXY_CPU" "$FULCRUM" run -c "$WORK/fulcrum-tls.toml" --workers 1 --log-level info 2>"$WORK/fulcrum-tls.err" &
  PID_fulcrum=$!; PIDS+=($PID_fulcrum)

  cat > "$WORK/haproxy-tls.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
  tune.ssl.default-dh-param 2048
defaults
  timeout connect 3s
  timeout client 5m
  timeout server 5m
  timeout http-keep-alive 5m
frontend https
  mode http
  option http-keep-alive
  bind 127.0.0.1:${HTTPS[haproxy]} ssl crt $WORK/site-combined.pem alpn h2,http/1.1
  default_backend web
backend web
  mode http
  http-reuse always
$(haproxy_forwarding https)
  balance roundrobin
  server w1 127.0.0.1:$P_WEB1
  server w2 127.0.0.1:$P_WEB2
frontend pass
  mode tcp
  bind 127.0.0.1:${PASS[haproxy]}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend tlsweb if { req.ssl_sni -i localhost }
backend tlsweb
  mode tcp
  server t1 127.0.0.1:$P_TLSWEB
CONF
  taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy-tls.cfg" -db >/dev/null 2>"$WORK/haproxy-tls.err" &
  PID_haproxy=$!; PIDS+=($PID_haproxy)

  for port in "$P_WEB1" "$P_WEB2" "$P_TLSWEB" "${HTTPS[fulcrum]}" "${HTTPS[haproxy]}" "${PASS[fulcrum]}" "${PASS[haproxy]}"; do
    wait_port "$port"
  done

  # http_suite takes its ports from HTTP and its URL scheme from SCHEME.
  declare -A HTTP
  for name in fulcrum haproxy; do HTTP[$name]=${HTTPS[$name]}; done
  PROXIES="fulcrum haproxy" SCHEME=https HOST=localhost http_suite "HTTPS keep-alive (TLS termination)"
  PROXIES="fulcrum haproxy" SCHEME=https HOST=localhost http_suite "HTTPS new connections (Connection: close, full handshakes)" -H "Connection: close"

  # Bulk through passthrough: Transfer/sec of a big file, a few connections.
  declare -A BULK
  for _ in $(seq "$ROUNDS"); do
    for p in direct fulcrum haproxy; do
      out=$(taskset -c "$LOAD_CPU" wrk -t1 -c4 -d"${SECS}s" "https://localhost:${PASS[$p]}/big.bin")
      gbps=$(python3 - "$out" <<'PY'
import re, sys
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", sys.argv[1])
scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
print(f"{float(m.group(1)) * scale * 8 / 1e9:.2f}")
PY
)
      BULK[$p]="${BULK[$p]:-} $gbps"
    done
  done
  echo "== TLS passthrough bulk (wrk -c4, ${BIG_MB} MiB file over HTTPS), Gbit/s"
  for p in direct fulcrum haproxy; do
    # shellcheck disable=SC2086
    printf '  %-8s %8s\n' "$p" "$(median ${BULK[$p]})"
  done
  # shellcheck disable=SC2086
  echo "  fulcrum/haproxy $(ratio "$(median ${BULK[fulcrum]})" "$(median ${BULK[haproxy]})")  fulcrum/direct $(ratio "$(median ${BULK[fulcrum]})" "$(median ${BULK[direct]})")"
  echo
  stop_all
}
