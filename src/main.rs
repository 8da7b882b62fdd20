//! The `ringmux` binary: parse the command line (and the config file),
//! then hand over to the supervisor (`ringmux::supervisor`), which binds
//! the listeners, starts the workers and steers them.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use ringmux::config::{file, Args};
use ringmux::origin::{self, OriginConfig};
use ringmux::spec::UpstreamSpec;

fn main() -> ExitCode {
    // clap prints usage errors (naming the flag) and exits with 2.
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let loaded = match &args.config {
        Some(path) => file::read_and_load(args.clone(), &matches, path),
        None => args.validate(),
    };
    let mut cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmux: {e}");
            return ExitCode::from(2);
        }
    };
    for w in cfg.warnings() {
        eprintln!("ringmux: warning: {w}");
    }
    if args.check {
        println!("{cfg:#?}");
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    if cfg.demo && cfg.upstreams.is_empty() {
        let demo = OriginConfig {
            name: "demo".to_string(),
            greeting: Some(origin::DEMO_GREETING.to_string()),
            ..OriginConfig::default()
        };
        match origin::spawn(([127, 0, 0, 1], 0).into(), demo) {
            Ok(o) => {
                eprintln!("ringmux: demo origin on {}", o.addr);
                let mut demo = UpstreamSpec::plain(format!("demo@{}", o.addr), o.addr);
                demo.id = ringmux::config::new_upstream_id();
                cfg.upstreams.push(demo);
                cfg = cfg.with_hash_table();
            }
            Err(e) => {
                eprintln!("ringmux: cannot start the demo origin: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ringmux::supervisor::run(args, matches, cfg)
}
