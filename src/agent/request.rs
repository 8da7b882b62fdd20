//! Reading the client: request heads become exchanges, bodies go to their
//! exchange's request bytes (or are read and dropped after an early
//! answer), bad requests are refused in order; and what of each request
//! goes upstream, when.

use bytes::Buf;

use crate::access_log::RequestLine;
use crate::codec::{self, BodyDecoder, ForwardCtx, Framing, HeadError, RequestHead};
use crate::error::ProxyError;
use crate::routes::{Action, Request, Route};
use crate::spec::BackendId;
use std::sync::Arc;

use super::exchange::{Exchange, Upload};
use super::{local, ClientAgent, ExchangeId};

/// How the client side of the stream is being read.
#[derive(Debug)]
pub(super) enum Reading {
    /// Expecting a request head.
    Head,
    /// Forwarding the body of exchange `exchange`.
    Body {
        exchange: ExchangeId,
        decoder: BodyDecoder,
        /// Body bytes (decoded) seen so far, for the size limit.
        received: u64,
    },
    /// The rest of a request body whose exchange was answered before it
    /// was read whole (an origin's early answer, an error): read and
    /// dropped, then the next request (see [`ClientAgent::is_discarding`]).
    Discard {
        decoder: BodyDecoder,
        /// Body bytes (decoded) seen so far, for the size limit.
        received: u64,
    },
    /// An upgrade request is out: nothing more is parsed until its answer
    /// says whether the connection switches protocols.
    AwaitUpgrade { exchange: ExchangeId },
    /// Switched protocols: client bytes go to exchange `exchange` as they
    /// are. `client_done`: the client half-closed (passed on upstream once
    /// its bytes are out).
    Tunnel {
        exchange: ExchangeId,
        client_done: bool,
    },
    /// No further requests will be read (close requested, error, EOF).
    Stopped,
}

/// `host` (`name:port` or `[v6]:port`) without its port.
fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return host
            .iter()
            .position(|&b| b == b']')
            .map_or(host, |end| &host[..=end]);
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// Where the routes send a request.
enum Destination {
    /// No routes are configured: the default backend.
    Default,
    /// A backend, through `route` (None: no route matched and the table
    /// falls back to it).
    Backend {
        id: BackendId,
        name: Arc<str>,
        route: Option<Arc<Route>>,
    },
    /// Answered here, as `route` says (None: no route matched and nothing
    /// to fall back to, or a Max-Forwards that ran out).
    Here(Option<Arc<Route>>),
    /// Over TLS, for a host the connection's certificate is not for: 421.
    Misdirected,
}

/// The longest `Host` value routes look at: a name of 253 bytes and a port.
const MAX_HOST_LEN: u32 = 253 + 6;

/// What one reading step leaves to do.
enum Parsed {
    /// This many bytes were used; go on with the rest.
    More(usize),
    /// This many bytes were used; wait for more input.
    Wait(usize),
    /// Everything given is used up or is not to be read.
    All,
}

impl ClientAgent {
    /// Parse what waits in `input`.
    pub(super) fn parse_input(&mut self) {
        let input = std::mem::take(&mut self.input);
        let used = self.parse(&input);
        self.input = input;
        self.input.advance(used);
    }

    /// Parse as much of `data` as the state allows; returns bytes used.
    pub(super) fn parse(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let rest = &data[used..];
            let step = match &mut self.reading {
                Reading::Stopped => Parsed::All,
                // Keep what comes until the answer to the upgrade is known.
                Reading::AwaitUpgrade { .. } => Parsed::Wait(0),
                Reading::Tunnel { exchange, .. } => {
                    let id = *exchange;
                    if let Some(ex) = self.exchange_mut(id) {
                        ex.request.bytes.extend_from_slice(rest);
                    }
                    Parsed::All
                }
                Reading::Body { .. } => self.read_body(rest),
                Reading::Discard { .. } => self.discard(rest),
                Reading::Head => self.read_head(rest),
            };
            match step {
                Parsed::More(n) => used += n,
                Parsed::Wait(n) => return used + n,
                Parsed::All => return data.len(),
            }
        }
    }

    /// A request head, if `rest` holds a whole one and the pipeline has
    /// room for it.
    fn read_head(&mut self, rest: &[u8]) -> Parsed {
        if self.exchanges.len() >= self.depth || rest.is_empty() {
            return Parsed::Wait(0);
        }
        if self.exchanges.capacity() == 0 {
            if let Some(q) = self.shared.queues.take() {
                self.exchanges = q;
            }
        }
        let (affinity_cookie, drop_field) = self.shared.affinity.get();
        let ctx = ForwardCtx {
            affinity_cookie,
            drop_field,
            ..self.ctx
        };
        let mut request = self.shared.take_bytes();
        let head = match codec::parse_request(rest, &ctx, &mut request) {
            Ok(Some(head)) => head,
            Ok(None) => {
                self.shared.give_bytes(request);
                if rest.len() <= self.ctx.limits.bytes {
                    return Parsed::Wait(0);
                }
                let too_large = HeadError {
                    status: 431,
                    reason: "request head too large",
                };
                self.refuse(ProxyError::BadRequest(too_large), None);
                return Parsed::All;
            }
            Err(e) => {
                self.shared.give_bytes(request);
                // The access log still shows what was refused.
                let line = self
                    .shared
                    .keep_request_lines
                    .get()
                    .then(|| Box::new(RequestLine::from_head(rest)));
                self.refuse(ProxyError::BadRequest(e), line);
                return Parsed::All;
            }
        };
        if self.shared.routes.borrow().is_some()
            && head.host.is_some_and(|(a, b)| b - a > MAX_HOST_LEN)
        {
            // Routes compare host names, which are at most 253 bytes.
            self.shared.give_bytes(request);
            let long = HeadError {
                status: 400,
                reason: "host name too long",
            };
            self.refuse(ProxyError::BadRequest(long), None);
            return Parsed::All;
        }
        if let Framing::Length(n) = head.framing {
            if self.max_body > 0 && n > self.max_body {
                // Known from the head: refused before anything reaches an
                // origin.
                self.shared.give_bytes(request);
                self.refuse(ProxyError::BodyTooLarge, None);
                return Parsed::All;
            }
        }
        self.admit(&head, &rest[..head.head_len], request);
        Parsed::More(head.head_len)
    }

    /// Queue the exchange for a parsed head (`raw_head` as received,
    /// `request` the head to forward) and read on as its framing says.
    fn admit(&mut self, head: &RequestHead, raw_head: &[u8], mut request: Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        self.requests += 1;
        // Closing soon (a retiring worker): this answer is the connection's
        // last.
        let keep_alive = head.keep_alive && !self.closing_soon;
        let dest = if head.answer_here {
            // Max-Forwards ran out: we are the final recipient.
            Destination::Here(None)
        } else if self.misdirected(head, &request) {
            Destination::Misdirected
        } else {
            self.route(head, &mut request)
        };
        let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
        // The client may never send a body it announced with `Expect:
        // 100-continue` (no 100 comes from here): an answer made here is
        // then the connection's last.
        let keep = keep_alive && !(has_body && head.expect_continue);
        let answer = match &dest {
            Destination::Default | Destination::Backend { .. } => None,
            Destination::Misdirected => {
                let e = ProxyError::Misdirected;
                let date = self.shared.date.get();
                Some((local::error_response(&e, keep, &date), e.status()))
            }
            Destination::Here(route) => {
                Some(self.local_answer(head, raw_head, &request, route.as_deref(), keep))
            }
        };
        let now = self.shared.now.get();
        let mut ex = Exchange::parsed(id, now, head, raw_head, request, keep_alive);
        if self.shared.keep_request_lines.get() {
            ex.account.line = Some(Box::new(RequestLine::from_head(raw_head)));
        }
        ex.account.tls = self.tls.as_ref().map(|t| (t.version, t.sni.clone()));
        match dest {
            Destination::Default | Destination::Misdirected => {}
            Destination::Backend { id, name, route } => {
                ex.backend = id;
                ex.account.backend = Some(name);
                ex.account.route = route.as_ref().map(|r| r.name.clone());
                ex.routed = route;
            }
            // (With routes configured, a request none matched is logged
            // as route `-`.)
            Destination::Here(route) => {
                ex.account.route = match route {
                    Some(r) => Some(r.name.clone()),
                    None if self.shared.routes.borrow().is_some() => Some("-".into()),
                    None => None,
                };
            }
        }
        if let Some((answer, status)) = answer {
            ex.answer_here(answer, status);
            ex.close_after = !keep;
            self.exchanges.push_back(ex);
            // A body, if any, is read and dropped (the connection goes on
            // after it) or, if it may never come, the connection ends.
            self.reading = match (has_body, keep) {
                (true, true) => Reading::Discard {
                    decoder: BodyDecoder::new(head.framing),
                    received: 0,
                },
                (false, true) => Reading::Head,
                (_, false) => {
                    self.linger |= has_body;
                    Reading::Stopped
                }
            };
            self.advance();
            return;
        }
        self.exchanges.push_back(ex);
        self.reading = if has_body {
            Reading::Body {
                exchange: id,
                decoder: BodyDecoder::new(head.framing),
                received: 0,
            }
        } else if !keep_alive {
            Reading::Stopped
        } else if head.upgrade {
            Reading::AwaitUpgrade { exchange: id }
        } else {
            Reading::Head
        };
    }

    /// Over TLS: `head` asks for a host other than the server name of the
    /// handshake, which the certificate the client got does not cover.
    fn misdirected(&self, head: &RequestHead, request: &[u8]) -> bool {
        let Some(tls) = &self.tls else {
            return false;
        };
        let (Some(sni), Some((a, b))) = (&tls.sni, head.host) else {
            return false;
        };
        let mut buf = [0u8; 256];
        let Some(host) = crate::routes::normal_host(&request[a as usize..b as usize], &mut buf)
        else {
            return true;
        };
        !host.eq_ignore_ascii_case(sni) && !crate::tls::certs::covers(&tls.names, host)
    }

    /// Where the routes send the request whose forwarded head is `request`
    /// (parsed as `head`); for a backend, the head is rewritten as its route
    /// says (path prefix, header rules).
    fn route(&self, head: &RequestHead, request: &mut Vec<u8>) -> Destination {
        let routes = self.shared.routes.borrow();
        let Some(table) = routes.as_ref() else {
            return Destination::Default;
        };
        let (t0, t1) = (head.target.0 as usize, head.target.1 as usize);
        let sni_lower = self
            .tls
            .as_ref()
            .and_then(|t| t.sni.as_deref())
            .map(str::to_ascii_lowercase);
        let found = {
            let req = Request {
                method: request.split(|&b| b == b' ').next().unwrap_or(b""),
                host: head.host.map(|(a, b)| &request[a as usize..b as usize]),
                target: &request[t0..t1],
                head: request,
                sni: sni_lower.as_deref(),
            };
            table.select(&req).cloned()
        };
        let Some(route) = found else {
            return match &table.fallback {
                Some((id, name)) => Destination::Backend {
                    id: *id,
                    name: name.clone(),
                    route: None,
                },
                None => Destination::Here(None),
            };
        };
        let Action::Forward {
            backend,
            backend_name,
            ..
        } = &route.action
        else {
            return Destination::Here(Some(route));
        };
        if let Some(target) = route.rewritten_target(&request[t0..t1]) {
            request.splice(t0..t1, target);
        }
        route.request_headers.apply(request, 0);
        Destination::Backend {
            id: *backend,
            name: backend_name.clone(),
            route: Some(route.clone()),
        }
    }

    /// The answer ringmux gives itself to the request `head` (`raw_head` as
    /// received, `request` as it would be forwarded): `route`'s redirect or
    /// fixed answer, the final recipient's answer to a Max-Forwards that
    /// ran out, or 404 when no route matched. With its status.
    fn local_answer(
        &self,
        head: &RequestHead,
        raw_head: &[u8],
        request: &[u8],
        route: Option<&Route>,
        keep: bool,
    ) -> (Vec<u8>, u16) {
        let date = self.shared.date.get();
        let Some(route) = route else {
            if head.answer_here {
                return (local::final_answer(head.method, raw_head, keep, &date), 200);
            }
            let e = ProxyError::NoRoute;
            return (local::error_response(&e, keep, &date), e.status());
        };
        match &route.action {
            Action::Redirect {
                status,
                scheme,
                host,
                path,
            } => {
                let target = &request[head.target.0 as usize..head.target.1 as usize];
                let (old_path, query) = match target.iter().position(|&b| b == b'?') {
                    Some(q) => (&target[..q], &target[q..]),
                    None => (target, &b""[..]),
                };
                let own_host = head
                    .host
                    .map(|(a, b)| &request[a as usize..b as usize])
                    .filter(|h| !h.is_empty());
                let new_scheme = scheme.as_deref().filter(|s| *s != self.ctx.proto);
                let authority = match (host.as_deref(), own_host) {
                    (Some(h), _) => Some(h.as_bytes()),
                    // The client's own host; its port does not carry over
                    // to another scheme.
                    (None, Some(h)) if new_scheme.is_some() => Some(host_without_port(h)),
                    (None, h) => h,
                };
                let mut location = Vec::with_capacity(64 + target.len());
                if let Some(h) = authority {
                    location
                        .extend_from_slice(scheme.as_deref().unwrap_or(self.ctx.proto).as_bytes());
                    location.extend_from_slice(b"://");
                    location.extend_from_slice(h);
                }
                let mut new_path = path.as_deref().map_or(old_path, str::as_bytes);
                // `//evil.example/x` would name another host.
                while new_path.starts_with(b"//") {
                    new_path = &new_path[1..];
                }
                location.extend_from_slice(new_path);
                location.extend_from_slice(query);
                (local::redirect(*status, &location, keep, &date), *status)
            }
            Action::Respond {
                status,
                content_type,
                body,
            } => {
                let head_only = head.method == codec::Method::Head;
                let answer = local::respond(*status, content_type, body, head_only, keep, &date);
                (answer, *status)
            }
            Action::Forward { .. } => unreachable!("a forwarding route is not answered here"),
        }
    }

    /// Body bytes for the exchange being read.
    fn read_body(&mut self, rest: &[u8]) -> Parsed {
        let Reading::Body {
            exchange,
            decoder,
            received,
        } = &mut self.reading
        else {
            return Parsed::Wait(0);
        };
        if rest.is_empty() {
            return Parsed::Wait(0);
        }
        let id = *exchange;
        let mut n = 0u64;
        let res = decoder.feed(rest, &mut |d| n += d.len() as u64);
        *received += n;
        let too_large = self.max_body > 0 && *received > self.max_body;
        let p = match res {
            Ok(_) if too_large => {
                self.body_failed(id, ProxyError::BodyTooLarge);
                return Parsed::All;
            }
            Ok(p) => p,
            Err(e) => {
                self.body_failed(id, ProxyError::BadRequestBody(e.reason()));
                return Parsed::All;
            }
        };
        if let Some(ex) = self.exchange_mut(id) {
            ex.request.bytes.extend_from_slice(&rest[..p.consumed]);
            if p.consumed > 0 {
                ex.body_coming();
            }
            if p.done {
                ex.upload = Upload::Done;
            }
        }
        if !p.done {
            return Parsed::Wait(p.consumed);
        }
        self.reading = if self.draining {
            Reading::Stopped
        } else {
            Reading::Head
        };
        Parsed::More(p.consumed)
    }

    /// Body bytes of an answered exchange, dropped.
    fn discard(&mut self, rest: &[u8]) -> Parsed {
        let Reading::Discard { decoder, received } = &mut self.reading else {
            return Parsed::Wait(0);
        };
        if rest.is_empty() {
            return Parsed::Wait(0);
        }
        let mut n = 0u64;
        let res = decoder.feed(rest, &mut |d| n += d.len() as u64);
        *received += n;
        let too_large = self.max_body > 0 && *received > self.max_body;
        match res {
            Ok(p) if !too_large => {
                if !p.done {
                    return Parsed::Wait(p.consumed);
                }
                // The connection goes on where the body ends.
                self.reading = Reading::Head;
                if self.draining {
                    // (What follows it is not read: `input` is out while
                    // parsing.)
                    self.linger |= p.consumed < rest.len();
                    self.stop_reading();
                    return Parsed::All;
                }
                Parsed::More(p.consumed)
            }
            // Too much, or no longer framed: nothing after it can be found;
            // the connection ends.
            _ => {
                self.stop_reading();
                Parsed::All
            }
        }
    }

    /// A request body went wrong mid-stream (bad chunk syntax, too large).
    /// Part of it may be with an origin already, so both sides are cut:
    /// the client gets `err` if no response has started, then the close.
    fn body_failed(&mut self, id: ExchangeId, err: ProxyError) {
        self.stop_reading();
        if let Some(ex) = self.exchange_mut(id) {
            ex.close_after = true;
            ex.close_upstream = true;
        }
        self.fail(id, err);
    }

    /// Read nothing more: the connection closes once what is owed has
    /// gone out. If that cuts the client's stream short, it lingers.
    pub(super) fn stop_reading(&mut self) {
        self.linger |= !self.input.is_empty()
            || matches!(
                self.reading,
                Reading::Body { .. } | Reading::Discard { .. } | Reading::AwaitUpgrade { .. }
            );
        self.reading = Reading::Stopped;
        self.close_when_flushed = true;
        self.input.clear();
    }

    /// Exchange `id` was answered before its body was read whole. If the
    /// body's framing still holds and the client is known to be sending
    /// it, the rest is read and dropped and the connection goes on;
    /// otherwise the connection ends there (lingering). Either way none of
    /// it goes upstream.
    pub(super) fn body_left_unread(&mut self, id: ExchangeId) {
        let goes_on = self.may_discard(id);
        if let Some(ex) = self.exchange_mut(id) {
            ex.request.forget();
            ex.close_after |= !goes_on;
        }
        let reading = std::mem::replace(&mut self.reading, Reading::Stopped);
        match reading {
            Reading::Body {
                decoder, received, ..
            } if goes_on => self.reading = Reading::Discard { decoder, received },
            other => {
                self.reading = other;
                self.stop_reading();
            }
        }
    }

    /// Whether the rest of `id`'s body can be read and dropped with the
    /// connection kept: its body is the one being read, the client is not
    /// leaving after it, and the client is sending it (an `Expect:
    /// 100-continue` request that got no 100 and sent nothing may never
    /// send it, and its next request would be taken for body).
    pub(super) fn may_discard(&self, id: ExchangeId) -> bool {
        let reading_it = matches!(self.reading, Reading::Body { exchange, .. } if exchange == id);
        reading_it
            && self
                .exchange(id)
                .is_some_and(|e| e.keep_alive && !e.close_after && !e.body_withheld())
    }

    /// Answer a bad request in order (an exchange that is already
    /// complete, keeping `line` for the access log), then close.
    pub(super) fn refuse(&mut self, err: ProxyError, line: Option<Box<RequestLine>>) {
        let id = self.next_id;
        self.next_id += 1;
        let answer = local::error_response(&err, false, &self.shared.date.get());
        let mut ex = Exchange::answered(id, self.shared.now.get(), answer, err.status());
        ex.account.line = line;
        self.exchanges.push_back(ex);
        // What follows a refused head (its body, more requests) is not read.
        self.linger = true;
        self.reading = Reading::Stopped;
        self.input.clear();
        self.advance();
    }

    /// Whether the whole request of `id` has been read from the client.
    #[cfg(test)]
    pub fn request_done(&self, id: ExchangeId) -> bool {
        self.exchange(id).is_none_or(Exchange::request_done)
    }

    /// The request bytes of `id` not handed out yet (for tests).
    #[cfg(test)]
    pub(super) fn peek_request(&self, id: ExchangeId) -> &[u8] {
        self.exchange(id).map_or(&[], |ex| ex.request.unsent())
    }
}
