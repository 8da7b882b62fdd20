"""nginx's configuration, written once for its three uses: the origin
(origins.start_nginx_origin), skewed's two-port origin (origins.SkewedOrigin)
and nginx as a proxy under test (proxies.Proxy). Each is one worker in the
foreground with its pid, error log and temporary directories in its own
directory; the callers give the limits, the http block's directives and
its upstream/server blocks."""
import os

from .procs import spawn

# The http module's temporary directories (<name>_temp_path): inside the
# run's directory, never nginx's compiled-in default.
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def write_conf(d, nofile, worker_connections, http, blocks, modules=()):
    """Write d/nginx.conf and return its path. nofile: worker_rlimit_nofile;
    http: the http block's directives (without the `;`); blocks: its
    upstream and server blocks, as text; modules: load_module paths."""
    for sub in TEMP_DIRS:
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(os.path.join(d, sub), 0o777)  # the worker may run as nobody
    directives = list(http) + [f"{sub}_temp_path {d}/{sub}" for sub in TEMP_DIRS]
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("".join(f"load_module {m};\n" for m in modules)
                + f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log crit;
worker_rlimit_nofile {nofile};
events {{ worker_connections {worker_connections}; }}
http {{
""" + "".join(f"    {x};\n" for x in directives) + blocks.rstrip("\n") + "\n}\n")
    return conf


def start(d, conf, cpus, out, err):
    """nginx on `cpus` (taskset -c) with d's configuration, prefix and error log."""
    return spawn(["taskset", "-c", cpus, "nginx", "-c", conf, "-p", d + "/",
                  "-e", f"{d}/error.log"], out, err)
