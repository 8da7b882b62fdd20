"""An HTTP/2 origin (h2c by prior knowledge) whose answers the path
chooses, for tests/upstream_h2.rs. Built on the `h2` library's server side.
A connection that does not open with the preface gets HTTP/1.1 (GETs,
answered `path=P proto=http/1.1 conn=C`).

Prints `listening on HOST:PORT` once it accepts. Paths:
  /stats          conns=N streams=M cancels=K (RST_STREAM CANCEL received)
  /hold/NAME      on the first connection only: held until three are held,
                  then GOAWAY naming the first as the last processed; the
                  first is answered, the other two never are (a new
                  connection answers them)
  /rev/NAME       held until three are held, then answered last first
  /slow           never answered
  /freeze         its connection goes silent (no FIN, nothing read)
  /stray/NAME     the answer, then a stray HEADERS and DATA on its stream
  /reset          RST_STREAM INTERNAL_ERROR
  /cut            a head with content-length 100, ten octets, then the close
  /trailers       a body, then trailers (grpc-status: 0)
  /echo           the request body back (once it is whole; `Expect:
                  100-continue` gets its 100 first)
  /headers        the request's fields, one `name: value` line each
  /big/N          N octets (as the windows allow)
  /big-close/N    N octets, then the connection's close
  anything else   200, "path=P stream=S conn=C"
"""

import socket
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.errors

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
lock = threading.Lock()
stats = {"conns": 0, "streams": 0, "cancels": 0}
held_first = []  # (conn, stream, name) held on the first connection
rev_held = []


def body_of(path, stream, conn_no):
    return f"path={path} stream={stream} conn={conn_no}".encode()


class Conn:
    def __init__(self, sock, no):
        self.sock = sock
        self.no = no
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=cfg)
        self.paths = {}
        self.bodies = {}
        self.pending_big = {}  # stream -> octets still to send
        self.close_after = set()  # streams whose end closes the connection
        self.wlock = threading.RLock()

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def answer(self, stream, status, body, extra=()):
        headers = [(":status", str(status)), ("content-length", str(len(body)))]
        headers.extend(extra)
        self.h2.send_headers(stream, headers)
        self.pending_big[stream] = body
        self.push_big()

    def run(self):
        first = b""
        while len(first) < 24:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            first += data
            if not PREFACE.startswith(first[:24]):
                self.http1(first)
                return
        self.h2.initiate_connection()
        self.flush()
        data = first
        while True:
            if not data:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
            with self.wlock:
                try:
                    events = self.h2.receive_data(data)
                except Exception:
                    return
                for ev in events:
                    self.on_event(ev)
                self.push_big()
                self.flush()
            data = b""

    def http1(self, data):
        """HTTP/1.1 for whoever does not open with the preface: GETs only,
        kept alive."""
        while True:
            while b"\r\n\r\n" not in data:
                try:
                    more = self.sock.recv(65536)
                except OSError:
                    return
                if not more:
                    return
                data += more
            head, data = data.split(b"\r\n\r\n", 1)
            path = head.split(b" ")[1].decode()
            body = f"path={path} proto=http/1.1 conn={self.no}".encode()
            self.sock.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )

    def push_big(self):
        """Send what the windows allow of the bodies waiting."""
        for stream, left in list(self.pending_big.items()):
            if not left:
                self.h2.send_data(stream, b"", end_stream=True)
            while left:
                room = min(self.h2.local_flow_control_window(stream), self.h2.max_outbound_frame_size)
                if room <= 0:
                    break
                n = min(room, len(left))
                piece, left = left[:n], left[n:]
                self.h2.send_data(stream, piece, end_stream=not left)
            if left:
                self.pending_big[stream] = left
            else:
                del self.pending_big[stream]
                if stream in self.close_after:
                    self.flush()
                    self.sock.shutdown(socket.SHUT_RDWR)

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            headers = dict(ev.headers)
            self.paths[ev.stream_id] = headers.get(":path", "")
            self.heads = getattr(self, "heads", {})
            self.heads[ev.stream_id] = ev.headers
            self.bodies[ev.stream_id] = b""
            with lock:
                stats["streams"] += 1
            if headers.get("expect", "").lower() == "100-continue":
                self.h2.send_headers(ev.stream_id, [(":status", "100")])
            if ev.stream_ended:
                self.request_done(ev.stream_id)
        elif isinstance(ev, h2.events.DataReceived):
            self.bodies[ev.stream_id] = self.bodies.get(ev.stream_id, b"") + ev.data
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.stream_ended:
                self.request_done(ev.stream_id)
        elif isinstance(ev, h2.events.StreamReset):
            if ev.error_code == h2.errors.ErrorCodes.CANCEL:
                with lock:
                    stats["cancels"] += 1
            self.pending_big.pop(ev.stream_id, None)

    def request_done(self, stream):
        path = self.paths.get(stream, "")
        if self.bodies.get(stream) is None:
            return
        if path == "/stats":
            with lock:
                text = "conns={conns} streams={streams} cancels={cancels}".format(**stats)
            self.answer(stream, 200, text.encode())
        elif path.startswith("/hold/") and self.no == 1:
            held_first.append((stream, path))
            if len(held_first) == 3:
                first = held_first[0][0]
                self.answer(first, 200, body_of(held_first[0][1], first, self.no))
                self.h2.close_connection(last_stream_id=first)
        elif path.startswith("/rev/"):
            with lock:
                rev_held.append((self, stream, path))
                due = list(reversed(rev_held)) if len(rev_held) == 3 else []
                if due:
                    rev_held.clear()
            for c, s, p in due:
                with c.wlock:
                    c.answer(s, 200, body_of(p, s, c.no))
                    c.flush()
        elif path == "/headers":
            text = "".join(f"{n}: {v}\n" for n, v in self.heads.get(stream, []))
            self.answer(stream, 200, text.encode())
        elif path.startswith("/stray/"):
            # The answer, then a second one for the same (closed) stream:
            # HEADERS (:status 200 from the static table) and DATA, written
            # past the h2 library, which would refuse them.
            self.answer(stream, 200, body_of(path, stream, self.no))
            self.flush()
            sid = stream.to_bytes(4, "big")
            stray = b"stray response for someone else"
            self.sock.sendall(b"\x00\x00\x01\x01\x04" + sid + b"\x88"
                              + len(stray).to_bytes(3, "big") + b"\x00\x01" + sid + stray)
        elif path == "/freeze":
            # The connection goes silent: nothing read, nothing sent.
            time.sleep(3600)
        elif path == "/slow":
            pass
        elif path == "/reset":
            self.h2.reset_stream(stream, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        elif path == "/cut":
            self.h2.send_headers(stream, [(":status", "200"), ("content-length", "100")])
            self.h2.send_data(stream, b"0123456789")
            self.flush()
            self.sock.shutdown(socket.SHUT_RDWR)
        elif path == "/trailers":
            self.h2.send_headers(stream, [(":status", "200"), ("content-type", "application/grpc")])
            self.h2.send_data(stream, b"\x00\x00\x00\x00\x02hi")
            self.h2.send_headers(stream, [("grpc-status", "0"), ("grpc-message", "ok")], end_stream=True)
        elif path == "/echo":
            self.answer(stream, 200, self.bodies[stream])
        elif path.startswith("/big-close/"):
            n = int(path[len("/big-close/"):])
            self.h2.send_headers(stream, [(":status", "200"), ("content-length", str(n))])
            self.close_after.add(stream)
            self.pending_big[stream] = b"z" * n
        elif path.startswith("/big/"):
            n = int(path[len("/big/"):])
            self.h2.send_headers(stream, [(":status", "200"), ("content-length", str(n))])
            self.pending_big[stream] = b"x" * n
        else:
            self.answer(stream, 200, body_of(path, stream, self.no))
        self.bodies[stream] = None


def main():
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    host, port = srv.getsockname()
    print(f"listening on {host}:{port}", flush=True)
    while True:
        sock, _ = srv.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with lock:
            stats["conns"] += 1
            no = stats["conns"]
        threading.Thread(target=Conn(sock, no).run, daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
