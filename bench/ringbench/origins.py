"""The origins on CPU 0: the shared one (Origins: nginx with or without the
echo module, or ringmux-origin), skewed's fast/slow pair (SkewedOrigin) and
warmup's A/B pair (WarmupOrigins), with their start-up checks and the
request counts the scenarios read from them."""
import os
import statistics
import sys
import tempfile
import time

from . import common, nginx
from .client import http_get
from .common import BODY20, ECHO_MODULE, LARGE, PATTERN, log
from .procs import LineCounter, free_port, spawn, stop, wait_line, wait_port

# Keep-alive without practical limits (a proxy's pooled upstream
# connections must never be closed by the origin during a run).
ORIGIN_HTTP = ["server_tokens off", "default_type text/plain",
               "keepalive_timeout 3600s", "keepalive_requests 1000000000"]


def resolve(path, kind):
    """A scenario path for an origin kind ("nginx" or "ringmux")."""
    return path[kind] if isinstance(path, dict) else path


def echo_location(path, secs):
    """A location that answers after `secs` (echo module), then the 20-byte body."""
    return f"""
        location {path} {{
            echo_sleep {secs};
            echo -n "{BODY20}";
        }}"""


def start_nginx_origin(tmp, fd_limit, echo):
    """The nginx origin on CPU 0: one worker, no access log, keep-alive
    without practical limits (a proxy's pooled upstream connections must
    never be closed by the origin during a run).
      /          return 200 with the 20-byte body (a static file would cost an
                 open-file-cache lookup and a sendfile per response; `return`
                 writes the body from memory with the headers)
      /large.bin a 1 MiB static file (sendfile, cached open), the same bytes
                 as ringmux-origin ?size=1048576
      /slow      echo_sleep 0.2, then the 20-byte body (echo module)
      /delay5    echo_sleep 0.005, then the 20-byte body (echo module)
      /delay1    echo_sleep 0.001, then the 20-byte body (echo module; scale)
    A delayed response costs nginx's event loop a timer, where ringmux-origin
    spends a thread wake-up and a sleep (with 512 delayed requests in flight
    ringmux-origin and wrk saturate CPU 0 at about 40k responses/s). The echo
    module answers chunked; `return` and the file carry Content-Length.
    Returns (process, address, None) or (None, None, reason)."""
    d = tempfile.mkdtemp(prefix="origin-nginx-", dir=tmp)
    os.chmod(d, 0o755)
    www = os.path.join(d, "www")
    os.makedirs(www)
    os.chmod(www, 0o755)  # the worker may run as nobody
    large = (PATTERN * (LARGE // len(PATTERN) + 1))[:LARGE]
    with open(os.path.join(www, "large.bin"), "wb") as f:
        f.write(large)
    os.chmod(os.path.join(www, "large.bin"), 0o644)
    port = free_port()
    # The same server by HTTP/2 (h2c by prior knowledge) on a port of its
    # own, for h2origin.
    port2 = free_port()
    nofile = min(65536, fd_limit)
    slow = "".join(echo_location(f"= {p}", s) for p, s in (
        ("/slow", "0.200"), ("/delay5", "0.005"), ("/delay1", "0.001"))) if echo else ""
    conf = nginx.write_conf(
        d, nofile, max(1024, nofile - 64),
        ["access_log off"] + ORIGIN_HTTP[:2]
        + ["sendfile on", "tcp_nopush on", "open_file_cache max=16 inactive=3600s",
           "open_file_cache_valid 3600s"] + ORIGIN_HTTP[2:],
        f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        listen 127.0.0.1:{port2} http2 backlog=4096;
        root {www};
        location = / {{
            return 200 "{BODY20}";
        }}
        location = /large.bin {{
        }}{slow}
        location / {{
            return 200 "{BODY20}";
        }}
    }}
""", modules=[ECHO_MODULE] if echo else [])
    with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
        p = nginx.start(d, conf, "0", out, err)
    addr = f"127.0.0.1:{port}"
    why = None
    if not wait_port(port, p):
        why = "nginx origin did not start"
    else:
        small = BODY20.encode()
        checks = [("/", small), ("/large.bin", large)]
        if echo:
            checks += [("/delay5", small), ("/delay1", small), ("/slow", small)]
        for path, want in checks:
            try:
                status, body = http_get(addr, path)
                if status != 200 or body != want:
                    why = (f"nginx origin: GET {path} answered {status} with {len(body)} bytes "
                           f"{body[:40]!r}, not {len(want)} bytes")
            except (OSError, ValueError) as e:
                why = f"nginx origin: GET {path} failed: {e!r}"
            if why:
                break
    if why:
        logs = []
        for name in ("err", "error.log"):
            try:
                with open(os.path.join(d, name)) as f:
                    logs.append(f.read().strip()[-300:])
            except OSError:
                pass
        stop(p)
        return None, None, why + ("; " + " | ".join(t for t in logs if t) if any(logs) else "")
    p.logdir = d
    p.h2_addr = f"127.0.0.1:{port2}"
    return p, addr, None


def start_ringmux_origin(tmp):
    path = os.path.join(tmp, "origin.out")
    with open(path, "w") as out, open(os.path.join(tmp, "origin.err"), "w") as err:
        p = spawn(["taskset", "-c", "0", common.ORIGIN, "--listen", "127.0.0.1:0",
                   "--size", str(len(BODY20))], out, err)
    addr = wait_line(path, "listening on", p)
    if not addr:
        stop(p)
        return None, None, "ringmux-origin did not start"
    return p, addr, None


class Origins:
    """The origins on CPU 0 ("nginx", "ringmux"), each started on first use
    and restarted when it has died. The echo module (for /slow and /delay5)
    is used when installed and nginx loads it."""

    def __init__(self, tmp, fd_limit):
        self.tmp, self.fd_limit = tmp, fd_limit
        self.procs = {}  # kind -> (Popen, addr)
        self.restarts = 0
        self.echo_reason = None if os.path.exists(ECHO_MODULE) else \
            f"{ECHO_MODULE} missing (Debian: libnginx-mod-http-echo)"
        self.echo = self.echo_reason is None

    def _start(self, kind):
        if kind == "ringmux":
            if not os.access(common.ORIGIN, os.X_OK):
                sys.exit(f"missing {common.ORIGIN}: run bench/run.sh (it builds with cargo build --release)")
            p, addr, why = start_ringmux_origin(self.tmp)
        else:
            p, addr, why = start_nginx_origin(self.tmp, self.fd_limit, self.echo)
            if p is None and self.echo:
                log(f"nginx origin with the echo module failed ({why}); trying without it")
                self.echo, self.echo_reason = False, f"nginx with the echo module failed: {why}"
                p, addr, why = start_nginx_origin(self.tmp, self.fd_limit, False)
        if p is None:
            sys.exit(why)
        self.procs[kind] = (p, addr)
        log(f"origin {kind} on {addr}" + (" (echo module)" if kind == "nginx" and self.echo else ""))
        return addr

    def get(self, kind):
        """The origin's address, (re)starting it when needed."""
        if kind in self.procs:
            p, addr = self.procs[kind]
            if p.poll() is None:
                return addr
            log(f"origin {kind} died (exit {p.returncode}; {self.logs(kind)!r}); restarting it")
            self.restarts += 1
            stop(p)
            del self.procs[kind]
        return self._start(kind)

    def alive(self, kind):
        return kind in self.procs and self.procs[kind][0].poll() is None

    def h2_addr(self):
        """The nginx origin's h2c address (started when needed)."""
        self.get("nginx")
        return self.procs["nginx"][0].h2_addr

    def skewed(self, delays_ms):
        """skewed's pair of origins (a SkewedOrigin, started on first use and
        restarted when one of its processes died): nginx + echo module
        where it works, else two ringmux-origin processes."""
        sk = getattr(self, "_skewed", None)
        if sk is not None:
            if sk.alive():
                return sk
            log(f"skewed origin died ({sk.logs()!r}); restarting it")
            self.restarts += 1
            sk.stop()
        echo = self.has_echo()
        sk = SkewedOrigin(self.tmp, self.fd_limit, delays_ms, echo)
        why = sk.start()
        if why and echo:
            log(f"skewed: nginx origin with the echo module failed ({why}); "
                "using two ringmux-origin --delay")
            sk = SkewedOrigin(self.tmp, self.fd_limit, delays_ms, False)
            why = sk.start()
        if why:
            sys.exit(why)
        self._skewed = sk
        log(f"skewed origins: fast {sk.addrs[0]}, slow {sk.addrs[1]} ({sk.kind}; "
            "GET took " + " / ".join(f"{x:.2f}" for x in sk.check_ms) + " ms)")
        return sk

    def stop_skewed(self):
        sk = getattr(self, "_skewed", None)
        if sk is not None:
            sk.stop()
            self._skewed = None

    def has_echo(self):
        """Whether the nginx origin serves /slow and /delay5 (starts it to
        find out: the module may be present and still fail to load)."""
        if self.echo:
            self.get("nginx")
        return self.echo

    def logs(self, kind):
        p = self.procs.get(kind, (None, None))[0]
        path = (os.path.join(self.tmp, "origin.err") if kind == "ringmux"
                else os.path.join(getattr(p, "logdir", self.tmp), "error.log"))
        try:
            with open(path) as f:
                return f.read()[-300:].strip()
        except OSError:
            return ""

    def describe(self, kind, paths=()):
        if kind == "ringmux":
            what = f"ringmux-origin --size {len(BODY20)} (thread per connection)"
        else:
            what = ("nginx, one worker: / = return 200 (20 bytes), /large.bin = 1 MiB static "
                    "file (sendfile)" + (", /slow, /delay5 and /delay1 = echo_sleep 0.2 s / 5 ms "
                                         "/ 1 ms (echo module)" if self.echo else ""))
        if paths:
            what += "; paths " + ", ".join(paths)
        return what


class SkewedOrigin:
    """skewed's two upstreams on CPU 0, "fast" and "slow" (delays_ms), each
    counting the requests it answered:
      * nginx + echo module (when Origins.has_echo()): one nginx, one worker,
        two server blocks on two ports, every path = echo_sleep, then the
        20-byte body; each server block writes a 2-byte line per request to
        its own access log (buffer=64k flush=100ms: a write per 64 KiB, and
        nothing held longer than 0.1 s), and the lines are counted;
      * otherwise two ringmux-origin processes, --name fast/slow --delay MS,
        counted through GET /stats?delay=0 (which counts itself: the calls
        made so far are subtracted).
    Started by Origins.skewed() on first use, restarted when it died."""

    NAMES = ("fast", "slow")

    def __init__(self, tmp, fd_limit, delays_ms, echo):
        self.tmp, self.fd_limit, self.delays_ms = tmp, fd_limit, tuple(delays_ms)
        self.kind = "nginx" if echo else "ringmux"
        self.procs, self.addrs, self.counters = [], [], []
        self.stats_calls = [0, 0]
        self.check_ms = None  # mean time of a fresh-connection GET to each, at start

    def start(self):
        """None when both answer, else the reason (everything stopped)."""
        why = self._start_nginx() if self.kind == "nginx" else self._start_ringmux()
        if why is None:
            why = self._check()
        if why:
            self.stop()
        return why

    def _start_nginx(self):
        d = tempfile.mkdtemp(prefix="origin-skewed-", dir=self.tmp)
        os.chmod(d, 0o755)
        ports = [free_port() for _ in self.NAMES]
        while ports[1] == ports[0]:
            ports[1] = free_port()
        logs = [os.path.join(d, f"{n}.log") for n in self.NAMES]
        nofile = min(65536, self.fd_limit)
        servers = "".join(f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        access_log {lg} count buffer=64k flush=100ms;{echo_location("/", f"{ms / 1000:.3f}")}
    }}""" for port, lg, ms in zip(ports, logs, self.delays_ms))
        conf = nginx.write_conf(d, nofile, max(1024, min(8192, nofile - 64)),
                                ['log_format count "."'] + ORIGIN_HTTP, servers,
                                modules=[ECHO_MODULE])
        with open(os.path.join(d, "out"), "w") as out, open(os.path.join(d, "err"), "w") as err:
            p = nginx.start(d, conf, "0", out, err)
        p.logdir = d
        self.procs = [p]
        self.addrs = [f"127.0.0.1:{port}" for port in ports]
        self.counters = [LineCounter(lg) for lg in logs]
        for port in ports:
            if not wait_port(port, p):
                return "skewed nginx origin did not start; " + self.logs()
        return None

    def _start_ringmux(self):
        if not os.access(common.ORIGIN, os.X_OK):
            return f"missing {common.ORIGIN} (the skewed origins without the echo module)"
        for name, ms in zip(self.NAMES, self.delays_ms):
            path = os.path.join(self.tmp, f"origin-{name}.out")
            with open(path, "w") as out, \
                    open(os.path.join(self.tmp, f"origin-{name}.err"), "w") as err:
                p = spawn(["taskset", "-c", "0", common.ORIGIN, "--listen", "127.0.0.1:0",
                           "--name", name, "--size", str(len(BODY20)), "--delay", str(ms)],
                          out, err)
            self.procs.append(p)
            addr = wait_line(path, "listening on", p)
            if not addr:
                return f"ringmux-origin --name {name} did not start; " + self.logs()
            self.addrs.append(addr)
        self.stats_calls = [0, 0]
        return None

    def _check(self):
        """Each answers the 20-byte body; the mean of 5 GETs (fresh
        connections) is kept for the report, to show the delays as served."""
        self.check_ms = []
        for name, addr in zip(self.NAMES, self.addrs):
            took = []
            for _ in range(5):
                t = time.time()
                try:
                    status, body = http_get(addr, "/")
                except (OSError, ValueError) as e:
                    return f"skewed origin {name} ({addr}): GET / failed: {e!r}; " + self.logs()
                took.append((time.time() - t) * 1000)
                if status != 200 or body != BODY20.encode():
                    return (f"skewed origin {name} ({addr}): GET / answered {status} with "
                            f"{body[:40]!r}")
            self.check_ms.append(statistics.mean(took))
        return None

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self):
        for p in self.procs:
            stop(p)
        self.procs = []

    def counts(self):
        """Requests answered so far by (fast, slow)."""
        if self.kind == "nginx":
            return tuple(c.count() for c in self.counters)
        out = []
        for i, addr in enumerate(self.addrs):
            self.stats_calls[i] += 1
            status, body = http_get(addr, "/stats?delay=0")
            fields = dict(kv.split("=", 1) for kv in body.decode().split())
            if status != 200 or "requests" not in fields:
                raise ValueError(f"{addr} /stats answered {status}: {body[:80]!r}")
            out.append(int(fields["requests"]) - self.stats_calls[i])
        return tuple(out)

    def settled_counts(self, timeout=5.0):
        """counts() once the requests in flight have been answered and
        logged: two reads 0.2 s apart that agree (after 0.3 s, which covers
        the slow delay and nginx's 100 ms log flush), or the last read."""
        time.sleep(0.3)
        deadline, last = time.time() + timeout, self.counts()
        while time.time() < deadline:
            time.sleep(0.2)
            now = self.counts()
            if now == last:
                break
            last = now
        return last

    def logs(self):
        text = []
        if self.kind == "nginx" and self.procs:
            names = [os.path.join(self.procs[0].logdir, n) for n in ("err", "error.log")]
        else:
            names = [os.path.join(self.tmp, f"origin-{n}.err") for n in self.NAMES]
        for path in names:
            try:
                with open(path) as f:
                    t = f.read().strip()[-300:]
                if t:
                    text.append(f"{os.path.basename(path)}: {t}")
            except OSError:
                pass
        return " | ".join(text) or "no output"

    def describe(self):
        fast, slow = self.delays_ms
        how = (f"nginx + echo module, one worker, two server blocks: every path = echo_sleep "
               f"{fast} ms (fast) / {slow} ms (slow), then the 20-byte body; requests counted "
               "from each server block's access log" if self.kind == "nginx" else
               f"two ringmux-origin --size 20, --delay {fast} (fast) and --delay {slow} (slow); "
               "requests counted with GET /stats")
        if self.check_ms:
            how += (" (a GET on a fresh connection took " +
                    " / ".join(f"{x:.2f}" for x in self.check_ms) + " ms at start)")
        return how


class WarmupOrigins:
    """warmup's two upstreams on CPU 0, ringmux-origin --name A / B --size 20
    --delay delay_ms, fresh for every run (B's readiness clock starts with
    its process): A before the proxy, B at the start of the cold phase with
    --ready-after ready_after_ms (it accepts and answers at once; only
    /ready says 503 until then). Requests counted with GET /stats?delay=0,
    which counts itself (the calls made so far are subtracted)."""

    NAMES = ("A", "B")

    def __init__(self, tmp, sc):
        self.dir = tempfile.mkdtemp(prefix="origins-warmup-", dir=tmp)
        self.sc = sc
        self.procs, self.addrs, self.stats_calls = {}, {}, {}
        self.conns = {}  # connections accepted so far (at the last counts())
        self.ready_at = None  # B's /ready turns 200 then (time.time(), +- its start-up)

    def start(self, name):
        """None when it listens, else the reason."""
        if not os.access(common.ORIGIN, os.X_OK):
            return f"missing {common.ORIGIN} (the warmup origins)"
        ready = self.sc["ready_after_ms"] if name == "B" else 0
        out_path = os.path.join(self.dir, f"origin-{name}.out")
        with open(out_path, "w") as out, \
                open(os.path.join(self.dir, f"origin-{name}.err"), "w") as err:
            t = time.time()
            p = spawn(["taskset", "-c", "0", common.ORIGIN, "--listen", "127.0.0.1:0",
                       "--name", name, "--size", str(len(BODY20)),
                       "--delay", str(self.sc["delay_ms"]), "--ready-after", str(ready)], out, err)
        self.procs[name] = p
        addr = wait_line(out_path, "listening on", p)
        if not addr:
            return f"ringmux-origin --name {name} did not start; " + self.logs()
        # Its clock starts between the spawn and the line: the midpoint.
        self.ready_at = (t + time.time()) / 2 + ready / 1000 if name == "B" else self.ready_at
        self.addrs[name] = addr
        self.stats_calls[name] = 0
        return None

    def counts(self):
        """Requests answered so far, by origin name (those started)."""
        out = {}
        for name, addr in self.addrs.items():
            self.stats_calls[name] += 1
            status, body = http_get(addr, "/stats?delay=0")
            fields = dict(kv.split("=", 1) for kv in body.decode().split())
            if status != 200 or "requests" not in fields:
                raise ValueError(f"{name} ({addr}) /stats answered {status}: {body[:80]!r}")
            out[name] = int(fields["requests"]) - self.stats_calls[name]
            # Each /stats GET is a connection of its own too.
            self.conns[name] = int(fields.get("connections", 0)) - self.stats_calls[name]
        return out

    def alive(self):
        return bool(self.procs) and all(p.poll() is None for p in self.procs.values())

    def stop(self):
        for p in self.procs.values():
            stop(p)
        self.procs = {}

    def logs(self):
        text = []
        for name in self.NAMES:
            try:
                with open(os.path.join(self.dir, f"origin-{name}.err")) as f:
                    t = f.read().strip()[-300:]
                if t:
                    text.append(f"origin-{name}.err: {t}")
            except OSError:
                pass
        return " | ".join(text) or "no output"
