//! Test certificates, made by the tests (rcgen): a CA of their own and
//! leaves it signs, with any names and any validity, written as PEM files
//! in a fresh temporary directory (removed on drop). No key here was ever
//! committed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA and the directory its files go to.
pub struct TestCa {
    dir: PathBuf,
    ca: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf's files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmux-test-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringmux test CA");
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        TestCa { dir, ca, key }
    }

    /// The CA certificate's file (for `--cacert`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A leaf for `names` (ECDSA P-256), valid from `days_from` to
    /// `days_to` days from now, named `file` on disk.
    pub fn leaf_valid(&self, file: &str, names: &[&str], days_from: i64, days_to: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let epoch = rcgen::date_time_ymd(2026, 1, 1);
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let now = shift(epoch, today - epoch.unix_timestamp());
        params.not_before = shift(now, days_from * 86_400);
        params.not_after = shift(now, days_to * 86_400);
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem() + &self.ca.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// A leaf for `names`, valid for a year.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_valid(file, names, -1, 365)
    }
}

/// `t` moved by `secs` (either way).
fn shift<T>(t: T, secs: i64) -> T
where
    T: std::ops::Add<std::time::Duration, Output = T>
        + std::ops::Sub<std::time::Duration, Output = T>,
{
    let d = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t + d
    } else {
        t - d
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
