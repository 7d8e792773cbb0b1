# shellcheck shell=bash
# The TLS suite of scripts/bench.sh (sourced by it; uses its helpers and settings).
#
# One ECDSA P-256 certificate for "localhost", made with openssl for the run.
# - HTTPS termination: wrk keep-alive and Connection: close (a full handshake per
#   request) through fulcrum (protocol = "https") and HAProxy (bind ... ssl crt,
#   mode http, http-reuse always, adding fulcrum's forwarding headers as in the
#   L7 suite) in front of the two nginx backends; the "hyper" row is the same
#   fulcrum process on a second https listener with http1_engine = "hyper";
# - TLS passthrough: wrk downloading a 64 MiB file over HTTPS from an nginx TLS
#   backend through fulcrum (protocol = "tls", routed by SNI) and HAProxy (mode tcp,
#   req.ssl_sni), and direct.

BIG_MB=${BIG_MB:-64}
PASS_BUDGET=${PASS_BUDGET:-$(( BUDGET > 15 ? 15 : BUDGET ))}

suite_tls() {
  local P_WEB1 P_WEB2 P_TLSWEB name
  P_WEB1=$(free_port); P_WEB2=$(free_port); P_TLSWEB=$(free_port)
  declare -A HTTPS PASS
  for name in fulcrum haproxy; do HTTPS[$name]=$(free_port); PASS[$name]=$(free_port); done
  HTTPS[hyper]=$(free_port)
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
name = "https_hyper"
protocol = "https"
bind = "127.0.0.1:${HTTPS[hyper]}"
pool = "web"
tls = [{ cert = "$WORK/site.pem", key = "$WORK/site.key" }]
access_log = false
http1_engine = "hyper"

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
  proxy_exec "$FULCRUM" run -c "$WORK/fulcrum-tls.toml" --workers 1 --log-level info 2>"$WORK/fulcrum-tls.err" &
  PID_fulcrum=$!; PIDS+=($PID_fulcrum)
  PID_hyper=$PID_fulcrum

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
  proxy_exec haproxy -f "$WORK/haproxy-tls.cfg" -db >/dev/null 2>"$WORK/haproxy-tls.err" &
  PID_haproxy=$!; PIDS+=($PID_haproxy)

  for port in "$P_WEB1" "$P_WEB2" "$P_TLSWEB" "${HTTPS[fulcrum]}" "${HTTPS[hyper]}" "${HTTPS[haproxy]}" "${PASS[fulcrum]}" "${PASS[haproxy]}"; do
    wait_port "$port"
  done

  # http_suite takes its ports from HTTP and its URL scheme from SCHEME.
  declare -A HTTP
  for name in fulcrum hyper haproxy; do HTTP[$name]=${HTTPS[$name]}; done
  PROXIES="fulcrum hyper haproxy" SCHEME=https HOST=localhost http_suite https_keepalive "HTTPS keep-alive (TLS termination)"
  PROXIES="fulcrum hyper haproxy" SCHEME=https HOST=localhost WRK_KEY=cps http_suite https_handshake "HTTPS new connections (Connection: close, full handshakes)" -H "Connection: close"

  # Bulk through passthrough: a big file over a few connections. The TLS work is
  # all on the load core (wrk and the nginx TLS backend), which at the usual budget
  # saturates before either proxy does; a smaller budget, the same for both, keeps
  # the proxies setting the pace.
  set_budget "$PASS_BUDGET" "$PID_fulcrum" "$PID_haproxy"
  for _ in $(seq "$ROUNDS"); do
    for p in direct fulcrum haproxy; do
      local pid_var="PID_$p" pid=- before after out
      [ "$p" = direct ] || pid=${!pid_var}
      before=$(snap "$pid")
      out=$(taskset -c "$LOAD_CPU" wrk -t1 -c4 -d"${SECS}s" "https://localhost:${PASS[$p]}/big.bin")
      after=$(snap "$pid")
      read -r gbps mbytes < <(python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
t = re.search(r"requests in [\d.]+\w+, ([\d.]+)(\w+) read", out)
total = float(t.group(1)) * {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[t.group(2)]
print(f"{float(m.group(1)) * scale * 8 / 1e9:.3f} {total / 1e6:.1f}")
PY
)
      python3 "$STATS" add "$SAMPLES" tls_passthrough "$p" gbps "$gbps"
      python3 "$STATS" cost "$SAMPLES" tls_passthrough "$p" "$mbytes" "$TICK" "$before" "$after"
    done
  done
  table tls_passthrough "TLS passthrough bulk (wrk -c4, ${BIG_MB} MiB file over HTTPS; budget $PASS_BUDGET%; µs per MB)"
  stop_all
}
