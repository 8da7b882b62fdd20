"""The harness's own HTTP/1.1 client: one GET over a fresh connection
(start-up checks, origin counters, admin scrapes) and the response reader
the idle client shares (Content-Length or chunked bodies)."""
import socket
import ssl


def tls_context():
    """The harness's TLS client: the bench's own certificate is not checked
    (the proxies under test are; this only drives them)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def http_get(addr, path="/", timeout=5.0, tls=False):
    """One GET over a fresh connection (over TLS if tls); returns (status,
    body) or raises."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        # Over TLS the name asked for (SNI) and the Host agree, as a
        # browser's do: a Host the certificate does not cover is a 421.
        s = tls_context().wrap_socket(raw, server_hostname="bench.test") if tls else raw
        name = "bench.test" if tls else addr
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        return read_response(s)


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked = 0, False
    for ln in lines[1:]:
        k, _, v = ln.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
        elif k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:  # the echo module's responses
        return status, read_chunked(s, body)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status, body


def read_chunked(s, buf):
    """The decoded body of a chunked response whose body starts with buf."""
    out = b""
    while True:
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a chunk size")
            buf += chunk
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):  # trailers
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed in the trailers")
                buf += chunk
            return out
        while len(buf) < size + 2:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed in a chunk")
            buf += chunk
        out += buf[:size]
        buf = buf[size + 2:]
