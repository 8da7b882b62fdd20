//! Session-ticket keys from a file (`--tls-ticket-key-file`), so that
//! several instances behind one L4 balancer resume each other's sessions.
//!
//! The file holds one key per line, 64 hex digits (32 random bytes: `openssl
//! rand -hex 32`); the first line encrypts new tickets, every line decrypts.
//! Rotating: put a new key first on every instance, keep the old one below
//! it while its tickets live (12 hours), then drop it; a reload reads the
//! file again. A ticket is the key's name (8 bytes of a hash of the key), a
//! random nonce, then the session encrypted with AES-256-GCM.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// How long a ticket is said to be good for.
const LIFETIME_S: u32 = 12 * 3600;
/// The bytes of a key's name at the start of a ticket.
const NAME_LEN: usize = 8;
/// The AEAD tag's length.
const TAG_LEN: usize = 16;

/// Keys from a ticket-key file.
pub struct FileTicketer {
    /// (name, key); the first encrypts.
    keys: Vec<([u8; NAME_LEN], LessSafeKey)>,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileTicketer({} key(s))", self.keys.len())
    }
}

impl FileTicketer {
    /// Read the keys of `path`; the error says what is wrong with it.
    pub fn read(path: &Path) -> Result<FileTicketer, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = hex(line).filter(|b| b.len() == 32).ok_or_else(|| {
                format!(
                    "{shown} line {}: a key is 64 hex digits (openssl rand -hex 32)",
                    n + 1
                )
            })?;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(&digest.as_ref()[..NAME_LEN]);
            let key =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| format!("{shown}: bad key"))?;
            keys.push((name, LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(format!("{shown}: no key in it"));
        }
        Ok(FileTicketer { keys })
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl rustls::server::ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        LIFETIME_S
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(name);
        out.extend_from_slice(&nonce);
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name),
                &mut out[at..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (_, key) = self.keys.iter().find(|(n, _)| n == name)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(name), &mut buf).ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    fn file(lines: &[&str]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "ringmux-tickets-{}-{}",
            std::process::id(),
            crate::codec::path_hash(lines.concat().as_bytes())
        ));
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    }

    #[test]
    fn tickets_open_with_any_key_of_the_file_and_only_those() {
        let (k1, k2) = ("11".repeat(32), "22".repeat(32));
        let old = FileTicketer::read(&file(&[&k1])).unwrap();
        let ticket = old.encrypt(b"session state").unwrap();
        assert_eq!(old.decrypt(&ticket).unwrap(), b"session state");
        // Rotated: a new key first, the old one still opens its tickets.
        let rotated = FileTicketer::read(&file(&[&k2, &k1])).unwrap();
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"session state");
        let newer = rotated.encrypt(b"x").unwrap();
        assert!(old.decrypt(&newer).is_none(), "another key");
        let mut forged = ticket.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert!(rotated.decrypt(&forged).is_none());
        assert!(FileTicketer::read(&file(&["abc"])).is_err());
        assert!(FileTicketer::read(&file(&["# only a comment"])).is_err());
    }
}
