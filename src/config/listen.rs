//! Listen addresses as the user writes them: `--listen ADDR` for plain
//! HTTP, `--listen ADDR,tls[,strict_sni],cert=PATH,key=PATH[,cert=PATH,key=PATH...]`
//! for TLS (several certificates, chosen by SNI; the first is the default,
//! unless `strict_sni` refuses names no certificate covers), or
//! `[[listen]]` tables in the file:
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
}

impl ListenSpec {
    /// `ADDR[,tls[,cert=PATH,key=PATH]...]`.
    pub fn parse(text: &str) -> Result<ListenSpec, String> {
        let mut parts = text.split(',');
        let addr = parts.next().unwrap_or_default().trim().to_string();
        let rest: Vec<&str> = parts.map(str::trim).collect();
        if rest.is_empty() {
            return Ok(ListenSpec { addr, tls: None });
        }
        if rest[0] != "tls" {
            return Err(format!("'{}': expected `tls` after the address", rest[0]));
        }
        let mut certs = Vec::new();
        let mut cert: Option<PathBuf> = None;
        let mut strict_sni = false;
        for opt in &rest[1..] {
            if *opt == "strict_sni" {
                strict_sni = true;
                continue;
            }
            match opt.split_once('=') {
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
                        "'{opt}': expected cert=PATH, key=PATH or strict_sni"
                    ))
                }
            }
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
        ] {
            assert!(ListenSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
