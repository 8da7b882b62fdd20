//! Certificates and keys from PEM files, and the two facts ringmux needs
//! from a certificate itself: the DNS names it covers (subjectAltName) and
//! when it expires (notAfter). Read with a small DER walker: only the
//! fields on the way to those two are looked at.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate chain and its key, ready to serve, with what it covers.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf certificate, lowercase (`*.example.com`
    /// for a wildcard).
    pub names: Vec<String>,
    /// When the leaf expires, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The certificate file, for messages and the status page.
    pub path: String,
}

/// Read the chain in `cert` and the key in `key` and check that they
/// belong together; the error says which file and why.
pub fn load(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Loaded, String> {
    let shown = cert.display().to_string();
    let chain = read_chain(cert)?;
    let (names, not_after) = leaf_facts(&chain[0]).map_err(|e| format!("{shown}: {e}"))?;
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, private, provider)
        .map_err(|e| format!("{shown} with {}: {e}", key.display()))?;
    certified.keys_match().map_err(|e| {
        format!(
            "{shown} with {}: the key is not the certificate's ({e})",
            key.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        names,
        not_after,
        path: shown,
    })
}

/// The certificates in the PEM file `path` (at least one); the error
/// names the file.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{shown}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{shown}: no certificate in it"));
    }
    Ok(chain)
}

/// Whether `host` (lowercase, no port) is one of `names` or under one of
/// their wildcards (which cover one label: `*.example.com` covers
/// `a.example.com`, not `a.b.example.com`).
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| match n.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => n == host,
    })
}

/// A DER element: its tag, and its contents.
fn element(der: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = der.split_first().ok_or("certificate cut short")?;
    let (&first, rest) = rest.split_first().ok_or("certificate cut short")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("bad length in certificate");
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| a << 8 | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("certificate cut short");
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The leaf's DNS names and its notAfter.
fn leaf_facts(der: &[u8]) -> Result<(Vec<String>, i64), &'static str> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after; // version
    }
    for _ in 0..3 {
        rest = element(rest)?.2; // serial, signature algorithm, issuer
    }
    let (_, validity, after_validity) = element(rest)?;
    let (_, _, after_before) = element(validity)?;
    let (time_tag, not_after, _) = element(after_before)?;
    let not_after = parse_time(time_tag, not_after)?;
    rest = after_validity;
    rest = element(rest)?.2; // subject
    rest = element(rest)?.2; // subject public key info
    let mut names = Vec::new();
    while !rest.is_empty() {
        let (tag, body, after) = element(rest)?;
        rest = after;
        if tag != 0xa3 {
            continue; // unique ids
        }
        let (_, mut exts, _) = element(body)?;
        while !exts.is_empty() {
            let (_, ext, after) = element(exts)?;
            exts = after;
            let (_, oid, mut fields) = element(ext)?;
            if oid != [0x55, 0x1d, 0x11] {
                continue; // not subjectAltName
            }
            let (tag, _, after) = element(fields)?;
            if tag == 0x01 {
                fields = after; // critical
            }
            let (_, value, _) = element(fields)?;
            let (_, mut general_names, _) = element(value)?;
            while !general_names.is_empty() {
                let (tag, name, after) = element(general_names)?;
                general_names = after;
                if tag == 0x82 {
                    names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
                }
            }
        }
    }
    Ok((names, not_after))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since the Unix epoch.
fn parse_time(tag: u8, text: &[u8]) -> Result<i64, &'static str> {
    let digits = |s: &[u8]| -> Result<i64, &'static str> {
        s.iter().try_fold(0i64, |a, &b| {
            b.is_ascii_digit()
                .then(|| a * 10 + i64::from(b - b'0'))
                .ok_or("bad time in certificate")
        })
    };
    let (year, rest) = match tag {
        0x17 if text.len() >= 12 => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 if text.len() >= 14 => (digits(&text[..4])?, &text[4..]),
        _ => return Err("bad time in certificate"),
    };
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(0x17, b"491231235959Z").unwrap(), 2_524_607_999);
        assert_eq!(parse_time(0x18, b"20261207000000Z").unwrap(), 1_796_601_600);
        assert!(parse_time(0x17, b"49123123595").is_err());
    }

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_string(), "example.com".to_string()];
        assert!(covers(&names, "a.example.com"));
        assert!(covers(&names, "example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "example.org"));
    }
}
