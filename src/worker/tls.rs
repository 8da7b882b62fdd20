//! A client connection's TLS in the core: ciphertext from the ring goes
//! through rustls to the session, the session's output back through it
//! (see `flush_clients`); the handshake is timed and counted, failures are
//! counted by reason and close the connection.

use std::sync::Arc;
use std::time::Instant;

use super::client::Transport;
use super::core::{ClientId, Core};
use crate::session::TlsInfo;
use crate::tls::serving::ServerStream;
use crate::tls::transport::Failure;
use crate::tls::TlsServer;

/// The answer to plain HTTP sent to a TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 38\r\nConnection: close\r\n\r\nplain HTTP request sent to a TLS port\n";

/// A client connection's TLS.
pub(crate) struct TlsConn {
    pub stream: ServerStream,
    pub server: Arc<TlsServer>,
    /// Until when the handshake may go on (None once it is done).
    pub handshake_until: Option<Instant>,
}

impl TlsConn {
    /// A connection served by `server`, whose handshake must end by
    /// `until`.
    pub fn new(server: Arc<TlsServer>, until: Instant) -> Result<TlsConn, rustls::Error> {
        Ok(TlsConn {
            stream: ServerStream::new(server.config.clone())?,
            server,
            handshake_until: Some(until),
        })
    }
}

impl Core {
    /// Ciphertext `data` came on `client`'s TLS connection: what it
    /// decrypts to goes to the session. False if the connection is to
    /// close (its TLS failed).
    pub(super) fn tls_receive(&mut self, client: ClientId, data: &[u8]) -> bool {
        let Some(c) = self.clients.get_mut(client) else {
            return false;
        };
        let Transport::Tls(t) = &mut c.transport else {
            return true;
        };
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let progress = match t.stream.receive(data, &mut self.tls_scratch, &mut plain) {
            Ok(p) => p,
            Err(Failure::PlainHttp) => {
                // Plain HTTP to a TLS port: say so in plain HTTP, then close.
                self.tls_plain = plain;
                *self
                    .figures
                    .tls
                    .failures
                    .entry(Failure::PlainHttp.as_str())
                    .or_default() += 1;
                c.transport = Transport::Plain;
                c.session.drain();
                c.session.output().extend_from_slice(PLAIN_HTTP_ANSWER);
                self.mark_client(client);
                return true;
            }
            Err(failure) => {
                self.tls_plain = plain;
                let alert = t.stream.take_alert();
                if alert.is_empty() || !t.stream.is_handshaking() {
                    self.tls_failed(failure);
                    return false;
                }
                // A failed handshake: the alert that says why goes out as
                // is, then the connection closes (its session has read
                // nothing, so nothing else is written).
                c.transport = Transport::Plain;
                c.session.drain();
                c.session.output().extend_from_slice(&alert);
                self.tls_failed(failure);
                self.mark_client(client);
                return true;
            }
        };
        if progress.handshake_done {
            t.handshake_until = None;
            let tls = &mut self.figures.tls;
            tls.handshakes += 1;
            tls.resumed += u64::from(t.stream.resumed());
            let version = t.stream.version().unwrap_or("other");
            *tls.versions.entry(version).or_default() += 1;
            let sni: Option<Arc<str>> = t.stream.sni().map(Into::into);
            let names = t.server.names_for(sni.as_deref());
            if t.stream.alpn() == Some(b"h2") {
                c.session = super::client::h2_session(&self.cfg, &self.shared, c.peer, true);
            }
            c.session.set_tls(TlsInfo {
                version,
                sni,
                names,
            });
        }
        if !plain.is_empty() {
            c.session.on_client_data(&plain);
        }
        if progress.closed {
            // close_notify: the client's end, like a FIN.
            c.session.on_client_eof();
        }
        // (Output the session wrote during the handshake waited for it.)
        let due = t.stream.wants_write() || progress.handshake_done;
        self.tls_plain = plain;
        if due {
            self.mark_client(client);
        }
        true
    }

    /// Count a TLS failure.
    pub(super) fn tls_failed(&mut self, failure: Failure) {
        *self
            .figures
            .tls
            .failures
            .entry(failure.as_str())
            .or_default() += 1;
    }
}
