//! TLS termination with rustls (aws-lc-rs), in the worker: what a TLS
//! listener is configured with, the server configuration built from it
//! (certificates chosen by SNI, session tickets and a session cache shared
//! by every worker and kept across reloads, ALPN `http/1.1`, no 0-RTT), and
//! the transport a client connection's bytes pass through ([`transport`]).
//!
//! Nothing here does I/O but reading certificate files when a
//! configuration is built (at start-up and on reload, off the workers).

pub mod certs;
pub mod serving;
pub mod tickets;
pub mod transport;
pub mod upstream;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::CipherSuite;

/// Sessions the shared cache keeps for resumption by id (TLS 1.2 clients
/// without tickets).
const SESSION_CACHE: usize = 16 * 1024;

/// A certificate and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS listener as configured: its certificates, the first the default
/// for clients that send no server name (or one no certificate covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub certs: Vec<CertPaths>,
    /// Refuse a handshake whose server name no certificate covers, or
    /// that names none (`unknown_sni`), instead of giving the default.
    pub strict_sni: bool,
}

/// What the status page and `--check` say of a certificate.
#[derive(Debug, Clone)]
pub struct CertFacts {
    pub path: String,
    pub names: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertFacts {
    /// A warning when it expires within 14 days of `now` (Unix seconds),
    /// or has expired.
    pub fn warning(&self, now: i64) -> Option<String> {
        const SOON: i64 = 14 * 86_400;
        let left = self.not_after - now;
        if left >= SOON {
            return None;
        }
        let names = self.names.join(", ");
        Some(if left <= 0 {
            format!(
                "certificate {} ({names}) expired {} day(s) ago",
                self.path,
                (-left) / 86_400
            )
        } else {
            format!(
                "certificate {} ({names}) expires in {} day(s)",
                self.path,
                left / 86_400
            )
        })
    }
}

/// The warnings of every certificate of `servers` at `now` (see
/// [`CertFacts::warning`]).
pub fn expiry_warnings<'a>(servers: impl Iterator<Item = &'a TlsServer>) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    servers
        .flat_map(|s| s.certs.iter())
        .filter_map(|c| c.warning(now))
        .collect()
}

/// A TLS listener ready to accept.
#[derive(Debug)]
pub struct TlsServer {
    pub config: Arc<rustls::ServerConfig>,
    pub certs: Vec<CertFacts>,
    resolver: Arc<SniResolver>,
}

impl TlsServer {
    /// Read the certificates of `tls` and build the server configuration,
    /// with `tickets` (None: keys of this process, rotated by rustls); the
    /// error names the file and what is wrong with it. `h2`: ALPN offers
    /// HTTP/2 before HTTP/1.1.
    pub fn build(
        tls: &ListenTls,
        tickets: Option<Arc<dyn rustls::server::ProducesTickets>>,
        h2: bool,
    ) -> Result<TlsServer, String> {
        let provider = Arc::new(server_provider());
        let mut loaded = Vec::new();
        for pair in &tls.certs {
            loaded.push(certs::load(&pair.cert, &pair.key, &provider)?);
        }
        if loaded.is_empty() {
            return Err("a TLS listener needs a certificate (cert=PATH,key=PATH)".into());
        }
        let facts = loaded
            .iter()
            .map(|l| CertFacts {
                path: l.path.clone(),
                names: l.names.clone(),
                not_after: l.not_after,
            })
            .collect();
        let resolver = Arc::new(SniResolver::new(loaded, tls.strict_sni));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        config.session_storage = session_cache();
        config.ticketer = match tickets {
            Some(t) => t,
            None => ticketer()?,
        };
        config.max_early_data_size = 0;
        // Our order, not the client's: see `server_provider`.
        config.ignore_client_order = true;
        Ok(TlsServer {
            config: Arc::new(config),
            certs: facts,
            resolver,
        })
    }

    /// The DNS names of the certificate a client that asked for `sni` got.
    pub fn names_for(&self, sni: Option<&str>) -> Arc<[String]> {
        self.resolver.pick(sni).1.clone()
    }
}

/// aws-lc-rs with the AES-128-GCM suites first. Their key schedule hashes
/// with SHA-256, which x86-64 CPUs with SHA extensions (and ARMv8) do in
/// hardware, while aws-lc runs SHA-384 in plain integer code on AMD: the
/// HKDF steps of a TLS 1.3 handshake were 17% of its CPU with
/// AES-256-GCM-SHA384, the suite most clients list first. AES-128 is the
/// order BoringSSL's servers keep too. (A client without AES in hardware
/// still gets AES-128 when it offers it: clients list ChaCha20 first then,
/// and a server order cannot tell.)
fn server_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

/// The session cache every TLS listener shares, through reloads.
fn session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static CACHE: OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE))
        .clone()
}

/// The ticket keys every TLS listener shares, through reloads (rotated by
/// rustls every six hours).
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    static TICKETER: OnceLock<Arc<dyn rustls::server::ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// Certificates by server name: exact names, then wildcards (by the name's
/// parent domain), then the first certificate.
#[derive(Debug)]
struct SniResolver {
    strict: bool,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    keys: Vec<(Arc<CertifiedKey>, Arc<[String]>)>,
}

impl SniResolver {
    fn new(loaded: Vec<certs::Loaded>, strict: bool) -> SniResolver {
        let mut r = SniResolver {
            strict,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            keys: Vec::new(),
        };
        for (i, l) in loaded.into_iter().enumerate() {
            for name in &l.names {
                match name.strip_prefix("*.") {
                    Some(parent) => r.wildcard.entry(parent.to_string()).or_insert(i),
                    None => r.exact.entry(name.clone()).or_insert(i),
                };
            }
            r.keys.push((l.key, l.names.into()));
        }
        r
    }

    fn pick(&self, sni: Option<&str>) -> &(Arc<CertifiedKey>, Arc<[String]>) {
        &self.keys[self.find(sni).unwrap_or(0)]
    }

    /// The certificate for `sni`, if one covers it.
    fn find(&self, sni: Option<&str>) -> Option<usize> {
        sni.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).copied().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent).copied()
            })
        })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        ASKED.set(name.map(Into::into));
        if self.strict && self.find(name).is_none() {
            REFUSED.set(true);
            return None;
        }
        Some(self.pick(name).0.clone())
    }
}

thread_local! {
    /// The server name of the last ClientHello this thread's resolver saw,
    /// for the stream whose handshake it is: rustls's unbuffered server
    /// connection does not tell it. The resolver runs inside that stream's
    /// call into rustls, which takes the name as the call returns.
    static ASKED: std::cell::Cell<Option<Arc<str>>> = const { std::cell::Cell::new(None) };
    /// The resolver refused the last ClientHello (strict SNI), taken the
    /// same way.
    static REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the resolver refused a name since the last call (taken).
fn take_refused() -> bool {
    REFUSED.take()
}

/// The server name the resolver saw since the last call (taken).
fn take_asked() -> Option<Arc<str>> {
    ASKED.take()
}
