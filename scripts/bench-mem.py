#!/usr/bin/env python3
"""Memory per connection for scripts/bench.sh: prints the proxy's RSS growth per client.

  bench-mem.py idle PORT PID N             N connections that never send anything
  bench-mem.py after PORT PID N PATH       N keep-alive clients idle after one GET PATH
  bench-mem.py slow PORT PID N PATH SECS   N clients reading GET PATH at 10 KB/s
                                           (on stderr: "kept B", per client, once
                                           they left)
  bench-mem.py h2after PORT PID N PATH     N HTTP/2 (h2c, prior knowledge) clients
                                           idle after one GET PATH
  bench-mem.py h2unread PORT PID N PATH SECS
                                           N HTTP/2 clients, each asking GET PATH on
                                           100 streams at once with every window
                                           wide open, and reading nothing
  bench-mem.py h2upload PORT PID N PATH SECS
                                           N HTTP/2 clients, each POSTing to PATH on
                                           100 streams that declare 10 MB, send
                                           60 KiB (as the windows allow) and stop

One cold round each: a second round would mostly reuse what the first freed and show
the allocator's caching, not what a connection costs.
"""
import socket
import sys
import time


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"bench-mem.py: no VmRSS for pid {pid}")


def settle(pid):
    # RSS stops moving once the proxy has set up every connection.
    last, same = rss(pid), 0
    while same < 5:
        time.sleep(0.1)
        now = rss(pid)
        same = same + 1 if now == last else 0
        last = now
    return last


def request(path):
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def read_response(sock):
    """Reads one whole Content-Length response; returns its body length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("bench-mem.py: the proxy closed before a response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise SystemExit("bench-mem.py: the response has no Content-Length")
    got = len(body)
    while got < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise SystemExit("bench-mem.py: the response ended early")
        got += len(chunk)
    return length


def client(port, rcvbuf, ask):
    """A connection with a receive buffer of `rcvbuf` bytes (so the proxy, not
    this kernel, holds what is not read) that has sent `ask`."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(ask)
    return s


def idle(port, pid, n):
    before = settle(pid)
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    after = settle(pid)
    return (after - before) / n, conns


def after(port, pid, n, ask, read):
    """N clients, each idle once it sent `ask` and `read` its answer."""
    before = settle(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(ask)
        read(s)
        conns.append(s)
    grown = settle(pid)
    return (grown - before) / n, conns


# HTTP/2 frames (RFC 9113 §4.1): 24-bit length, type, flags, 31-bit stream id.
def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_headers(stream, path):
    """GET PATH on `stream` (HPACK, RFC 7541: indexed :method GET and :scheme http,
    literal :path and :authority; no Huffman)."""
    path = path.encode()
    block = bytes([0x82, 0x86, 0x44, len(path)]) + path + bytes([0x41, 9]) + b"localhost"
    return h2_frame(1, 0x5, stream, block)  # HEADERS, END_STREAM | END_HEADERS


def h2_get(path):
    """The client preface, an empty SETTINGS, and GET PATH on stream 1."""
    return H2_PREFACE + h2_frame(4, 0, 0) + h2_headers(1, path)


def h2unread(port, pid, n, path, secs):
    """Each client grants the largest windows HTTP/2 has (RFC 9113 §6.5.2, §6.9.1),
    asks PATH on 100 streams and reads nothing: what the proxy then queues for it
    is bounded only by its own per-stream and per-connection limits."""
    most = 2**31 - 1
    hello = (H2_PREFACE + h2_frame(4, 0, 0, (4).to_bytes(2, "big") + most.to_bytes(4, "big"))
             + h2_frame(8, 0, 0, (most - 65535).to_bytes(4, "big")))
    before = settle(pid)
    asks = hello + b"".join(h2_headers(2 * i + 1, path) for i in range(100))
    conns = [client(port, 4096, asks) for _ in range(n)]
    # The server's SETTINGS came first on each (unread, as all else): acknowledged.
    time.sleep(0.3)
    for s in conns:
        s.sendall(h2_frame(4, 0x1, 0))
    end = time.monotonic() + secs
    peak = before
    while time.monotonic() < end:
        peak = max(peak, rss(pid))
        time.sleep(0.1)
    return (peak - before) / n, conns


def h2_post(stream, path, length):
    """POST PATH on `stream` declaring `length` bytes, body to follow (HPACK:
    indexed :method POST, :scheme http; literal :path, :authority and
    content-length, static name index 28; no Huffman)."""
    path, length = path.encode(), str(length).encode()
    block = (bytes([0x83, 0x86, 0x44, len(path)]) + path + bytes([0x41, 9]) + b"localhost"
             + bytes([0x0F, 0x0D, len(length)]) + length)
    return h2_frame(1, 0x4, stream, block)  # HEADERS, END_HEADERS


class Uploader:
    """One HTTP/2 client sending each of its streams' bodies up to `cap` bytes,
    within the windows the proxy grants (RFC 9113 §6.9), then nothing more."""

    def __init__(self, port, path, cap):
        self.sock = client(port, 1 << 20, H2_PREFACE + h2_frame(4, 0, 0)
                           + b"".join(h2_post(2 * i + 1, path, 10_000_000) for i in range(100)))
        self.sock.setblocking(False)
        self.buf, self.cap = b"", cap
        self.conn_window, self.initial = 65535, 65535
        self.sent = {2 * i + 1: 0 for i in range(100)}
        self.window = {}

    def pump(self):
        try:
            while chunk := self.sock.recv(65536):
                self.buf += chunk
        except BlockingIOError:
            pass
        while len(self.buf) >= 9 and len(self.buf) >= 9 + int.from_bytes(self.buf[:3], "big"):
            length, kind, flags = int.from_bytes(self.buf[:3], "big"), self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload, self.buf = self.buf[9:9 + length], self.buf[9 + length:]
            if kind == 4 and not flags & 0x1:
                for i in range(0, len(payload), 6):
                    if int.from_bytes(payload[i:i + 2], "big") == 4:  # INITIAL_WINDOW_SIZE
                        self.initial = int.from_bytes(payload[i + 2:i + 6], "big")
                self.sock.sendall(h2_frame(4, 0x1, 0))
            elif kind == 8:
                grant = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if stream == 0:
                    self.conn_window += grant
                elif stream in self.sent:
                    self.window[stream] = self.window.get(stream, self.initial) + grant
            elif kind == 3:
                self.sent.pop(stream, None)  # the proxy gave up on it
        for stream, done in self.sent.items():
            window = self.window.get(stream, self.initial)
            size = min(16384, window, self.conn_window, self.cap - done)
            if size <= 0:
                continue
            try:
                self.sock.send(h2_frame(0, 0, stream, b"u" * size))
            except BlockingIOError:
                return
            self.sent[stream] = done + size
            self.window[stream] = window - size
            self.conn_window -= size


def h2upload(port, pid, n, path, secs):
    before = settle(pid)
    clients = [Uploader(port, path, 60 * 1024) for _ in range(n)]
    end = time.monotonic() + secs
    peak = before
    while time.monotonic() < end:
        for c in clients:
            c.pump()
        peak = max(peak, rss(pid))
        time.sleep(0.05)
    return (peak - before) / n, [c.sock for c in clients]


def h2_read_response(sock):
    """Reads frames until stream 1 ends, acknowledging the server's SETTINGS."""
    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("bench-mem.py: the proxy closed before the HTTP/2 response ended")
            buf += chunk
        length, kind, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        buf = buf[9 + length:]
        if kind == 4 and not flags & 0x1:
            sock.sendall(h2_frame(4, 0x1, 0))  # SETTINGS ACK
        if kind == 7:
            raise SystemExit("bench-mem.py: the proxy sent GOAWAY")
        if stream == 1 and kind in (0, 1) and flags & 0x1:
            return


def slow(port, pid, n, path, secs):
    """Each client reads 1 KB every 100 ms (10 KB/s) with a small receive buffer,
    so the proxy, not the client's kernel, has to hold back the backend."""
    before = settle(pid)
    conns = [client(port, 16384, request(path)) for _ in range(n)]
    end = time.monotonic() + secs
    peak = before
    while time.monotonic() < end:
        tick = time.monotonic()
        for s in conns:
            try:
                s.recv(1024, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        peak = max(peak, rss(pid))
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    for c in conns:
        c.close()
    # What the proxy still holds once they are gone: memory it did not return.
    # Give every proxy two seconds first (fulcrum trims its heap once a second).
    time.sleep(2)
    kept = settle(pid)
    print(f"kept {max(kept - before, 0) / n:.0f}", file=sys.stderr)
    return (peak - before) / n, []


def main(argv):
    mode, port, pid, n = argv[1], int(argv[2]), argv[3], int(argv[4])
    if mode == "idle":
        per, conns = idle(port, pid, n)
    elif mode == "after":
        per, conns = after(port, pid, n, request(argv[5]), read_response)
    elif mode == "h2after":
        per, conns = after(port, pid, n, h2_get(argv[5]), h2_read_response)
    elif mode == "h2unread":
        per, conns = h2unread(port, pid, n, argv[5], float(argv[6]))
    elif mode == "h2upload":
        per, conns = h2upload(port, pid, n, argv[5], float(argv[6]))
    elif mode == "slow":
        per, conns = slow(port, pid, n, argv[5], float(argv[6]))
    else:
        raise SystemExit(f"bench-mem.py: unknown mode {mode}")
    for c in conns:
        c.close()
    print(f"{max(per, 0):.0f}")


if __name__ == "__main__":
    main(sys.argv)
