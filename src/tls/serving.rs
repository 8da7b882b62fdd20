//! The TLS of a client connection ringmux serves, on rustls's unbuffered
//! API: the connection owns no buffer between records. Ciphertext the
//! ring delivered goes through a scratch buffer the worker lends; only a
//! record (or handshake message) cut by the end of a recv is kept, until
//! its rest comes. Records due out (the handshake's, a close_notify) wait
//! in `due` for the next send. An idle connection holds rustls's state and
//! nothing else: about 4 KiB less than the buffered API, whose read buffer
//! never shrinks below 4 KiB.

use std::io;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

use super::transport::{Failure, Framing, Progress};

/// Most ciphertext kept for one unfinished record or handshake message:
/// rustls joins handshake messages of up to 64 KiB, and a record is at
/// most 16 KiB and its overhead.
const MAX_PARTIAL: usize = 64 * 1024 + 17 * 1024;

/// Bytes a record adds to its plaintext, at most (header, TLS 1.2's
/// explicit nonce or TLS 1.3's content type, tag).
const RECORD_OVERHEAD: usize = 5 + 8 + 16;
/// Most plaintext in one record.
const RECORD_PLAINTEXT: usize = 16 * 1024;

/// The TLS of a client connection ringmux serves.
pub struct ServerStream {
    conn: UnbufferedServerConnection,
    /// The ciphertext of a record or handshake message not complete yet
    /// (rustls has seen its first part); empty, unallocated, otherwise.
    partial: Vec<u8>,
    /// Records due out: taken by the next [`ServerStream::send`].
    due: Vec<u8>,
    framing: Framing,
    /// No byte came yet (the first tells TLS from plain HTTP).
    fresh: bool,
    close_sent: bool,
    /// The client said it closes (close_notify): what follows is ignored.
    peer_closed: bool,
    /// The server name the client asked for.
    sni: Option<Arc<str>>,
}

impl ServerStream {
    /// A connection served with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<ServerStream, rustls::Error> {
        Ok(ServerStream {
            conn: UnbufferedServerConnection::new(config)?,
            partial: Vec::new(),
            due: Vec::new(),
            framing: Framing::default(),
            fresh: true,
            close_sent: false,
            peer_closed: false,
            sni: None,
        })
    }

    /// The server name the client asked for.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The protocol ALPN chose (`h2`, `http/1.1`), once the handshake is
    /// done.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Take `data` (ciphertext) and append what it decrypts to to `plain`;
    /// `scratch` is the worker's, lent for the call. Records due out (the
    /// handshake's) wait for [`ServerStream::send`].
    pub fn receive(
        &mut self,
        data: &[u8],
        scratch: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<Progress, Failure> {
        if self.peer_closed {
            return Ok(Progress::default());
        }
        if self.fresh && !data.is_empty() {
            self.fresh = false;
            super::transport::sniff(data)?;
        }
        if self.framing.follow(data) {
            return Err(Failure::Renegotiation);
        }
        // The bytes to process: an unfinished record's start, then `data`.
        let from_partial = !self.partial.is_empty();
        let mut input = if from_partial {
            std::mem::take(&mut self.partial)
        } else {
            std::mem::take(scratch)
        };
        if !from_partial {
            input.clear();
        }
        input.extend_from_slice(data);
        let was_handshaking = self.conn.is_handshaking();
        if was_handshaking {
            super::take_asked();
            super::take_refused();
        }
        let result = self.process(&mut input, plain);
        if was_handshaking && self.sni.is_none() {
            self.sni = super::take_asked();
        }
        let (used, mut progress) = match result {
            Ok(r) => r,
            Err(failure) => {
                if !from_partial {
                    *scratch = input;
                }
                self.encode_alert();
                if was_handshaking && super::take_refused() {
                    return Err(Failure::UnknownName);
                }
                return Err(failure);
            }
        };
        // Keep what is left (a record cut short) and nothing more.
        if from_partial {
            input.drain(..used);
            if input.capacity() > 2 * input.len() + 4096 {
                // What is left keeps a buffer of its size; the larger one
                // serves as the scratch from now on.
                self.partial = input.to_vec();
                if input.capacity() > scratch.capacity() {
                    *scratch = input;
                }
            } else {
                self.partial = input;
            }
        } else {
            if used < input.len() {
                self.partial = input[used..].to_vec();
            }
            *scratch = input;
        }
        if self.partial.len() > MAX_PARTIAL {
            return Err(Failure::BadRecord);
        }
        progress.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(progress)
    }

    /// Run rustls over `input` until it wants more: application data into
    /// `plain`, handshake records into `due`. Returns how many bytes of
    /// `input` are done with.
    fn process(
        &mut self,
        input: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> Result<(usize, Progress), Failure> {
        let mut done = 0;
        let mut progress = Progress::default();
        loop {
            let status = self.conn.process_tls_records(&mut input[done..]);
            let mut discard = status.discard;
            let more = match status.state.map_err(|e| Failure::of(&e))? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(|e| Failure::of(&e))?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append(&mut self.due, 512, |b| {
                        encode.encode(b).map_err(encode_room)
                    })
                    .map_err(|_| Failure::Other)?;
                    true
                }
                // (What was encoded goes out with the next send.)
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    progress.closed = true;
                    self.peer_closed = true;
                    true
                }
                // 0-RTT is off: early data is never accepted.
                ConnectionState::ReadEarlyData(_) => return Err(Failure::BadRecord),
                // Waiting for the client, or for something to send.
                _ => false,
            };
            done += discard;
            if !more {
                return Ok((done, progress));
            }
        }
    }

    /// Run rustls with nothing new until application data may be written;
    /// `write` then runs on it. Records due come first, into `due`.
    fn with_traffic(
        &mut self,
        mut write: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), ()>,
    ) -> io::Result<()> {
        // The unfinished record stays the start of rustls's input, as it
        // asks (it may have seen part of it).
        let mut input = std::mem::take(&mut self.partial);
        let mut done = 0;
        let result = loop {
            let status = self.conn.process_tls_records(&mut input[done..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => break Err(io::Error::other(e)),
            };
            let outcome = match state {
                ConnectionState::EncodeTlsData(mut encode) => append(&mut self.due, 512, |b| {
                    encode.encode(b).map_err(encode_room)
                })
                .map(|_| None),
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    Ok(None)
                }
                ConnectionState::PeerClosed => Ok(None),
                ConnectionState::WriteTraffic(mut traffic) => {
                    write(&mut traffic, &mut self.due).map(|_| Some(Ok(())))
                }
                _ => Ok(Some(Err(io::Error::other("TLS: no application data now")))),
            };
            done += discard;
            match outcome {
                Ok(None) => {}
                Ok(Some(r)) => break r,
                Err(()) => break Err(io::Error::other("TLS: record not written")),
            }
        };
        input.drain(..done);
        if !input.is_empty() {
            self.partial = input;
        }
        result
    }

    /// Encrypt `plain` and append the records (with any handshake or alert
    /// records due first) to `out`.
    pub fn send(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if !plain.is_empty() {
            self.with_traffic(|traffic, due| {
                let records = plain.len().div_ceil(RECORD_PLAINTEXT).max(1);
                append(due, plain.len() + records * RECORD_OVERHEAD, |b| {
                    traffic.encrypt(plain, b).map_err(encrypt_room)
                })
            })?;
        }
        self.write_records(out)
    }

    /// Append the records due (handshake, alerts, close_notify) to `out`.
    pub fn write_records(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            std::mem::swap(out, &mut self.due);
        } else {
            out.append(&mut self.due);
        }
        // (Nothing stays allocated while the connection is idle.)
        self.due = Vec::new();
        Ok(())
    }

    /// Records are due (the handshake's, an alert, a close_notify).
    pub fn wants_write(&self) -> bool {
        !self.due.is_empty()
    }

    /// Say we close (close_notify), once: true if records are now due
    /// (false after the first time, and during the handshake, which has
    /// nothing to say it with).
    pub fn close(&mut self) -> bool {
        if self.close_sent || self.conn.is_handshaking() {
            return false;
        }
        self.close_sent = true;
        let _ = self.with_traffic(|traffic, due| {
            append(due, 64, |b| {
                traffic.queue_close_notify(b).map_err(encrypt_room)
            })
        });
        self.wants_write()
    }

    /// After a failure: the alert rustls queued for it (a handshake that
    /// failed tells the client why, as `handshake_failure`, `decode_error`
    /// ...), into the records due.
    fn encode_alert(&mut self) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if append(&mut self.due, 64, |b| encode.encode(b).map_err(encode_room)).is_err()
                    {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// After a failure: the records due (the alert), taken.
    pub fn take_alert(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.due)
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
        super::transport::version_name(self.conn.protocol_version()?)
    }

    /// The session was resumed (a ticket or the cache), not a full
    /// handshake.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }
}

/// Write at the end of `out` with `write`, which says how much room it
/// needs when `guess` is not enough (`Err(Some(n))`) or fails (`Err(None)`).
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need > room => room = need,
            Err(_) => {
                out.truncate(start);
                return Err(());
            }
        }
    }
}

fn encode_room(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::tls::{CertPaths, ListenTls, TlsServer};

    /// A server stream and a rustls client for `bench.test`, in memory.
    fn pair(dir: &std::path::Path) -> (ServerStream, rustls::ClientConnection) {
        let ck = rcgen::generate_simple_self_signed(vec!["bench.test".into()]).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let server = TlsServer::build(
            &ListenTls {
                certs: vec![CertPaths { cert, key }],
                strict_sni: false,
            },
            None,
            false,
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client =
            rustls::ClientConnection::new(Arc::new(client), "bench.test".try_into().unwrap())
                .unwrap();
        (ServerStream::new(server.config.clone()).unwrap(), client)
    }

    /// What the client has to send.
    fn from_client(c: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Give `wire` to the client; what it decrypted.
    fn to_client(c: &mut rustls::ClientConnection, wire: &[u8]) -> Vec<u8> {
        let mut r = wire;
        let mut plain = Vec::new();
        while !r.is_empty() {
            c.read_tls(&mut r).unwrap();
            c.process_new_packets().unwrap();
            let _ = c.reader().read_to_end(&mut plain);
        }
        plain
    }

    /// Feed `wire` to the server in pieces of `step` bytes.
    fn feed(s: &mut ServerStream, wire: &[u8], step: usize) -> (Vec<u8>, Progress) {
        let (mut scratch, mut plain) = (Vec::new(), Vec::new());
        let mut all = Progress::default();
        for piece in wire.chunks(step) {
            let p = s.receive(piece, &mut scratch, &mut plain).unwrap();
            all.handshake_done |= p.handshake_done;
            all.closed |= p.closed;
        }
        (plain, all)
    }

    fn handshake(s: &mut ServerStream, c: &mut rustls::ClientConnection, step: usize) {
        let mut done = false;
        for _ in 0..4 {
            let hello = from_client(c);
            done |= feed(s, &hello, step).1.handshake_done;
            let mut out = Vec::new();
            s.write_records(&mut out).unwrap();
            to_client(c, &out);
        }
        assert!(done && !s.is_handshaking() && !c.is_handshaking());
        assert_eq!(s.sni(), Some("bench.test"));
        assert_eq!(s.version(), Some("TLSv1.3"));
    }

    #[test]
    fn records_cut_anywhere_come_out_whole_and_an_idle_stream_holds_no_buffer() {
        for step in [1, 7, 100, 1 << 20] {
            let dir = tempdir();
            let (mut s, mut c) = pair(&dir);
            handshake(&mut s, &mut c, step);
            // 40 KiB each way: three records.
            let request: Vec<u8> = (0..40_000).map(|i| (i % 251) as u8).collect();
            c.writer().write_all(&request).unwrap();
            let wire = from_client(&mut c);
            let (plain, _) = feed(&mut s, &wire, step);
            assert_eq!(plain, request, "cut every {step} bytes");
            let mut out = Vec::new();
            s.send(&request, &mut out).unwrap();
            assert_eq!(to_client(&mut c, &out), request);
            assert!(!s.mid_record());
            assert_eq!((s.partial.capacity(), s.due.capacity()), (0, 0));
            // The client closes: close_notify is its end; ours follows.
            c.send_close_notify();
            let wire = from_client(&mut c);
            assert!(feed(&mut s, &wire, step).1.closed);
            assert!(s.close() && !s.close());
            let mut out = Vec::new();
            s.write_records(&mut out).unwrap();
            to_client(&mut c, &out);
            assert!(c.process_new_packets().unwrap().peer_has_closed());
        }
    }

    #[test]
    fn an_unfinished_record_is_bounded() {
        let dir = tempdir();
        let (mut s, mut c) = pair(&dir);
        handshake(&mut s, &mut c, 1 << 20);
        let (mut scratch, mut plain) = (Vec::new(), Vec::new());
        // A record header announcing more than a record may hold.
        let r = s.receive(&[23, 3, 3, 0xff, 0xff], &mut scratch, &mut plain);
        assert!(r.is_err() || s.receive(&[0; 70_000], &mut scratch, &mut plain).is_err());
    }

    fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "ringmux-serving-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
