//! A connection's TLS, sans-I/O, for either side (a client connection
//! ringmux serves, an upstream connection it makes): ciphertext in (the
//! bytes the ring's recv delivered), plaintext out; plaintext in, records
//! out for the send. The handshake happens inside: its records go out with
//! whatever the worker sends next.

use std::io::{self, Read, Write};
use std::ops::DerefMut;
use std::sync::Arc;

use rustls::{ClientConnection, ConnectionCommon};

/// Most plaintext (or ciphertext) rustls buffers for one connection before
/// it stops taking more: the session's own bounds apply on top.
const BUFFER_LIMIT: usize = 64 * 1024;

/// Why a connection's TLS failed (what the metrics count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Plain HTTP to a TLS port (answered with a plain 400).
    PlainHttp,
    /// Bytes that are not TLS records at all.
    NotTls,
    /// A malformed, undecryptable or out-of-order record or message.
    BadRecord,
    /// Nothing in common with the client (versions, ciphers, ALPN).
    Incompatible,
    /// The peer sent an alert and gave up.
    ClientAlert,
    /// The origin's certificate was not accepted (ringmux's side of TLS to
    /// an origin).
    Certificate,
    /// No certificate covers the server name asked for (or none was
    /// asked for) on a listener with strict SNI.
    UnknownName,
    /// The handshake took longer than `--tls-handshake-timeout`.
    HandshakeTimeout,
    /// A handshake record after application data: a renegotiation, which
    /// ringmux does not do.
    Renegotiation,
    /// The connection ended inside a record.
    Truncated,
    /// Anything else.
    Other,
}

impl Failure {
    /// What it means for a connection ringmux made to an origin.
    pub fn upstream_reason(self) -> &'static str {
        match self {
            Failure::Certificate => "its certificate was not accepted",
            Failure::Incompatible => "no version or cipher in common",
            Failure::ClientAlert => "the origin sent an alert",
            Failure::PlainHttp | Failure::NotTls | Failure::BadRecord => {
                "a malformed record (does it speak TLS?)"
            }
            Failure::Renegotiation => "the origin asked for a renegotiation",
            Failure::HandshakeTimeout
            | Failure::Truncated
            | Failure::UnknownName
            | Failure::Other => "the handshake failed",
        }
    }

    /// Its label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::PlainHttp => "plain_http",
            Failure::NotTls => "not_tls",
            Failure::BadRecord => "bad_record",
            Failure::Incompatible => "incompatible",
            Failure::ClientAlert => "client_alert",
            Failure::Certificate => "bad_certificate",
            Failure::HandshakeTimeout => "handshake_timeout",
            Failure::Renegotiation => "renegotiation",
            Failure::Truncated => "truncated",
            Failure::UnknownName => "unknown_sni",
            Failure::Other => "other",
        }
    }

    pub(crate) fn of(e: &rustls::Error) -> Failure {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_)
            | E::DecryptError
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::PeerMisbehaved(_) => Failure::BadRecord,
            E::PeerIncompatible(_) | E::NoApplicationProtocol => Failure::Incompatible,
            E::AlertReceived(_) => Failure::ClientAlert,
            E::InvalidCertificate(_) | E::NoCertificatesPresented => Failure::Certificate,
            _ => Failure::Other,
        }
    }
}

/// What taking some ciphertext did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The handshake completed with these bytes.
    pub handshake_done: bool,
    /// The client said it closes (close_notify).
    pub closed: bool,
}

/// The first bytes of a connection that should be TLS: a TLS connection
/// starts with a handshake record (22) of version 3.x holding a
/// ClientHello (1) of at most 64 KiB; plain HTTP starts with a method.
pub(crate) fn sniff(data: &[u8]) -> Result<(), Failure> {
    if data.first().is_none_or(|&b| b == 0x16) {
        if data.get(1).is_some_and(|&v| v != 3) {
            return Err(Failure::NotTls);
        }
        let hello_ok = match data.get(5..9) {
            Some(h) => h[0] == 1 && u32::from_be_bytes([0, h[1], h[2], h[3]]) <= 0xffff,
            None => data.get(5).is_none_or(|&t| t == 1),
        };
        return if hello_ok {
            Ok(())
        } else {
            Err(Failure::BadRecord)
        };
    }
    let word = data
        .iter()
        .take(8)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    Err(if word >= 3 && data.get(word) == Some(&b' ') {
        Failure::PlainHttp
    } else {
        Failure::NotTls
    })
}

/// A protocol version's name (`TLSv1.3`, `TLSv1.2`).
pub(crate) fn version_name(v: rustls::ProtocolVersion) -> Option<&'static str> {
    Some(match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    })
}

/// A connection's TLS state on rustls's buffered API: `C` is rustls's
/// `ClientConnection` (a connection ringmux makes to an origin); a client
/// connection ringmux serves is a [`super::serving::ServerStream`].
pub struct TlsStream<C> {
    conn: C,
    framing: Framing,
    /// No byte came yet (on a server side, the first tells TLS from plain
    /// HTTP).
    fresh: bool,
    close_sent: bool,
}

/// The TLS of an upstream connection ringmux makes.
pub type ClientStream = TlsStream<ClientConnection>;

impl ClientStream {
    /// A connection to the server `name` with `config`.
    pub fn connect(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<ClientStream, rustls::Error> {
        let mut conn = ClientConnection::new(config, name)?;
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsStream {
            conn,
            framing: Framing::default(),
            // (The server's first bytes need no sniffing.)
            fresh: false,
            close_sent: false,
        })
    }
}

impl<C, D> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Take `data` (ciphertext) and append what it decrypts to to `plain`.
    /// On a failure, the alert to send (if any) is left to be written by
    /// [`TlsStream::write_records`].
    pub fn receive(&mut self, mut data: &[u8], plain: &mut Vec<u8>) -> Result<Progress, Failure> {
        if self.fresh && !data.is_empty() {
            self.fresh = false;
            sniff(data)?;
        }
        if self.framing.follow(data) {
            return Err(Failure::Renegotiation);
        }
        let was_handshaking = self.conn.is_handshaking();
        let mut progress = Progress::default();
        while !data.is_empty() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(Failure::Other),
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| Failure::of(&e))?;
            progress.closed |= state.peer_has_closed();
            self.drain(plain);
        }
        progress.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(progress)
    }

    /// Move the plaintext rustls holds into `plain`.
    fn drain(&mut self, plain: &mut Vec<u8>) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(_) => return, // WouldBlock: nothing more now
            }
        }
    }

    /// Encrypt `plain` and append the records (with any handshake or alert
    /// records due first) to `out`.
    pub fn send(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if !plain.is_empty() {
            // (The limit is for what the client sends; what we write goes
            // out at once.)
            self.conn.set_buffer_limit(None);
            self.conn.writer().write_all(plain)?;
            self.conn.set_buffer_limit(Some(BUFFER_LIMIT));
        }
        self.write_records(out)
    }

    /// Append the records due (handshake, alerts, close_notify) to `out`.
    pub fn write_records(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }

    /// Records are due (the handshake's, an alert, a close_notify).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Say we close (close_notify), once; true the first time.
    pub fn close(&mut self) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        self.conn.send_close_notify();
        true
    }

    /// The bytes so far end inside a record (at the connection's end: it
    /// was cut short).
    pub fn mid_record(&self) -> bool {
        self.framing.mid_record()
    }

    /// The handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The protocol version agreed (`TLSv1.3`, `TLSv1.2`).
    pub fn version(&self) -> Option<&'static str> {
        version_name(self.conn.protocol_version()?)
    }

    /// The session was resumed (a ticket or the cache), not a full
    /// handshake.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }
}

/// The record layer's framing of what the peer sent, followed beside
/// rustls for two things it does not say: a handshake record after
/// application data (a TLS 1.2 renegotiation; TLS 1.3 hides every later
/// handshake message inside application-data records) and a connection
/// that ends inside a record.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    header: [u8; 5],
    /// Bytes of the next record's header so far.
    have: usize,
    /// Bytes of the current record's body still to come.
    left: usize,
    data_seen: bool,
}

impl Framing {
    /// The bytes so far end inside a record.
    pub(crate) fn mid_record(&self) -> bool {
        self.have > 0 || self.left > 0
    }

    /// Follow `data`; true if a handshake record came after application
    /// data.
    pub(crate) fn follow(&mut self, mut data: &[u8]) -> bool {
        const HANDSHAKE: u8 = 22;
        const APPLICATION_DATA: u8 = 23;
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            match self.header[0] {
                APPLICATION_DATA => self.data_seen = true,
                HANDSHAKE if self.data_seen => return true,
                _ => {}
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Framing;

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3, (len >> 8) as u8, len as u8];
        r.resize(5 + len, 0xAA);
        r
    }

    #[test]
    fn framing_follows_records_split_anywhere() {
        let mut stream = record(22, 300);
        stream.extend(record(20, 1));
        stream.extend(record(22, 40));
        stream.extend(record(23, 1000));
        stream.extend(record(23, 3));
        for cut in [1, 3, 5, 6, 301, 305, 306, 1368] {
            let mut f = Framing::default();
            assert!(!f.follow(&stream[..cut]));
            assert!(!f.follow(&stream[cut..]));
            assert!(f.data_seen);
            assert_eq!((f.have, f.left), (0, 0), "cut at {cut}");
        }
        let mut f = Framing::default();
        assert!(!f.follow(&stream[..stream.len() - 2]));
        assert_eq!(f.left, 2, "ends inside a record");
        // A ClientHello after application data: a renegotiation.
        let mut f = Framing::default();
        assert!(!f.follow(&stream));
        let hello = record(22, 200);
        assert!(!f.follow(&hello[..3]));
        assert!(f.follow(&hello[3..]));
    }
}
