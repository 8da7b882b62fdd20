//! A real HAProxy on loopback for the tests that need one in front of
//! ringmux (an L4 balancer sending the PROXY protocol). Foreground, one
//! process, a configuration of the test's own; killed on drop. `.ci/run`
//! installs haproxy.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Haproxy {
    /// Start HAProxy with `sections` (everything after `global` and
    /// `defaults`, with `{addr}` standing for the address to bind).
    pub fn start(sections: &str) -> Haproxy {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmux-test-haproxy-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let conf = format!(
            "global\n  maxconn 1000\n\ndefaults\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\n{}\n",
            sections.replace("{addr}", &addr.to_string())
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let mut child = Command::new(haproxy_path())
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start haproxy ({e}): install it (apt-get install haproxy; .ci/run does)")
            });
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return Haproxy { child, addr, dir };
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        panic!("haproxy did not start:\n{log}");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn haproxy_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
