#!/usr/bin/env python3
"""Descriptor exhaustion: one worker under ulimit -n 200 with 300 connections
waiting; prints CPU-seconds per second (issue 19, item 1).

usage: tools/pressure/fdx.py RINGMUX_BINARY ORIGIN_ADDR"""
import subprocess, socket, time, sys, os
import os
ORIGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/release/ringmux-origin")
binary, origin = sys.argv[1], sys.argv[2]
p = subprocess.Popen(["sh","-c",f"ulimit -n 200 && exec {binary} --listen 127.0.0.1:18555 --workers 1 --no-pin --upstream {origin}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
p.stdout.readline()
cs=[socket.create_connection(("127.0.0.1",18555)) for _ in range(300)]
time.sleep(1)
def cpu(pid):
    f=open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11])+int(f[12]))/100
a=cpu(p.pid); time.sleep(2); b=cpu(p.pid)
print(f"{binary}: {(b-a)/2:.2f} CPU-seconds per second while 300 connections wait under ulimit -n 200")
p.kill(); out,err=p.communicate(); print(err.decode()[-600:])
