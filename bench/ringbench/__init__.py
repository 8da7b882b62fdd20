"""ringbench: the side-by-side benchmark of ringmux, nginx and HAProxy
(bench/harness.py is its entry point, started by bench/run.sh).

Modules:
  common       paths, the binaries under test, shared constants, log()
  procs        spawning and stopping process groups, waits, /proc readers
  client       the harness's own HTTP/1.1 client
  nginx        nginx's configuration, written once for its three uses
  origins      the origins on CPU 0 (shared, skewed's pair, warmup's pair)
  proxies      Proxy: ringmux and its variants, nginx, HAProxy, the relay floor
  load         wrk runs, histograms, a run's figures, measure_load
  scenarios/   one module per scenario, registered in scenarios/base.py
  render       formatting shared by the reports
  report       summaries, Markdown, the load chart, the result files
  cli          the command line and the run

Layout of a run:
  * one origin pinned to CPU 0, shared by all runs: --origin nginx (default:
    one nginx worker; `/` = `return 200` with the 20-byte body, /large.bin =
    a 1 MiB static file, /slow, /delay5 and /delay1 = echo_sleep 0.2 s / 5 ms
    / 1 ms with the echo module) or --origin ringmux (ringmux-origin --size
    20; ?size= and ?delay= select the body size and the delay). Scenario
    paths depend on it;
  * the relay floor (RELAY_FLOOR_SRC, default <repo>/../shared/tools/relay-floor:
    a 1:1 io_uring byte relay, no HTTP) is built once per run in a temporary
    copy and measured as a fourth column in small, pipeline and large;
  * for every (scenario, round, proxy) a FRESH proxy process tree pinned to
    CPU 1 (one worker / thread), a warm-up, then the measured wrk run(s) on
    CPU 0; the proxy is stopped afterwards (so its VmHWM is the peak of that
    run); `mixed` runs two wrk processes at once (fast URL and 200 ms URL);
  * rounds are interleaved: ringmux nginx haproxy [relay] ringmux nginx ...;
  * medians over rounds, ratios ringmux/nginx, ringmux/haproxy, ringmux/floor;
  * `observability` (opt-in: run only when named) is ringmux against itself
    at small's load: plain, ringmux+admin (the admin address scraped once a
    second, /metrics and /status, during the run) and ringmux+log (combined
    access log to a file; its lines are counted against wrk's requests);
    ratios variant/plain CPU per request against targets;
  * `skewed` (opt-in) has two origins of its own on CPU 0 (SkewedOrigin: one
    nginx with the echo module, two server blocks answering after 1 ms and
    10 ms, or else two ringmux-origin --delay 1 / --delay 10), at equal
    weight behind ringmux --balance wrr, ringmux --balance least-conn,
    HAProxy `balance leastconn` and nginx `least_conn`; the origins count
    the requests each answered (access-log lines, or GET /stats), which
    gives the share that went to the fast one. Markdown and JSON only;
  * `scale` (opt-in) is one ringmux with elastic workers (--workers 1..N,
    N = the machine's CPUs, at least 2; allowed every CPU, --no-pin; short
    scale timers), wrk at 16, 256, then 16 connections on the origin's 1 ms
    URL as three consecutive runs, while a thread reads GET /metrics every
    250 ms (WorkerSampler); per step req/s, latency, CPU/req, workers at its
    start and end, scale-ups/downs; its chart of workers over time is
    <stamp>-scale.svg and latest-scale.svg (svg_scale);
  * bench/results/<stamp>.{json,md,svg}, and latest.{json,md,svg} when
    every default scenario ran (--out DIR writes them elsewhere, --no-save
    only prints the Markdown).
"""
