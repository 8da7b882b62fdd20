#!/usr/bin/env python3
"""Many upstreams: N ringmux-origin addresses (one origin listening on every
127.x.y.z) behind one worker, 4 keep-alive clients for 10 s; prints answers,
peak fds and the SIGTERM time (issue 19, item 2). HEAD (config text before
the upstreams) and WEIGHTS (set: weights 1000/999) from the environment.

usage: tools/pressure/many.py RINGMUX_BINARY N [extra ringmux flags...]"""
import subprocess, socket, time, sys, os, threading, tempfile
import os
ORIGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/release/ringmux-origin")
binary, n, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
o = subprocess.Popen([ORIGIN,"--listen","0.0.0.0:0","--name","o"], stdout=subprocess.PIPE)
port = o.stdout.readline().decode().split(":")[-1].strip()
conf = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
conf.write(os.environ.get("HEAD","workers = 1\npin = false\n").replace("\\n","\n"))
for i in range(n):
    w = os.environ.get("WEIGHTS")
    conf.write(f'[[upstream]]\naddr = "127.{i//62500}.{(i//250)%250}.{i%250+1}:{port}"\n' + (f"weight = {1000 - i%2}\n" if w else ""))
conf.close()
t0=time.time()
p = subprocess.Popen([binary,"--listen","127.0.0.1:18777","--config",conf.name]+extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
p.stdout.readline()
start=time.time()-t0
peak=[0]; stop=[False]; done=[0]; errs=[0]
def watch():
    while not stop[0]:
        try: peak[0]=max(peak[0], len(os.listdir(f"/proc/{p.pid}/fd")))
        except: pass
        time.sleep(0.05)
def client():
    s=socket.create_connection(("127.0.0.1",18777)); s.settimeout(5)
    while not stop[0]:
        try:
            s.sendall(b"GET /?size=10 HTTP/1.1\r\nHost: t\r\n\r\n")
            got=b""
            while not got.endswith(b"ghij"):
                d=s.recv(4096)
                if not d: raise Exception("closed")
                got+=d
            if b" 200 " in got[:15]: done[0]+=1
            else: errs[0]+=1
        except Exception as e:
            errs[0]+=1
            try: s=socket.create_connection(("127.0.0.1",18777)); s.settimeout(5)
            except: time.sleep(0.1)
threading.Thread(target=watch,daemon=True).start()
ts=[threading.Thread(target=client,daemon=True) for _ in range(4)]
[t.start() for t in ts]
time.sleep(10); stop[0]=True
cpuf=open(f"/proc/{p.pid}/stat").read().rsplit(")",1)[1].split(); cpu=(int(cpuf[11])+int(cpuf[12]))/100
rss=int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1])
t=time.time(); p.terminate()
try: p.wait(timeout=15); term=time.time()-t
except: term=-1; p.kill()
err=p.stderr.read().decode()[-800:]
print(err)
print(f"{os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(binary))))} {n} upstreams: start {start:.2f}s, {done[0]} answers in 10 s, {errs[0]} errors, peak {peak[0]} fds, RSS {rss//1024} MiB, proxy CPU {cpu:.1f}s, SIGTERM exit in {term:.2f}s")
o.kill()
