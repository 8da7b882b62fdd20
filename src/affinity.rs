//! Session affinity by cookie (`--affinity cookie`): which upstream a
//! session lives on, signed so that any ringmux with the same key honours
//! it without a shared table.
//!
//! The cookie names the session's *home* upstream and, while the home is
//! cold or down and a peer serves the session, that *peer*; both by a
//! stable key hashed from the upstream's configured name (the same in
//! every process and across restarts). Its value is
//! `v1.<home>.<peer or ->.<expires>.<mac>`: ids in hex, the expiry in Unix
//! seconds, and the first 16 bytes of HMAC-SHA256(key, everything before
//! the last dot), in hex. A cookie whose MAC does not verify, that has
//! expired, or that names no upstream this proxy knows is ignored, and the
//! policy decides. The cookie is taken out of the `Cookie` field before the
//! request goes upstream.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a MAC the cookie carries is, in bytes.
const MAC_LEN: usize = 16;

/// The settings of `--affinity cookie`.
#[derive(Clone)]
pub struct Affinity {
    /// The cookie's name.
    pub cookie: &'static str,
    key: Vec<u8>,
    /// Max-Age of the cookie, and how long a value is valid.
    pub max_age: Duration,
    /// Add `Secure` (the site is served over TLS in front of ringmux).
    pub secure: bool,
    /// The request header that names the peer at the hand-off, if on.
    pub peer_header: Option<&'static str>,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of `--check` and logs.
        f.debug_struct("Affinity")
            .field("cookie", &self.cookie)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("max_age", &self.max_age)
            .field("secure", &self.secure)
            .field("peer_header", &self.peer_header)
            .finish()
    }
}

impl PartialEq for Affinity {
    fn eq(&self, other: &Self) -> bool {
        self.cookie == other.cookie
            && self.key == other.key
            && self.max_age == other.max_age
            && self.secure == other.secure
            && self.peer_header == other.peer_header
    }
}

/// What a valid cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The session's home upstream (see [`upstream_key`]).
    pub home: u64,
    /// The upstream serving it while home is not ready.
    pub peer: Option<u64>,
    /// Unix seconds.
    pub expires: u64,
}

/// An upstream's key in the cookie: a hash of its configured name, so the
/// same in every ringmux that has it under that name.
pub fn upstream_key(name: &str) -> u64 {
    crate::codec::mix(crate::codec::path_hash(name.as_bytes()))
}

type HmacSha256 = Hmac<Sha256>;

impl Affinity {
    /// Affinity with `key` (at least 16 bytes).
    pub fn new(
        cookie: &'static str,
        key: Vec<u8>,
        max_age: Duration,
        secure: bool,
        peer_header: Option<&'static str>,
    ) -> Self {
        Affinity {
            cookie,
            key,
            max_age,
            secure,
            peer_header,
        }
    }

    fn mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(signed);
        m
    }

    /// The ticket in cookie value `value`, if it is ours, intact and not
    /// expired at `now` (Unix seconds).
    pub fn read(&self, value: &[u8], now: u64) -> Option<Ticket> {
        let value = std::str::from_utf8(value).ok()?;
        let (signed, mac_hex) = value.rsplit_once('.')?;
        let mut parts = signed.split('.');
        if parts.next()? != "v1" {
            return None;
        }
        let home = u64::from_str_radix(parts.next()?, 16).ok()?;
        let peer = match parts.next()? {
            "-" => None,
            p => Some(u64::from_str_radix(p, 16).ok()?),
        };
        let expires: u64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || mac_hex.len() != MAC_LEN * 2 {
            return None;
        }
        let mut tag = [0u8; MAC_LEN];
        for (i, b) in tag.iter_mut().enumerate() {
            *b = u8::from_str_radix(mac_hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        // Constant time, whatever the attacker guessed.
        self.mac(signed.as_bytes())
            .verify_truncated_left(&tag)
            .ok()?;
        (expires > now).then_some(Ticket {
            home,
            peer,
            expires,
        })
    }

    /// The cookie value for `t`.
    pub fn value(&self, t: &Ticket) -> String {
        let peer = t.peer.map_or("-".to_string(), |p| format!("{p:016x}"));
        let signed = format!("v1.{:016x}.{peer}.{}", t.home, t.expires);
        let tag = self.mac(signed.as_bytes()).finalize().into_bytes();
        let mut out = signed;
        out.push('.');
        for b in &tag[..MAC_LEN] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// A ticket for `home` (and `peer`) valid from `now` for `max_age`.
    pub fn ticket(&self, home: u64, peer: Option<u64>, now: u64) -> Ticket {
        Ticket {
            home,
            peer,
            expires: now + self.max_age.as_secs(),
        }
    }

    /// The `Set-Cookie` field (with its CRLF) that carries `t`.
    pub fn set_cookie(&self, t: &Ticket) -> Vec<u8> {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "Set-Cookie: {}={}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}\r\n",
            self.cookie,
            self.value(t),
            self.max_age.as_secs()
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity(key: &[u8]) -> Affinity {
        Affinity::new("rmx", key.to_vec(), Duration::from_secs(3600), false, None)
    }

    #[test]
    fn a_ticket_round_trips_and_any_ringmux_with_the_key_reads_it() {
        let a = affinity(b"0123456789abcdef0123");
        let t = a.ticket(
            upstream_key("10.0.0.5:8000"),
            Some(upstream_key("10.0.0.6:8000")),
            1000,
        );
        let v = a.value(&t);
        assert_eq!(
            affinity(b"0123456789abcdef0123").read(v.as_bytes(), 1001),
            Some(t)
        );
        assert_eq!(a.read(v.as_bytes(), t.expires), None, "expired");
        assert_eq!(
            affinity(b"another key, same length").read(v.as_bytes(), 1001),
            None
        );
        let plain = a.ticket(1, None, 0);
        assert_eq!(a.read(a.value(&plain).as_bytes(), 1), Some(plain));
    }

    #[test]
    fn a_forged_or_mangled_cookie_is_ignored() {
        let a = affinity(b"0123456789abcdef0123");
        let v = a.value(&a.ticket(7, None, 1000));
        // Another home, the same MAC.
        let forged = v.replacen(&format!("{:016x}", 7u64), &format!("{:016x}", 8u64), 1);
        assert_ne!(forged, v);
        assert_eq!(a.read(forged.as_bytes(), 1001), None);
        // A later expiry, the same MAC.
        let (head, mac) = v.rsplit_once('.').unwrap();
        let (rest, _) = head.rsplit_once('.').unwrap();
        assert_eq!(
            a.read(format!("{rest}.99999999999.{mac}").as_bytes(), 1001),
            None
        );
        for junk in [
            "",
            "v1",
            "v2.0.-.5.00",
            "v1.zz.-.5.00",
            "v1.1.-.5.0011",
            "\u{ff}",
        ] {
            assert_eq!(a.read(junk.as_bytes(), 0), None, "{junk:?}");
        }
    }

    #[test]
    fn the_set_cookie_field_has_the_attributes() {
        let mut a = affinity(b"0123456789abcdef0123");
        let t = a.ticket(1, None, 0);
        let f = String::from_utf8(a.set_cookie(&t)).unwrap();
        assert!(
            f.starts_with("Set-Cookie: rmx=v1.0000000000000001.-.3600."),
            "{f}"
        );
        assert!(
            f.ends_with("; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax\r\n"),
            "{f}"
        );
        a.secure = true;
        assert!(String::from_utf8(a.set_cookie(&t))
            .unwrap()
            .contains("; Secure\r\n"));
        assert!(
            !format!("{a:?}").contains("0123"),
            "the key stays out of Debug"
        );
    }
}
