"""A raw HTTP/2 client for tests/h2.rs: it writes frames as it is told,
valid or not (hyperframe for the frames, hpack for the header blocks), and
prints what the server did, one fact per line, for the Rust test to check.

    python3 tests/h2_client.py SCENARIO PORT [ARG...]

Each scenario is a function below; its docstring says what it does.
"""

import os
import signal
import socket
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Raw:
    """One connection: frames out as given, frames in as they come."""

    def __init__(self, port, settings=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.enc = Encoder()
        self.dec = Decoder()
        self.buf = b""
        self.closed = False
        self.status = {}
        self.body = {}
        self.ended = set()
        self.resets = {}
        self.trailers = {}
        self.settings = {}
        self.goaway = None
        self.order = []
        self.sock.sendall(PREFACE)
        f = SettingsFrame(0)
        f.settings = settings or {}
        self.send(f)

    def send(self, frame):
        self.sock.sendall(frame.serialize())

    def block(self, fields):
        return self.enc.encode(fields)

    def request(self, sid, path, end=True, method="GET", extra=()):
        fields = [
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "h2.test"),
        ] + list(extra)
        f = HeadersFrame(sid)
        f.data = self.block(fields)
        f.flags.add("END_HEADERS")
        if end:
            f.flags.add("END_STREAM")
        self.send(f)

    def data(self, sid, payload, end=False):
        f = DataFrame(sid)
        f.data = payload
        if end:
            f.flags.add("END_STREAM")
        self.send(f)

    def rst(self, sid, code=8):
        f = RstStreamFrame(sid)
        f.error_code = code
        self.send(f)

    def window(self, sid, n):
        f = WindowUpdateFrame(sid)
        f.window_increment = n
        self.send(f)

    def read(self, timeout=5.0):
        """The next frame, or None once the connection is closed (or
        nothing came within `timeout`: then `closed` stays False)."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(self.buf[9 : 9 + length]))
                    self.buf = self.buf[9 + length :]
                    self.note(f)
                    return f
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def note(self, f):
        sid = f.stream_id
        if isinstance(f, HeadersFrame):
            fields = self.dec.decode(f.data)
            if sid in self.status and not any(n in (b":status", ":status") for n, _ in fields):
                self.trailers[sid] = fields
            for name, value in fields:
                if name in (b":status", ":status"):
                    self.status[sid] = int(value)
        elif isinstance(f, DataFrame):
            self.body[sid] = self.body.get(sid, 0) + len(f.data)
        elif isinstance(f, RstStreamFrame):
            self.resets[sid] = f.error_code
        elif isinstance(f, GoAwayFrame):
            self.goaway = (f.last_stream_id, f.error_code)
        elif isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.settings.update(f.settings)
        if "END_STREAM" in f.flags and sid not in self.ended:
            self.ended.add(sid)
            self.order.append(sid)

    def until(self, done, timeout=5.0, acks=True):
        """Read until `done()` is true, the connection closes, or
        `timeout` passes; with `acks`, every DATA octet is given back to
        both windows at once."""
        end = time.time() + timeout
        while not done() and not self.closed:
            left = end - time.time()
            if left <= 0:
                return False
            f = self.read(left)
            if acks and isinstance(f, DataFrame) and f.flow_controlled_length:
                self.window(0, f.flow_controlled_length)
                if f.stream_id not in self.ended:
                    self.window(f.stream_id, f.flow_controlled_length)
        return done()


def order(port):
    """A slow stream (1: 1.5 s) and a quick one (3): the quick one ends
    first."""
    c = Raw(port)
    c.request(1, "/?delay=1500")
    c.request(3, "/")
    c.until(lambda: len(c.ended) == 2)
    print("order", " ".join(map(str, c.order)))
    print("status", c.status.get(1), c.status.get(3))


def window(port):
    """Stream 1 asks for 1 MB and its window is never opened (the
    connection's is); stream 3 asks for 100 kB and is served whole
    meanwhile. Then stream 1's window opens and it ends too."""
    c = Raw(port)
    c.request(1, "/?size=1000000")
    c.request(3, "/?size=100000")
    end = time.time() + 5
    while 3 not in c.ended and time.time() < end and not c.closed:
        f = c.read(1)
        if isinstance(f, DataFrame) and f.flow_controlled_length:
            c.window(0, f.flow_controlled_length)
            if f.stream_id == 3:
                c.window(3, f.flow_controlled_length)
    print("stream3", c.body.get(3, 0), 3 in c.ended)
    # Stream 1 fills its window (on a loaded machine maybe after stream 3
    # ended), and no more comes.
    end = time.time() + 2
    while c.body.get(1, 0) < 65535 and time.time() < end and not c.closed:
        f = c.read(0.2)
        if isinstance(f, DataFrame) and f.flow_controlled_length:
            c.window(0, f.flow_controlled_length)
    c.until(lambda: False, timeout=0.2, acks=False)
    print("stream1_held", c.body.get(1, 0))
    c.window(1, 1_000_000)
    c.until(lambda: 1 in c.ended)
    print("stream1", c.body.get(1, 0), 1 in c.ended)


def stall(port):
    """A 1 MB response and no window update at all: the server gives
    up on the connection."""
    c = Raw(port)
    c.request(1, "/?size=1000000")
    t = time.time()
    c.until(lambda: False, timeout=8, acks=False)
    print("closed", c.closed, "after", round(time.time() - t, 1))


def rapid_reset(port):
    """Streams opened and cancelled at once, 500 of them."""
    c = Raw(port)
    for i in range(500):
        sid = 1 + 2 * i
        c.request(sid, "/?delay=200")
        c.rst(sid)
    c.until(lambda: c.goaway is not None, timeout=5)
    print("goaway", c.goaway)


def continuation(port):
    """A header block in 200 CONTINUATION frames of 10 octets."""
    c = Raw(port)
    block = c.block([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                     (":authority", "h2.test"), ("x-pad", "p" * 1990)])
    f = HeadersFrame(1)
    f.data = block[:10]
    f.flags.add("END_STREAM")
    c.send(f)
    rest = block[10:]
    try:
        for i in range(200):
            g = ContinuationFrame(1)
            g.data = rest[i * 10 : i * 10 + 10] or b"x"
            c.send(g)
    except OSError:
        pass
    c.until(lambda: c.goaway is not None)
    print("goaway", c.goaway)


def malformed(port):
    """An upper-case field name (stream 1), then a good request on the
    same connection (stream 3)."""
    c = Raw(port)
    c.request(1, "/", extra=[("X-Upper", "1")])
    c.until(lambda: 1 in c.resets)
    c.request(3, "/")
    c.until(lambda: 3 in c.ended)
    print("stream1", c.status.get(1), c.resets.get(1))
    print("stream3", c.status.get(3))


def too_many(port, n="101"):
    """`n` slow streams (1.5 s each) at once: one past the limit announced
    (n - 1) is refused."""
    n = int(n)
    c = Raw(port)
    for i in range(n):
        c.request(1 + 2 * i, "/?delay=1500")
    c.until(lambda: len(c.ended) + len(c.resets) >= n, timeout=8)
    print("refused", sorted(c.resets.items()))
    print("answered", sum(1 for s in c.status.values() if s == 200))
    print("announced", c.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS),
          c.settings.get(SettingsFrame.INITIAL_WINDOW_SIZE))


def data_after_end(port):
    """DATA on a stream its HEADERS ended."""
    c = Raw(port)
    c.request(1, "/?delay=1500")
    c.data(1, b"late")
    c.until(lambda: 1 in c.resets or 1 in c.ended)
    print("stream1", c.resets.get(1), c.status.get(1))


def settings_flood(port):
    """SETTINGS frames, 3000 of them."""
    c = Raw(port)
    try:
        for _ in range(3000):
            c.send(SettingsFrame(0))
    except OSError:
        pass
    c.until(lambda: c.goaway is not None)
    print("goaway", c.goaway)


def ping_flood(port):
    """PING frames, 3000 of them, with nothing asked between them."""
    c = Raw(port)
    try:
        for _ in range(3000):
            p = PingFrame(0)
            p.opaque_data = b"12345678"
            c.send(p)
    except OSError:
        pass
    c.until(lambda: c.goaway is not None)
    print("goaway", c.goaway)


def bomb(port):
    """A 4 KiB field in the dynamic table, named again 40 times (one
    octet each): the header list is past the 64 KiB announced."""
    c = Raw(port)
    fields = [(":method", "GET"), (":scheme", "http"), (":path", "/"),
              (":authority", "h2.test")] + [("x-bomb", "b" * 4000)] * 40
    c.request(1, "/", extra=fields[4:])
    c.until(lambda: 1 in c.ended or 1 in c.resets)
    print("stream1", c.status.get(1))
    c.request(3, "/")
    c.until(lambda: 3 in c.ended)
    print("stream3", c.status.get(3))


def cancel(port, admin):
    """Stream 1 (3 s) is cancelled by the client after 100 ms; stream 3
    goes on. While the connection stays, the proxy's admin port says how
    many upstream connections are active (polled for up to 2 s, until
    none is)."""
    c = Raw(port)
    c.request(1, "/?delay=3000")
    time.sleep(0.1)
    c.rst(1)
    c.request(3, "/")
    c.until(lambda: 3 in c.ended)
    print("stream3", c.status.get(3), "stream1", c.status.get(1))
    active = active_upstreams(admin)
    print("active", active)


def drain(port, pid):
    """A slow stream, then SIGTERM to the proxy: GOAWAY, and the stream
    still ends with its answer."""
    c = Raw(port)
    c.request(1, "/?delay=800")
    time.sleep(0.2)
    os.kill(int(pid), signal.SIGTERM)
    c.until(lambda: 1 in c.ended and c.goaway is not None)
    print("goaway", c.goaway)
    print("stream1", c.status.get(1), c.body.get(1, 0) > 0)


def post(port):
    """A POST with a 300 kB body in DATA frames of 16 kB (more than a
    stream window: the server must give credit back as it goes), no
    content-length."""
    c = Raw(port)
    c.request(1, "/echo", end=False, method="POST")
    body = bytes(range(256)) * 1172
    sent = 0
    stream, conn = 65535, 65535
    while sent < len(body):
        n = min(16384, len(body) - sent, stream, conn)
        if n <= 0:
            f = c.read(2)
            if f is None:
                break
            if isinstance(f, WindowUpdateFrame) and f.stream_id == 0:
                conn += f.window_increment
            elif isinstance(f, WindowUpdateFrame) and f.stream_id == 1:
                stream += f.window_increment
            elif isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                stream += f.settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, 65535) - 65535
            continue
        c.data(1, body[sent : sent + n], end=sent + n == len(body))
        sent += n
        stream -= n
        conn -= n
    c.until(lambda: 1 in c.ended)
    print("sent", sent, "status", c.status.get(1), "echoed", c.body.get(1, 0))


def deadline(port):
    """Stream 1 outlives the request deadline (1 s); stream 3 (200 ms) and
    stream 5, sent after it, are answered on the same connection."""
    c = Raw(port)
    c.request(1, "/?delay=3000")
    c.request(3, "/?delay=200")
    c.until(lambda: 3 in c.ended)
    c.until(lambda: 1 in c.ended or 1 in c.resets, timeout=4)
    c.request(5, "/")
    c.until(lambda: 5 in c.ended)
    print("stream1", c.status.get(1), "stream3", c.status.get(3), "stream5", c.status.get(5))


def oversize(port, admin):
    """An upload with no length that passes --max-body-size: 413, and the
    upstream connection that was taking it is let go of at once, while the
    client stays."""
    c = Raw(port)
    c.request(1, "/echo", end=False, method="POST")
    c.data(1, b"x" * 1000)
    time.sleep(0.3)  # (placed, connected, its first octets sent)
    for _ in range(3):
        c.data(1, b"x" * 1000)
    c.until(lambda: 1 in c.status)
    print("stream1", c.status.get(1))
    print("active", active_upstreams(admin))


def active_upstreams(admin, want=0, wait=2.0):
    """The proxy's active upstream connections, polled until `want` (or
    `wait` seconds)."""
    active = None
    end = time.time() + wait
    while time.time() < end:
        a = socket.create_connection(("127.0.0.1", int(admin)))
        a.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n"
                  % admin.encode())
        text = b""
        while True:
            chunk = a.recv(65536)
            if not chunk:
                break
            text += chunk
        a.close()
        for l in text.decode().splitlines():
            if l.startswith("ringmux_upstream_connections{") and 'state="active"' in l:
                active = int(l.split()[-1])
        if active == want:
            break
        time.sleep(0.05)
    return active


def bomb_shut(port):
    """The HPACK bomb of `bomb` with every stream window shut: the 431
    waits for the window, then ends its stream."""
    c = Raw(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    fields = [("x-bomb", "b" * 4000)] * 40
    c.request(1, "/", extra=fields)
    c.until(lambda: 1 in c.status, acks=False)
    time.sleep(0.3)
    ended_before = 1 in c.ended
    c.window(1, 1000)
    c.until(lambda: 1 in c.ended, acks=False)
    print("stream1", c.status.get(1), ended_before, 1 in c.ended)


def idle_goaway(port):
    """One request, then nothing: past the idle timeout the proxy says
    GOAWAY before it closes."""
    c = Raw(port)
    c.request(1, "/")
    c.until(lambda: 1 in c.ended)
    c.until(lambda: c.closed, timeout=5)
    print("goaway", c.goaway, "closed", c.closed)


def stub_body(port):
    """Every stream window shut; an HPACK bomb whose HEADERS leave the
    stream open (its 431 waits for the window), then DATA on it that reads
    as an HTTP/1.1 request, then a good request on stream 3. The DATA must
    reach nothing: the origin sees stream 3's request only."""
    c = Raw(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    c.request(1, "/", end=False, extra=[("x-bomb", "b" * 4000)] * 40)
    c.until(lambda: 1 in c.status, acks=False)
    c.data(1, b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    time.sleep(0.2)
    c.request(3, "/")
    c.until(lambda: 3 in c.status, acks=False)
    time.sleep(0.3)
    print("stream1", c.status.get(1), "stream3", c.status.get(3))


def stub_reset(port):
    """Every stream window shut; an HPACK bomb and its RST_STREAM in one
    write, then nothing: the connection goes idle and is closed (GOAWAY)
    after the idle timeout."""
    c = Raw(port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    f = HeadersFrame(1)
    f.data = c.block([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                      (":authority", "h2.test")] + [("x-bomb", "b" * 4000)] * 40)
    f.flags.add("END_HEADERS")
    r = RstStreamFrame(1)
    r.error_code = 8
    c.sock.sendall(f.serialize() + r.serialize())
    c.until(lambda: c.closed, timeout=4, acks=False)
    print("closed", c.closed, "goaway", c.goaway)


def trailers(port):
    """A GET whose answer (chunked from an HTTP/1.1 origin) has trailers:
    they come as HEADERS that end the stream, after the body."""
    c = Raw(port)
    c.request(1, "/", extra=[("te", "trailers")])
    c.until(lambda: 1 in c.ended)
    fields = [(n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
              for n, v in c.trailers.get(1, [])]
    print("stream1", c.status.get(1), c.body.get(1, 0), fields)


if __name__ == "__main__":
    name, port, *rest = sys.argv[1:]
    globals()[name](int(port), *rest)
