#!/usr/bin/env python3
"""Counts UDP replies that reach the wrong client through a fulcrum binary.

  scripts/udp-misdelivery.py [FULCRUM] [RUNS] [CLIENTS] [MAX_FLOWS]

Each run starts `FULCRUM udp` with --max-flows MAX_FLOWS (responses 0, then 1) in
front of an echo backend that answers each datagram after a random 0-50 ms, sends
one datagram from each of CLIENTS sockets, and counts replies that carry another
client's payload. The same check as tests/udp_eviction.rs, for any build.
"""
import heapq
import os
import random
import socket
import subprocess
import sys
import threading
import time

FULCRUM = sys.argv[1] if len(sys.argv) > 1 else "target/release/fulcrum"
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
CLIENTS = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
MAX_FLOWS = sys.argv[4] if len(sys.argv) > 4 else "100"


def late_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    due, lock, wake = [], threading.Lock(), threading.Event()

    def receive():
        while True:
            data, peer = sock.recvfrom(65536)
            with lock:
                heapq.heappush(due, (time.monotonic() + random.uniform(0, 0.05), data, peer))
            wake.set()

    def send():
        while True:
            with lock:
                wait = due[0][0] - time.monotonic() if due else 0.5
                while due and due[0][0] <= time.monotonic():
                    _, data, peer = heapq.heappop(due)
                    sock.sendto(data, peer)
            wake.wait(max(wait, 0.0005))
            wake.clear()

    threading.Thread(target=receive, daemon=True).start()
    threading.Thread(target=send, daemon=True).start()
    return sock.getsockname()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(backend, responses):
    port = free_port()
    proc = subprocess.Popen(
        [FULCRUM, "udp", "--listen", f"127.0.0.1:{port}", "--backend", f"{backend[0]}:{backend[1]}",
         "--max-flows", MAX_FLOWS, "--responses", str(responses), "--flow-idle-timeout", "1s",
         "--no-access-log", "--workers", "1", "--log-level", "error"],
        stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        clients = []
        for i in range(CLIENTS):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.setblocking(False)
            clients.append(c)
        for i, c in enumerate(clients):
            for _ in range(1000):
                try:
                    c.sendto(f"client {i} asks".encode(), ("127.0.0.1", port))
                    break
                except BlockingIOError:
                    time.sleep(0.001)
        right = wrong = 0
        last = time.monotonic()
        while time.monotonic() - last < 1.0:
            got = False
            for i, c in enumerate(clients):
                try:
                    while True:
                        data = c.recv(128)
                        got = True
                        if data == f"client {i} asks".encode():
                            right += 1
                        else:
                            wrong += 1
                except BlockingIOError:
                    pass
            if got:
                last = time.monotonic()
            else:
                time.sleep(0.005)
        for c in clients:
            c.close()
        return right, wrong
    finally:
        proc.terminate()
        proc.wait()


def main():
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CLIENTS + 1024), hard))
    backend = late_echo()
    for responses in (0, 1):
        wrongs = []
        for _ in range(RUNS):
            right, wrong = run(backend, responses)
            wrongs.append(wrong)
            print(f"responses={responses}: {right} replies to their own client, {wrong} to another", flush=True)
        print(f"responses={responses}: misdelivered per run {wrongs}, total {sum(wrongs)} over {RUNS} runs", flush=True)


if __name__ == "__main__":
    main()
