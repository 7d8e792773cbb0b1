#!/usr/bin/env python3
"""A real gRPC server and client (grpcio) for tests/grpc.rs, with raw-bytes methods
so that no generated code is needed.

  peer.py server NAME [--tls CERT KEY] [--max-age-ms N]
      serves fulcrum.test.Echo on 127.0.0.1:0; prints "ready PORT" when listening.
      With --max-age-ms, each connection gets a GOAWAY once that old (gRPC's
      MAX_CONNECTION_AGE) and its calls in flight finish.
  peer.py client TARGET SCENARIO [--tls CA NAME]
      runs SCENARIO against TARGET through one channel (one connection) and prints
      one JSON line: what each call gave.

Methods of fulcrum.test.Echo (requests and replies are raw bytes):
  Who         -> the server's NAME
  Echo        -> the request
  Count       -> server stream: int(request) messages of 1 KiB
  Sum         -> client stream: the total length, as text
  Chat        -> bidi: each message echoed as it comes
  Fail        -> INVALID_ARGUMENT with trailing metadata x-detail: why
  Slow        -> sleeps float(request) seconds, then replies
  Die         -> server stream: 3 messages, then the process exits at once
  SetHealth   -> the health status grpc.health.v1.Health/Check answers from now
                 on (1 SERVING, 2 NOT_SERVING; the request's text)
and grpc.health.v1.Health/Check itself, written out by hand: a HealthCheckResponse
with the status set, SERVING at first.
"""
import json
import os
import sys
import time
from concurrent import futures

import grpc

SERVICE = "fulcrum.test.Echo"


def serve(name, tls, max_age_ms):
    options = [("grpc.max_receive_message_length", 16 << 20),
               ("grpc.max_send_message_length", 16 << 20)]
    if max_age_ms:
        options += [("grpc.max_connection_age_ms", max_age_ms),
                    ("grpc.max_connection_age_grace_ms", 10000)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options)

    def who(request, context):
        return name.encode()

    def echo(request, context):
        return request

    def count(request, context):
        for i in range(int(request)):
            yield bytes([i % 256]) * 1024

    def total(requests, context):
        return str(sum(len(r) for r in requests)).encode()

    def chat(requests, context):
        for r in requests:
            yield r

    def fail(request, context):
        context.set_trailing_metadata((("x-detail", "why"),))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "refused on purpose")

    def slow(request, context):
        time.sleep(float(request))
        return b"late"

    health = {"status": 1}

    def set_health(request, context):
        health["status"] = int(request)
        return b"ok"

    def check(request, context):
        # HealthCheckResponse { ServingStatus status = 1; }: field 1, varint.
        return bytes([0x08, health["status"]])

    def die(request, context):
        for i in range(3):
            yield b"before"
            time.sleep(0.05)
        os._exit(1)

    handlers = {
        "Who": grpc.unary_unary_rpc_method_handler(who),
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Sum": grpc.stream_unary_rpc_method_handler(total),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Die": grpc.unary_stream_rpc_method_handler(die),
        "SetHealth": grpc.unary_unary_rpc_method_handler(set_health),
    }
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, handlers),
        grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}),
    ))
    if tls:
        cert, key = (open(f, "rb").read() for f in tls)
        creds = grpc.ssl_server_credentials(((key, cert),))
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"ready {port}", flush=True)
    server.wait_for_termination()
    print("stopped", flush=True)


def outcome(call):
    """'ok:<detail>' or the status code's name."""
    try:
        return "ok:" + call()
    except grpc.RpcError as e:
        return e.code().name


def client(target, scenario, tls):
    options = [("grpc.max_receive_message_length", 16 << 20),
               ("grpc.max_send_message_length", 16 << 20)]
    if tls:
        ca, name = tls
        creds = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)

    def method(kind, name):
        return getattr(channel, kind)(f"/{SERVICE}/{name}")

    who = method("unary_unary", "Who")
    result = {}
    if scenario == "suite":
        big = bytes(range(256)) * (3 * 4096)  # 3 MiB
        result["unary"] = outcome(lambda: method("unary_unary", "Echo")(b"hello", timeout=10).decode())
        result["big"] = outcome(lambda: str(method("unary_unary", "Echo")(big, timeout=30) == big))
        result["server_stream"] = outcome(lambda: str(sum(
            len(m) for m in method("unary_stream", "Count")(b"100", timeout=10))))
        result["client_stream"] = outcome(lambda: method("stream_unary", "Sum")(
            iter([b"x" * 1000] * 100), timeout=10).decode())
        result["bidi"] = outcome(lambda: str(sum(
            len(m) for m in method("stream_stream", "Chat")(iter([b"y" * 500] * 100), timeout=10))))

        def failing():
            try:
                method("unary_unary", "Fail").with_call(b"", timeout=10)
            except grpc.RpcError as e:
                trailing = dict(e.trailing_metadata() or ())
                return f"{e.code().name}:{e.details()}:{trailing.get('x-detail')}"
            return "no error"
        result["error"] = failing()
        result["deadline"] = outcome(lambda: method("unary_unary", "Slow")(b"3", timeout=0.5).decode())
    elif scenario.startswith("balance:"):
        counts = {}
        for _ in range(int(scenario.split(":")[1])):
            got = outcome(lambda: who(b"", timeout=10).decode())
            counts[got] = counts.get(got, 0) + 1
        result["counts"] = counts
    elif scenario.startswith("sethealth:"):
        result["set"] = outcome(lambda: method("unary_unary", "SetHealth")(
            scenario.split(":")[1].encode(), timeout=10).decode())
    elif scenario == "die":
        result["died"] = outcome(lambda: str(len(list(method("unary_stream", "Die")(b"", timeout=10)))))
        result["after"] = [outcome(lambda: who(b"", timeout=10).decode()) for _ in range(6)]
    elif scenario.startswith("many:"):
        # Calls from 8 threads at once, each a few ms long, for a while.
        def call(_):
            return outcome(lambda: method("unary_unary", "Slow")(b"0.005", timeout=10).decode())
        with futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(call, range(int(scenario.split(":")[1]))))
        result["calls"] = len(results)
        result["failed"] = [r for r in results if not r.startswith("ok:")]
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(result), flush=True)


def main():
    args = sys.argv[1:]
    tls = None
    if "--tls" in args:
        i = args.index("--tls")
        tls = (args[i + 1], args[i + 2])
        del args[i:i + 3]
    max_age_ms = 0
    if "--max-age-ms" in args:
        i = args.index("--max-age-ms")
        max_age_ms = int(args[i + 1])
        del args[i:i + 2]
    if args[0] == "server":
        serve(args[1], tls, max_age_ms)
    elif args[0] == "client":
        client(args[1], args[2], tls)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
