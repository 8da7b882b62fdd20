#!/usr/bin/env python3
"""--idle-reuse lifo vs fifo, side by side: `bench/idle_reuse.py [--rounds N]`.

An nginx origin that closes keep-alive connections idle for 2 s (its
`keepalive_timeout`), and a bursty load: 64 wrk connections for 1 s, then 4
for 3 s, three times over. For each order the report gives the CPU time of
ringmux per request, the connections it opened to the origin (nginx's
`accepts`), the upstream connections it held on average (sampled from its
/metrics every 100 ms), and the idle connections the origin closed under it
(ringmux_upstream_idle_closed_total). Each proxy runs alone on CPU 1, wrk
and nginx on CPU 0. Needs nginx and wrk, and target/release/ringmux.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RINGMUX = os.path.join(ROOT, "target", "release", "ringmux")
TICK = os.sysconf("SC_CLK_TCK")
PATTERN = [(64, 1), (4, 3)] * 3  # (connections, seconds)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_nginx(tmp):
    port, status_port = free_port(), free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 2s;
    keepalive_requests 1000000;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = / {{ return 200 "abcdefghijklmnopqrst"; }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{ stub_status; }}
    }}
}}
""")
    p = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", conf, "-p", tmp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p, port, status_port


def accepts(status_port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status", timeout=5).read()
    # "server accepts handled requests\n N N N"
    return int(body.decode().split("\n")[2].split()[0])


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(order, origin_port, status_port):
    p = subprocess.Popen(
        ["taskset", "-c", "1", RINGMUX, "--listen", "127.0.0.1:0", "--workers", "1",
         "--no-pin", "--upstream", f"127.0.0.1:{origin_port}", "--admin", "127.0.0.1:0",
         "--idle-reuse", order],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = admin = None
    while addr is None or admin is None:
        line = p.stdout.readline()
        if line.startswith("listening on "):
            addr = line.split()[-1]
        elif line.startswith("admin listening on "):
            admin = line.split()[-1]
    url = f"http://{admin}/metrics"
    before_accepts = accepts(status_port)
    held, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            held.append(metric(text, "ringmux_upstream_connections{"))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = cpu_ticks(p.pid)
    requests = 0
    for conns, secs in PATTERN:
        out = subprocess.run(
            ["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", f"http://{addr}/"],
            capture_output=True, text=True).stdout
        requests += int(re.search(r"(\d+) requests in", out).group(1))
    cpu = (cpu_ticks(p.pid) - t0) / TICK
    stop.set()
    sampler.join()
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    lost = metric(text, "ringmux_upstream_idle_closed_total{")
    opened = accepts(status_port) - before_accepts
    p.terminate()
    p.wait()
    return {"cpu_us": cpu * 1e6 / requests, "opened": opened,
            "held": statistics.mean(held), "lost": lost, "requests": requests}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ringmux-idle-")
    nginx, port, status_port = start_nginx(tmp)
    try:
        results = {"lifo": [], "fifo": []}
        for _ in range(a.rounds):
            for order in ("lifo", "fifo"):
                results[order].append(run(order, port, status_port))
                time.sleep(2.5)  # the origin's idle connections from this run expire
        print(f"bursts of 64 then 4 wrk connections (1 s, 3 s) x3, origin keepalive_timeout 2s; "
              f"median of {a.rounds} rounds\n")
        print("| --idle-reuse | CPU µs/req | connections opened | held on average | closed by the origin while idle | requests |")
        print("|---|---:|---:|---:|---:|---:|")
        for order, rs in results.items():
            m = lambda k: statistics.median(r[k] for r in rs)
            print(f"| {order} | {m('cpu_us'):.2f} | {m('opened'):.0f} | {m('held'):.1f} | "
                  f"{m('lost'):.0f} | {m('requests'):,.0f} |")
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
