//! A real nginx on loopback for the tests that need one (an origin that
//! compresses, speaks HTTP/2, terminates TLS). Started in the foreground
//! with one process and a configuration of the test's own in a fresh
//! temporary directory; killed on drop. `.ci/run` installs nginx; without
//! it these tests fail and say so.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Start nginx with `http` (directives for the `http` block, with
    /// `{addr}` standing for the `listen` address it should use and
    /// `{dir}` for a directory of its own, e.g.
    /// `server { listen {addr}; root {dir}/www; }`; see [`Nginx::put`]).
    pub fn start(http: &str) -> Nginx {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmux-test-nginx-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A port free a moment ago; a few tries if another test takes it.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let d = dir.display();
            let conf = format!(
                "daemon off;\nmaster_process off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
                 events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  \
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{}\n}}\n",
                http.replace("{addr}", &addr.to_string())
                    .replace("{dir}", &d.to_string())
            );
            let path = dir.join("nginx.conf");
            std::fs::write(&path, conf).unwrap();
            let child = Command::new("nginx")
                .arg("-c")
                .arg(&path)
                .arg("-p")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start nginx ({e}): install it (apt-get install nginx-light; .ci/run does)")
                });
            let mut child = child;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect(addr).is_ok() {
                    return Nginx { child, addr, dir };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile, or a bad config
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!("nginx did not start:\n{log}");
            }
        }
        panic!("nginx found no free port in 5 tries");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Write `bytes` to `path` under its directory (`{dir}` in the
    /// configuration), for it to serve.
    pub fn put(&self, path: &str, bytes: &[u8]) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
