//! Listen addresses as the user writes them: `--listen ADDR` for plain
//! HTTP, `--listen ADDR,tls[,strict_sni],cert=PATH,key=PATH[,cert=PATH,key=PATH...]`
//! for TLS (several certificates, chosen by SNI; the first is the default,
//! unless `strict_sni` refuses names no certificate covers), with `h2`
//! after the address or `tls` for HTTP/2 as well (ALPN over TLS, the
//! preface in plaintext), or `[[listen]]` tables in the file (`h2 = true`):
//!
//! ```toml
//! [[listen]]
//! addr = "0.0.0.0:443"
//! tls = true
//! [[listen.cert]]
//! cert = "/etc/ringmux/example.com.pem"
//! key = "/etc/ringmux/example.com.key"
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::tls::{CertPaths, ListenTls};

/// A listen address and, for a TLS one, its certificates (not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: String,
    pub tls: Option<ListenTls>,
    /// HTTP/2 too: offered by ALPN over TLS; in plaintext, a connection
    /// that begins with the HTTP/2 preface speaks it (prior knowledge,
    /// h2c), any other HTTP/1.1.
    pub h2: bool,
}

impl ListenSpec {
    /// `ADDR[,h2]` or `ADDR,tls[,h2][,strict_sni],cert=PATH,key=PATH...`.
    pub fn parse(text: &str) -> Result<ListenSpec, String> {
        let mut parts = text.split(',');
        let addr = parts.next().unwrap_or_default().trim().to_string();
        let rest: Vec<&str> = parts.map(str::trim).collect();
        let mut tls = false;
        let mut h2 = false;
        let mut certs = Vec::new();
        let mut cert: Option<PathBuf> = None;
        let mut strict_sni = false;
        for (i, opt) in rest.iter().enumerate() {
            match *opt {
                "tls" if i == 0 => tls = true,
                "h2" => h2 = true,
                "strict_sni" if tls => strict_sni = true,
                _ if !tls => {
                    return Err(format!("'{opt}': expected `tls` or `h2` after the address"))
                }
                _ => match opt.split_once('=') {
                    Some(("cert", p)) if cert.is_none() => cert = Some(p.into()),
                    Some(("key", p)) => match cert.take() {
                        Some(c) => certs.push(CertPaths {
                            cert: c,
                            key: p.into(),
                        }),
                        None => return Err("key=PATH must follow its cert=PATH".into()),
                    },
                    Some(("cert", _)) => return Err("cert=PATH without its key=PATH".into()),
                    _ => {
                        return Err(format!(
                            "'{opt}': expected cert=PATH, key=PATH, h2 or strict_sni"
                        ))
                    }
                },
            }
        }
        if !tls {
            return Ok(ListenSpec {
                addr,
                tls: None,
                h2,
            });
        }
        if cert.is_some() {
            return Err("cert=PATH without its key=PATH".into());
        }
        if certs.is_empty() {
            return Err("a TLS listener needs cert=PATH,key=PATH".into());
        }
        Ok(ListenSpec {
            addr,
            tls: Some(ListenTls { certs, strict_sni }),
            h2,
        })
    }
}

/// A `[[listen]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListen {
    addr: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    strict_sni: bool,
    #[serde(default)]
    h2: bool,
    #[serde(default)]
    cert: Vec<FileCert>,
}

/// A `[[listen.cert]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCert {
    cert: PathBuf,
    key: PathBuf,
}

impl FileListen {
    /// The listen address the table describes.
    pub fn into_spec(self) -> Result<ListenSpec, String> {
        if self.strict_sni && !self.tls {
            return Err(format!("'{}': strict_sni needs tls = true", self.addr));
        }
        let certs: Vec<CertPaths> = self
            .cert
            .into_iter()
            .map(|c| CertPaths {
                cert: c.cert,
                key: c.key,
            })
            .collect();
        match (self.tls, certs.is_empty()) {
            (false, true) => Ok(ListenSpec {
                addr: self.addr,
                tls: None,
                h2: self.h2,
            }),
            (false, false) => Err(format!("'{}': [[listen.cert]] needs tls = true", self.addr)),
            (true, true) => Err(format!(
                "'{}': tls = true needs a [[listen.cert]]",
                self.addr
            )),
            (true, false) => Ok(ListenSpec {
                addr: self.addr,
                tls: Some(ListenTls {
                    certs,
                    strict_sni: self.strict_sni,
                }),
                h2: self.h2,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        assert_eq!(ListenSpec::parse("127.0.0.1:80").unwrap().tls, None);
        let plain = ListenSpec::parse("127.0.0.1:80,h2").unwrap();
        assert!(plain.h2 && plain.tls.is_none());
        let s = ListenSpec::parse("0.0.0.0:443,tls,h2,cert=a.pem,key=a.key").unwrap();
        assert!(s.h2 && s.tls.is_some());
        let s =
            ListenSpec::parse("0.0.0.0:443,tls,cert=a.pem,key=a.key,cert=b.pem,key=b.key").unwrap();
        assert_eq!(s.addr, "0.0.0.0:443");
        let certs = s.tls.unwrap().certs;
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[1].key, PathBuf::from("b.key"));
        for bad in [
            "0.0.0.0:443,tls",
            "0.0.0.0:443,tls,cert=a.pem",
            "0.0.0.0:443,tls,key=a.key",
            "0.0.0.0:443,ssl,cert=a,key=b",
            "0.0.0.0:443,tls,cert=a,cert=b,key=c",
            "0.0.0.0:80,strict_sni",
            "0.0.0.0:80,h2,tls,cert=a,key=b",
            "0.0.0.0:80,h3",
        ] {
            assert!(ListenSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
