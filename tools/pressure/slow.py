#!/usr/bin/env python3
"""Slow readers: 200 clients each fetching 16 MiB through ringmux and reading
1 KiB a second; prints the proxy's RSS growth per client (issue 19, item 4).

usage: tools/pressure/slow.py RINGMUX_BINARY BUFFER_SIZE_BYTES"""
import subprocess, socket, time, sys
import os
ORIGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/release/ringmux-origin")
binary, buf = sys.argv[1], sys.argv[2]
o = subprocess.Popen([ORIGIN,"--listen","127.0.0.1:18611"], stdout=subprocess.DEVNULL)
time.sleep(0.3)
p = subprocess.Popen([binary,"--listen","127.0.0.1:18610","--workers","1","--no-pin","--upstream","127.0.0.1:18611","--buffer-size",buf], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
p.stdout.readline()
def rss(): return int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
for _ in range(4):
    s=socket.create_connection(("127.0.0.1",18610)); s.sendall(b"GET /?size=4000000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    while s.recv(1<<20): pass
time.sleep(0.3); before=rss()
cs=[]
for i in range(200):
    s=socket.create_connection(("127.0.0.1",18610)); s.sendall(b"GET /?size=16777216 HTTP/1.1\r\nHost: t\r\n\r\n"); cs.append(s)
# read 1 KiB/s each
for t in range(3):
    for s in cs: s.recv(1024)
    time.sleep(1)
after=rss()
print(f"{binary.split('/')[2]} --buffer-size {int(buf)//1024} KiB: {(after-before)//200} KiB per slow reader ({(after-before)//1024} MiB for 200)")
p.kill(); o.kill()
