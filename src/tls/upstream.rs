//! TLS to origins: what a backend's `tls` setting (or `--upstream-tls`)
//! says, the rustls client configuration built from it, and the name each
//! upstream is asked for and checked against.
//!
//! Certificates are verified against `ca_file` or, without one, the
//! system's CA certificates (read once per process). `verify = false`
//! takes any certificate but still checks that the server holds its key
//! (the handshake's signature): it is for origins with self-made
//! certificates, and ringmux warns about it at start-up and on `--check`.
//! Sessions are resumed from a cache the configuration keeps, so the
//! connections a pool opens again after the first cost an abbreviated
//! handshake.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Sessions to origins kept for resumption, per configuration.
const SESSIONS: usize = 1024;

/// TLS to a backend's upstreams, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSettings {
    /// The name sent (SNI) and checked; without it, each upstream's host.
    pub sni: Option<String>,
    /// CA certificates (PEM) the origins' certificates must chain to;
    /// without it, the system's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) and its key, for origins that ask.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Check the origin's certificate (false: any certificate is taken).
    pub verify: bool,
}

/// The keys of a `tls` table or `--upstream-tls` list.
const KEYS: &str = "sni, ca_file, client_cert, client_key, verify";

impl UpstreamTlsSettings {
    fn on() -> UpstreamTlsSettings {
        UpstreamTlsSettings {
            sni: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            verify: true,
        }
    }

    /// `--upstream-tls`: `on`, or `KEY=VALUE` pairs separated by commas
    /// (`verify=off` for no certificate check).
    pub fn parse(text: &str) -> Result<UpstreamTlsSettings, String> {
        let mut s = UpstreamTlsSettings::on();
        if text == "on" {
            return Ok(s);
        }
        for part in text.split(',') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(format!(
                    "'{part}': expected on, or KEY=VALUE with KEY one of {KEYS}"
                ));
            };
            match key {
                "verify" => {
                    s.verify = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(format!("verify '{value}': on or off")),
                    }
                }
                _ => s.set(key, value)?,
            }
        }
        s.check()?;
        Ok(s)
    }

    /// A `tls` value of the config file: `true`/`false`, or a table with
    /// the keys of [`KEYS`] (None: no TLS).
    pub fn from_toml(value: &toml::Value) -> Result<Option<UpstreamTlsSettings>, String> {
        let table = match value {
            toml::Value::Boolean(on) => return Ok(on.then(UpstreamTlsSettings::on)),
            toml::Value::Table(t) => t,
            _ => return Err(format!("tls: true, false, or a table with {KEYS}")),
        };
        let mut s = UpstreamTlsSettings::on();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("verify", toml::Value::Boolean(v)) => s.verify = *v,
                ("verify", _) => return Err("tls.verify: true or false".into()),
                (_, toml::Value::String(v)) => s.set(key, v).map_err(|m| format!("tls.{m}"))?,
                _ => return Err(format!("tls.{key}: expected a string")),
            }
        }
        s.check()?;
        Ok(Some(s))
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err(format!("{key}: empty"));
        }
        let path = || Some(PathBuf::from(value));
        match key {
            "sni" => self.sni = Some(value.to_string()),
            "ca_file" => self.ca_file = path(),
            "client_cert" => self.client_cert = path(),
            "client_key" => self.client_key = path(),
            _ => return Err(format!("unknown key `{key}` (one of {KEYS})")),
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("client_cert and client_key go together".into());
        }
        if let Some(sni) = &self.sni {
            ServerName::try_from(sni.as_str())
                .map_err(|_| format!("sni '{sni}': not a DNS name or an IP address"))?;
        }
        Ok(())
    }
}

/// A backend's TLS, ready to connect with.
#[derive(Debug)]
pub struct UpstreamTls {
    pub settings: UpstreamTlsSettings,
    /// ALPN `http/1.1`.
    pub config: Arc<rustls::ClientConfig>,
    /// The same, with ALPN `h2` (for `protocol = "h2"`).
    pub config_h2: Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    /// The same settings (the files they name are read again on reload,
    /// but a connection made with the old ones is as good).
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl Eq for UpstreamTls {}

impl UpstreamTls {
    /// Read the files `settings` names and build the client configuration;
    /// the error names the file and what is wrong with it.
    pub fn build(settings: UpstreamTlsSettings) -> Result<Arc<UpstreamTls>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = if settings.verify {
            builder.with_root_certificates(roots(&settings)?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        };
        let mut config = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => {
                let chain = super::certs::read_chain(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{}: {e}", cert.display()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS);
        let mut config_h2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config_h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(UpstreamTls {
            settings,
            config: Arc::new(config),
            config_h2: Arc::new(config_h2),
        }))
    }

    /// The name to ask the upstream `upstream` (`HOST:PORT`, as configured)
    /// for: `sni` if set, else its host.
    pub fn name_for(&self, upstream: &str) -> Result<ServerName<'static>, String> {
        let host = match &self.settings.sni {
            Some(sni) => sni.as_str(),
            None => host_of(upstream),
        };
        ServerName::try_from(host.to_string())
            .map_err(|_| format!("'{host}' is not a name TLS can ask for: give the backend's sni"))
    }
}

/// The host part of `HOST:PORT` or `[V6]:PORT`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The CA certificates to verify with: `ca_file`'s, or the system's.
fn roots(settings: &UpstreamTlsSettings) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            for cert in super::certs::read_chain(path)? {
                store
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let system = system_roots();
            if system.is_empty() {
                return Err(
                    "no CA certificates found on this system: give ca_file (or verify = false)"
                        .into(),
                );
            }
            store.add_parsable_certificates(system.iter().cloned());
        }
    }
    Ok(store)
}

/// The system's CA certificates, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// `verify = false`: any certificate is taken, but the handshake's
/// signature must still be made with its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An upstream's TLS: its backend's configuration and the name it is
/// asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    pub tls: Arc<UpstreamTls>,
    pub name: ServerName<'static>,
}

impl TlsTarget {
    /// The TLS of a new connection to this upstream.
    pub fn connect(&self) -> Result<super::transport::ClientStream, rustls::Error> {
        super::transport::ClientStream::connect(self.tls.config.clone(), self.name.clone())
    }

    /// The TLS of a new connection that will speak `protocol` (its ALPN).
    pub fn connect_for(
        &self,
        protocol: crate::spec::UpstreamProtocol,
    ) -> Result<super::transport::ClientStream, rustls::Error> {
        let config = match protocol {
            crate::spec::UpstreamProtocol::Http1 => &self.tls.config,
            crate::spec::UpstreamProtocol::H2 => &self.tls.config_h2,
        };
        super::transport::ClientStream::connect(config.clone(), self.name.clone())
    }
}

/// Give each of `specs` (a backend's upstreams) its TLS with `tls`.
pub fn attach(
    tls: &Arc<UpstreamTls>,
    specs: &mut [crate::spec::UpstreamSpec],
) -> Result<(), String> {
    for spec in specs {
        let name = tls
            .name_for(&spec.name)
            .map_err(|m| format!("upstream '{}': {m}", spec.name))?;
        spec.tls = Some(TlsTarget {
            tls: tls.clone(),
            name,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_the_flag() {
        assert_eq!(
            UpstreamTlsSettings::parse("on").unwrap(),
            UpstreamTlsSettings::on()
        );
        let s = UpstreamTlsSettings::parse("sni=api.example,verify=off,ca_file=/x.pem").unwrap();
        assert_eq!(s.sni.as_deref(), Some("api.example"));
        assert!(!s.verify);
        assert_eq!(s.ca_file, Some(PathBuf::from("/x.pem")));
        let e = UpstreamTlsSettings::parse("cafile=/x").unwrap_err();
        assert!(e.contains("`cafile`"), "{e}");
        let e = UpstreamTlsSettings::parse("client_cert=/c.pem").unwrap_err();
        assert!(e.contains("together"), "{e}");
        assert!(UpstreamTlsSettings::parse("verify=maybe").is_err());
        assert!(UpstreamTlsSettings::parse("sni=bad name").is_err());
    }

    #[test]
    fn settings_from_the_file() {
        let v: toml::Value = toml::from_str("t = true").unwrap();
        assert_eq!(
            UpstreamTlsSettings::from_toml(&v["t"]).unwrap(),
            Some(UpstreamTlsSettings::on())
        );
        let v: toml::Value = toml::from_str("t = false").unwrap();
        assert_eq!(UpstreamTlsSettings::from_toml(&v["t"]).unwrap(), None);
        let v: toml::Value = toml::from_str("[t]\nsni = \"a.example\"\nverify = false").unwrap();
        let s = UpstreamTlsSettings::from_toml(&v["t"]).unwrap().unwrap();
        assert_eq!(s.sni.as_deref(), Some("a.example"));
        assert!(!s.verify);
        let v: toml::Value = toml::from_str("[t]\nca = \"x\"").unwrap();
        let e = UpstreamTlsSettings::from_toml(&v["t"]).unwrap_err();
        assert!(e.contains("`ca`"), "{e}");
    }

    #[test]
    fn names_from_upstreams() {
        let tls = UpstreamTls::build(UpstreamTlsSettings {
            verify: false,
            ..UpstreamTlsSettings::on()
        })
        .unwrap();
        assert_eq!(
            tls.name_for("origin.example:443").unwrap(),
            ServerName::try_from("origin.example").unwrap()
        );
        assert_eq!(
            tls.name_for("[::1]:8443").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            tls.name_for("127.0.0.1:8443").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
    }
}
