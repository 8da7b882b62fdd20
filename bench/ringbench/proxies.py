"""The proxies under test: Proxy (one process tree on CPU 1, started fresh
for every run) with the configuration of each kind: ringmux and its
variants ("ringmux+admin", "+log", "+poll", "+POLICY", "+elastic",
"+reload"), nginx, HAProxy ("haproxy+slowstart" for warmup) and the relay
floor; adding an upstream at run time (warmup); building the relay floor."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from . import common, nginx
from .client import http_get
from .common import log
from .procs import STARTED, descendants, free_port, spawn, stop, wait_line, wait_port
from .scenarios.hosts import host_names, hosts_of

ELASTIC_CPUS = max(2, os.cpu_count() or 1)  # N: --workers 1..N
# Whether the elastic ringmux pins its workers itself (worker i to the i-th
# CPU it may use) or runs them unpinned (--no-pin: the kernel places them).
# Pinned, the one worker that runs most of the time is on CPU 0 with wrk and
# the origin (CPU 1 only ever gets worker 1): at 256 connections it showed
# 0.34 busy and 64k req/s, where unpinned the kernel moves it to the free
# CPU 1: 0.75 busy and 88k req/s (4 s smokes, /delay1). Unpinned measures
# what the scaler sees on a proxy that has a CPU to itself.
ELASTIC_PIN = False
RINGMUX_POLICIES = ("wrr", "least-conn", "url-hash", "random2")  # --balance


class Proxy:
    """One proxy process tree on CPU 1. origin: one address, or a list of
    them at equal weight (skewed); balance: the policy of nginx/HAProxy with
    several ("least-conn": nginx `least_conn`, HAProxy `balance leastconn`;
    None: their default round robin). ringmux's policy is in its kind:
    "ringmux+wrr", "ringmux+least-conn", ... (--balance). sc: the scenario's
    definition, read by the kinds that take settings from it (scale's
    "ringmux+elastic", warmup's "ringmux+reload" and "haproxy+slowstart")."""

    def __init__(self, kind, origin, tmp, fd_limit, balance=None, sc=None):
        self.kind, self.fd_limit, self.balance, self.sc = kind, fd_limit, balance, sc
        self.upstreams = list(origin) if isinstance(origin, (list, tuple)) else [origin]
        self.origin = self.upstreams[0]
        self.dir = tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)
        os.chmod(self.dir, 0o755)
        self.proc, self.addr, self.error = None, None, None
        self.admin, self.access_log = None, None  # the observability variants
        # tls: "PROXY+tls" listens with TLS, the certificate the scenario
        # made (sc: tls_cert, tls_key, and tls_pem for HAProxy: both in one).
        # h2: "PROXY+h2" is TLS with ALPN h2 (and http/1.1), "PROXY+h2c"
        # plaintext HTTP/2 by prior knowledge.
        self.h2 = kind.endswith("+h2") or kind.endswith("+h2c")
        self.tls = kind.endswith("+tls") or kind.endswith("+h2")

    def start(self):
        out = open(os.path.join(self.dir, "stdout.log"), "w")
        err = open(os.path.join(self.dir, "stderr.log"), "w")
        try:
            # "ringmux+admin", "ringmux+log", "ringmux+wrr", ... are ringmux
            # with extra flags.
            getattr(self, "_start_" + self.kind.split("+")[0])(out, err)
        finally:
            out.close()
            err.close()
        if self.addr and self.kind.endswith("+h2c"):
            # (nginx's and HAProxy's h2c ports speak nothing else.)
            got = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                  "--http2-prior-knowledge", f"http://{self.addr}/"],
                                 capture_output=True, text=True, timeout=10).stdout
            if got != "200":
                self.error = f"test h2c GET answered {got!r}"
        elif self.addr:
            try:
                status, _ = http_get(self.addr, tls=self.tls)
                if status != 200:
                    self.error = f"test GET answered {status}"
            except OSError as e:
                self.error = f"test GET failed: {e}"
        if self.error:
            self.error += "; " + self.logs()
            self.stop()
            return False
        return True

    def logs(self):
        text = []
        for name in ("stderr.log", "stdout.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    t = f.read().strip()
                if t:
                    text.append(f"{name}: {t[-400:]}")
            except OSError:
                pass
        return " | ".join(text) or "no output"

    # ------------------------------------------------------------ ringmux

    def _start_ringmux(self, out, err):
        if self.kind == "ringmux+elastic":
            # scale: every CPU allowed (the harness itself is on CPU 0 only,
            # and a child inherits that), workers 1..N, the admin address.
            cpus, workers = f"0-{os.cpu_count() - 1}", self._elastic_flags()
        else:
            cpus, workers = "1", ["--workers", "1", "--no-pin"]
        if self.kind == "ringmux+reload":
            # warmup: the upstreams come from the config file only (an
            # --upstream on the command line would replace the file's list,
            # at start and at every reload); SIGHUP reads the file again.
            self.config = os.path.join(self.dir, "ringmux.toml")
            self._write_ringmux_config()
            ups = ["--config", self.config]
            self.flags = ["--listen", "127.0.0.1:0"] + workers + ups
        else:
            ups = [a for u in self.upstreams for a in ("--upstream", u)]
        exe = common.BASELINE if self.kind == "ringmux+base" else common.RINGMUX
        listen = "127.0.0.1:0"
        if self.tls:
            listen += ",tls" + (",h2" if self.h2 else "")
            listen += f",cert={self.sc['tls_cert']},key={self.sc['tls_key']}"
        elif self.h2:
            listen += ",h2"
        self.proc = spawn(["taskset", "-c", cpus, exe, "--listen", listen]
                          + workers + ups + self._ringmux_variant_flags(), out, err)
        self.addr = wait_line(out.name, "listening on", self.proc)
        if not self.addr:
            self.error = "ringmux did not print 'listening on'"
        elif self.kind in ("ringmux+admin", "ringmux+elastic", "ringmux+h2o"):
            # Printed after the listening lines, in the same flush.
            self.admin = wait_line(out.name, "admin listening on", self.proc)
            if not self.admin:
                self.error = "ringmux did not print 'admin listening on'"

    def _elastic_flags(self):
        """scale's ringmux: --workers 1..N, the scale marks and timers of
        its definition (self.sc), --no-pin unless ELASTIC_PIN, --admin."""
        sc = self.sc
        self.flags = (["--workers", f"1..{ELASTIC_CPUS}",
                       "--scale-high", str(sc["scale_high"]), "--scale-low", str(sc["scale_low"]),
                       "--scale-up-after", str(sc["scale_up_after_ms"]),
                       "--scale-down-after", str(sc["scale_down_after_ms"])]
                      + ([] if ELASTIC_PIN else ["--no-pin"]) + ["--admin", "127.0.0.1:0"])
        return self.flags

    def _ringmux_variant_flags(self):
        """The extra flags of the observability variants (the access log is
        in this run's own directory: a fresh, empty file per run) and of the
        balancing ones ("ringmux+POLICY": --balance POLICY)."""
        policy = self.kind.partition("+")[2]
        if policy in RINGMUX_POLICIES:
            return ["--balance", policy]
        n = hosts_of(self.kind)
        if n is not None:
            # hosts: N host routes to the default backend (the upstreams
            # of the command line).
            path = os.path.join(self.dir, "routes.toml")
            with open(path, "w") as f:
                for h in host_names(n):
                    f.write(f'[[route]]\nhost = "{h}"\nbackend = "default"\n\n')
            return ["--config", path]
        if self.kind == "ringmux+poll":
            return ["--busy-poll", "20"]
        if self.kind == "ringmux+admin":
            return ["--admin", "127.0.0.1:0"]
        if self.kind == "ringmux+h2o":
            # h2origin: HTTP/2 to the origin's h2c port.
            return ["--upstream-protocol", "h2", "--admin", "127.0.0.1:0"]
        if self.kind == "ringmux+log":
            self.access_log = os.path.join(self.dir, "access.log")
            return ["--access-log", self.access_log, "--access-log-format", "combined"]
        return []

    def _write_ringmux_config(self, added=None):
        """warmup's ringmux.toml: upstream A, and B (`added`) with the
        readiness check, warm connections and slow start of warmup's
        definition (self.sc). Replaced in one rename, so a reload never
        reads half a file."""
        sc = self.sc
        text = f'[[upstream]]\naddr = "{self.origin}"\n'
        if added:
            text += (f'\n[[upstream]]\naddr = "{added}"\nwarmup_check = "{sc["ready_path"]}"\n'
                     f'warm_conns = {sc["warm_conns"]}\nslow_start = "{sc["slow_start_s"]}s"\n')
        tmp = self.config + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)
        return text

    def add_upstream(self, addr, timeout=5.0):
        """warmup: put `addr` (B) in rotation, the proxy's own way. Returns
        a dict for the run's JSON: how, took_ms (until the proxy said it was
        done), what it said; "error" when it refused or did not answer."""
        t = time.time()
        info = (self._add_ringmux(addr, timeout) if self.kind == "ringmux+reload"
                else self._add_haproxy(addr, timeout))
        info["took_ms"] = (time.time() - t) * 1000
        return info

    def _add_ringmux(self, addr, timeout):
        """Rewrite the config file with B, SIGHUP, wait for ringmux's
        `configuration reloaded` (or `reload refused`) line on stderr."""
        path = os.path.join(self.dir, "stderr.log")

        def lines():
            try:
                with open(path) as f:
                    return f.read().splitlines()
            except OSError:
                return []
        seen = len(lines())
        text = self._write_ringmux_config(added=addr)
        info = {"how": "config file rewritten with B, SIGHUP", "config": text}
        os.kill(self.proc.pid, signal.SIGHUP)
        deadline = time.time() + timeout
        while time.time() < deadline:
            new = [ln for ln in lines()[seen:] if "reload" in ln]
            if new:
                info["said"] = new[0]
                if "configuration reloaded" not in new[0]:
                    info["error"] = f"reload: {new[0]}"
                return info
            time.sleep(0.002)
        info["error"] = f"no 'configuration reloaded' line within {timeout:.0f} s; " + self.logs()
        return info

    def _add_haproxy(self, addr, timeout):
        """HAProxy 2.6's runtime API on the stats socket (level admin). B is
        a static server declared `disabled` with a placeholder address (see
        _start_haproxy): a server added with `add server` kept no idle
        connections here (one connection per request to B: 37,134 for
        37,134 requests in a 6 s ramp, CPU/req 25 -> 31 µs), which is not
        how HAProxy is run. So:
          set server be/B addr IP port PORT
          enable server be/B; set server be/B health down
            (one line, so nothing runs in between: leaving maintenance,
            2.6 marks the server UP at once whatever its checks said;
            marked down, it waits for its check on /ready, then enters on
            the slowstart ramp)."""
        host, port = addr.rsplit(":", 1)
        cmds = [f"set server be/B addr {host} port {port}",
                "enable server be/B; set server be/B health down"]
        info = {"how": "stats socket: " + " | ".join(cmds), "said": []}
        for c in cmds:
            try:
                ans = haproxy_cli(self.cli, c, timeout).strip()
            except OSError as e:
                info["error"] = f"stats socket, {c!r}: {e!r}"
                return info
            info["said"].append(ans)
            ok = ("changed from" in ans) if c.startswith("set server") else not ans
            if not ok:
                info["error"] = f"HAProxy answered {c!r} with {ans[:200]!r}"
                return info
        return info

    # ----------------------------------------------------- nginx, HAProxy

    def _start_nginx(self, out, err):
        port = free_port()
        n = hosts_of(self.kind)
        # hosts: one server with the N names (nginx's server-names hash),
        # beside a default server for any other host (as ringmux and HAProxy
        # fall back to their default backend).
        location = """        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""
        names = "" if n is None else "\n        server_name " + " ".join(host_names(n)) + ";"
        ssl = ""
        if self.tls:
            # tls: TLS 1.2 and 1.3, tickets on (its default)
            # and a session cache, as ringmux has.
            ssl = (f" ssl;\n        ssl_certificate {self.sc['tls_cert']};\n"
                   f"        ssl_certificate_key {self.sc['tls_key']};\n"
                   "        ssl_session_cache shared:SSL:16m;\n"
                   # (1.22's default protocols leave TLS 1.3 out.)
                   "        ssl_protocols TLSv1.2 TLSv1.3")
            if self.h2:
                ssl = " http2" + ssl
        elif self.h2:
            # h2c: HTTP/2 by prior knowledge (1.22: `listen ... http2`).
            ssl = " http2"
        default = "" if n is None else f"""    server {{
        listen 127.0.0.1:{port} default_server;
{location}
    }}
"""
        hashes = [] if n is None else ["server_names_hash_max_size 65536",
                                       "server_names_hash_bucket_size 128"]
        servers = "\n".join(f"        server {u};" for u in self.upstreams)
        # A balancing method must come before `keepalive` (nginx docs).
        nginx_balance = "\n        least_conn;" if self.balance == "least-conn" else ""
        conf = nginx.write_conf(
            self.dir, min(65536, self.fd_limit), 20000,
            ["access_log off", "keepalive_timeout 300s", "keepalive_requests 1000000"] + hashes,
            f"""    upstream origin {{{nginx_balance}
{servers}
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
{default}    server {{
        listen 127.0.0.1:{port}{ssl};{names}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
""")
        self.proc = nginx.start(self.dir, conf, "1", out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "nginx did not start listening"

    def _start_haproxy(self, out, err):
        port = free_port()
        conf = os.path.join(self.dir, "haproxy.cfg")
        # HAProxy needs about 2 x maxconn + 14 fds and refuses to start when
        # it cannot raise its limit that far: cap maxconn below the fd limit.
        maxconn = min(50000, (self.fd_limit - 100) // 2)
        # h2origin: HTTP/2 to the origin's h2c port.
        proto = " proto h2" if self.kind == "haproxy+h2o" else ""
        servers = ("    server origin " + self.origin + proto if len(self.upstreams) == 1 else
                   "\n".join(f"    server u{i} {u}" for i, u in enumerate(self.upstreams)))
        haproxy_balance = "\n    balance leastconn" if self.balance == "least-conn" else ""
        route = ""
        n = hosts_of(self.kind)
        if n is not None:
            # hosts: the backend by the Host field, through a map file of N
            # lines (HAProxy's tree lookup).
            hosts_map = os.path.join(self.dir, "hosts.map")
            with open(hosts_map, "w") as f:
                for h in host_names(n):
                    f.write(f"{h} be\n")
            route = f"\n    use_backend %[req.hdr(host),lower,map({hosts_map})]"
        # tls: the certificate and key in one file, ALPN http/1.1.
        ssl = f" ssl crt {self.sc['tls_pem']} alpn http/1.1" if self.tls else ""
        if self.h2:
            # h2: ALPN h2 first; h2c: HTTP/2 by prior knowledge only.
            ssl = (f" ssl crt {self.sc['tls_pem']} alpn h2,http/1.1" if self.tls
                   else " proto h2")
        sock = ""
        if self.kind == "haproxy+slowstart":
            # warmup: A checked on the readiness path as often as ringmux
            # polls B's; B declared disabled at a placeholder address, given
            # its address and enabled at run time (_add_haproxy) on the
            # stats socket.
            sc = self.sc
            self.cli = os.path.join(self.dir, "admin.sock")
            sock = f"\n    stats socket {self.cli} level admin"
            servers = (f"    option httpchk GET {sc['ready_path']}\n"
                       f"    default-server inter {sc['check_ms']}ms rise 1 fall 3\n"
                       f"    server A {self.origin} check\n"
                       f"    server B 127.0.0.1:1 disabled check slowstart {sc['slow_start_s']}s")
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn {maxconn}{sock}

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}{ssl}{route}
    default_backend be

backend be{haproxy_balance}
{servers}
""")
        self.proc = spawn(["taskset", "-c", "1", "haproxy", "-db", "-f", conf], out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "haproxy did not start listening"

    def _start_relay(self, out, err):
        # The floor: accepts, connects one upstream connection per client
        # connection and copies bytes both ways (no HTTP). Prints nothing.
        port = free_port()
        self.proc = spawn(["taskset", "-c", "1", common.RELAY, f"127.0.0.1:{port}", self.origin],
                          out, err)
        if wait_port(port, self.proc):
            self.addr = f"127.0.0.1:{port}"
        else:
            self.error = "relay did not start listening"

    def pids(self):
        return descendants(self.proc.pid) if self.proc else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        stop(self.proc)
        self.proc = None


def haproxy_cli(path, line, timeout=5.0):
    """One command line on HAProxy's stats socket; its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((line + "\n").encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode(errors="replace")


def build_relay(tmp):
    """Build the relay floor from a temporary copy of its source (once per
    run; the source tree may be read-only and is never written to).
    Returns (binary, source directory) or (None, reason)."""
    src = os.path.normpath(os.environ.get("RELAY_FLOOR_SRC")
                           or os.path.join(common.ROOT, "..", "shared", "tools", "relay-floor"))
    if not os.path.isfile(os.path.join(src, "Cargo.toml")):
        return None, f"no relay-floor source at {src} (set RELAY_FLOOR_SRC)"
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.access(cargo, os.X_OK):
        return None, "cargo not found (needed to build the relay floor)"
    dst = os.path.join(tmp, "relay-floor")
    try:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", ".git"))
        for dirpath, dirnames, filenames in os.walk(dst):
            os.chmod(dirpath, 0o755)
            for fn in filenames:
                os.chmod(os.path.join(dirpath, fn), 0o644)
    except OSError as e:
        return None, f"copying {src}: {e}"
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(dst, "target"))
    log(f"building the relay floor from {src} ...")
    with open(os.path.join(dst, "build.log"), "w") as out:
        p = subprocess.Popen([cargo, "build", "--release", "-q"], cwd=dst, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True)
        STARTED.append(p)
        try:
            p.wait(900)
        except subprocess.TimeoutExpired:
            stop(p)
            return None, "cargo build of the relay floor took over 15 min (killed)"
        if p in STARTED:
            STARTED.remove(p)
    exe = os.path.join(dst, "target", "release", "relay")
    if p.returncode != 0 or not os.access(exe, os.X_OK):
        try:
            with open(os.path.join(dst, "build.log")) as f:
                tail = f.read().strip()[-400:]
        except OSError:
            tail = ""
        return None, f"cargo build --release failed (exit {p.returncode}): {' '.join(tail.split())}"
    return exe, src
