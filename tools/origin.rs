//! `origin`: a standalone HTTP/1.1 origin server for tests and benchmarks.
//!
//! Usage: `origin [--listen ADDR] [--name NAME] [--size N] [--delay MS] [--ready-after MS]`
//!
//! Prints exactly one line, `listening on <addr>`, to stdout once bound, then
//! serves until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::process::exit;

use ringmux::origin::{self, OriginConfig};

const USAGE: &str =
    "usage: origin [--listen ADDR] [--name NAME] [--size N] [--delay MS] [--ready-after MS]";

fn fail(msg: &str) -> ! {
    eprintln!("origin: {msg}\n{USAGE}");
    exit(2);
}

fn main() {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut cfg = OriginConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            return;
        }
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if !matches!(
            flag.as_str(),
            "--listen" | "--name" | "--size" | "--delay" | "--ready-after"
        ) {
            fail(&format!("unknown argument {flag:?}"));
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            fail(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--listen" => {
                listen = value
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--listen: bad address {value:?}")));
            }
            "--name" => cfg.name = value,
            "--size" => {
                cfg.default_size = value
                    .parse()
                    .ok()
                    .filter(|&n| n <= origin::MAX_SIZE)
                    .unwrap_or_else(|| fail(&format!("--size: bad byte count {value:?}")));
            }
            "--ready-after" => {
                cfg.ready_after_ms = value
                    .parse()
                    .ok()
                    .filter(|&n| n <= origin::MAX_DELAY_MS)
                    .unwrap_or_else(|| fail(&format!("--ready-after: bad milliseconds {value:?}")));
            }
            _ => {
                cfg.default_delay_ms = value
                    .parse()
                    .ok()
                    .filter(|&n| n <= origin::MAX_DELAY_MS)
                    .unwrap_or_else(|| fail(&format!("--delay: bad milliseconds {value:?}")));
            }
        }
    }
    let server = match origin::spawn(listen, cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("origin: cannot listen on {listen}: {e}");
            exit(1);
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", server.addr);
    let _ = stdout.flush();
    loop {
        std::thread::park();
    }
}
