//! The HTTP/1.1 session: [`ClientAgent`] as the worker's core drives it
//! (the [`ClientSession`] methods), over the machinery of `request.rs`
//! (reading the client) and `response.rs` (framing responses in order).

use std::time::Instant;

use bytes::BytesMut;

use crate::codec::BodyDecoder;

use crate::access_log::{Finished, UpstreamNote};
use crate::error::ProxyError;
use crate::session::{ClientSession, ExchangeId, FailOutcome, Placing, TunnelEnds, UpstreamFate};

use super::exchange::{Attempt, Exchange, Progress};
use super::request::Reading;
use super::ClientAgent;

impl ClientSession for ClientAgent {
    fn on_client_data(&mut self, data: &[u8]) {
        if matches!(self.reading, Reading::Stopped) {
            return; // after a close or an error, nothing more is read
        }
        if self.input.is_empty() {
            // Common case: parse straight from the receive buffer and keep
            // only what is left over.
            let used = self.parse(data);
            self.input.extend_from_slice(&data[used..]);
        } else {
            self.input.extend_from_slice(data);
            self.parse_input();
        }
    }

    fn on_client_eof(&mut self) {
        self.peer_closed = true;
        if let Reading::Tunnel { client_done, .. } = &mut self.reading {
            // Half-close: the origin may still have bytes for the client.
            *client_done = true;
            return;
        }
        if let Reading::Body { exchange, .. } = self.reading {
            // The body was cut short: the origin can never see a complete
            // request, so nothing more useful can happen on this client.
            if let Some(ex) = self.exchange_mut(exchange) {
                ex.close_after = true;
            }
            self.close_when_flushed = true;
        }
        self.reading = Reading::Stopped;
        if self.exchanges.is_empty() {
            // Nothing owed: the client closed an idle keep-alive connection.
            self.close_when_flushed = true;
        }
    }

    fn may_read_client(&self) -> bool {
        match &self.reading {
            Reading::Stopped => false,
            Reading::Head => {
                self.exchanges.len() < self.depth && self.input.len() <= self.ctx.limits.bytes
            }
            Reading::Discard { .. } => true,
            Reading::Body { exchange, .. } | Reading::Tunnel { exchange, .. } => self
                .exchange(*exchange)
                .is_none_or(|e| e.request.pending() < self.buffer),
            Reading::AwaitUpgrade { .. } => self.input.len() <= self.ctx.limits.bytes,
        }
    }

    fn next_ready(&mut self) -> Option<ExchangeId> {
        let mut all_answered_before = true;
        for ex in self.exchanges.iter_mut() {
            let answered = matches!(ex.progress, Progress::Answered);
            if matches!(ex.progress, Progress::Queued) {
                if ex.is_parallel() || all_answered_before {
                    ex.progress = Progress::placed();
                    return Some(ex.id);
                }
                return None;
            }
            if !ex.is_parallel() && !answered {
                return None; // a barrier in progress holds back what follows
            }
            all_answered_before &= answered;
        }
        None
    }

    fn placing(&self, id: ExchangeId) -> Option<Placing> {
        self.exchange(id).map(Exchange::placing)
    }

    fn affinity(&self, id: ExchangeId) -> Option<&[u8]> {
        self.exchange(id)?.affinity.as_deref()
    }

    fn set_extra_head(&mut self, id: ExchangeId, fields: Option<Vec<u8>>) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.request.extra_head = fields.map(Vec::into_boxed_slice);
        }
    }

    fn set_cookie(&mut self, id: ExchangeId, field: Option<Vec<u8>>) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.set_cookie = field.map(Vec::into_boxed_slice);
        }
    }

    fn placed_on(&mut self, id: ExchangeId, upstream: u32, addr: std::net::SocketAddr) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.account.upstream = Some(UpstreamNote {
                id: upstream,
                addr,
                ttfb_us: None,
            });
        }
    }

    fn pending_request(&self, id: ExchangeId) -> usize {
        self.exchange(id).map_or(0, |ex| ex.request.pending())
    }

    fn hand_request(&mut self, id: ExchangeId, out: &mut Vec<u8>, host: &[u8]) -> usize {
        let Some(ex) = self.exchange_mut(id) else {
            return 0;
        };
        // A safe request is kept whole for one retry until its response
        // starts, and so is a small one whose body is all here (an HTTP/2
        // origin may refuse it unprocessed); any other is never replayed,
        // and freed as it goes.
        let keep = !ex.progress.started() && (ex.is_parallel() || ex.small_and_whole());
        ex.request.hand(out, host, keep)
    }

    fn detach(&mut self, id: ExchangeId) -> bool {
        let Some(ex) = self.exchange_mut(id) else {
            return false;
        };
        let untouched = matches!(
            &ex.progress,
            Progress::Waiting { partial, interim: false } if partial.is_empty()
        );
        if !untouched || !ex.is_parallel() {
            return false;
        }
        ex.progress = Progress::Queued;
        ex.request.rewind();
        if ex.attempt == Attempt::First {
            ex.attempt = Attempt::Detached;
        }
        true
    }

    fn note_upstream(&mut self, id: ExchangeId, ttfb: std::time::Duration) {
        if let Some(note) = self
            .exchange_mut(id)
            .and_then(|ex| ex.account.upstream.as_mut())
        {
            note.ttfb_us = Some(ttfb.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    fn on_response_data(&mut self, id: ExchangeId, data: &[u8]) -> (UpstreamFate, usize) {
        self.feed_response(id, data)
    }

    fn verbatim_body(&self, id: ExchangeId) -> u64 {
        match self.exchanges.front() {
            Some(ex) if ex.id == id => match &ex.progress {
                Progress::Body {
                    decoder: BodyDecoder::Length { remaining },
                    dechunk: false,
                } => *remaining,
                _ => 0,
            },
            _ => 0,
        }
    }

    fn take_verbatim(&mut self, id: ExchangeId, n: usize) -> UpstreamFate {
        let Some(ex) = self.exchanges.front_mut().filter(|e| e.id == id) else {
            return UpstreamFate::Close;
        };
        let Progress::Body {
            decoder: BodyDecoder::Length { remaining },
            dechunk: false,
        } = &mut ex.progress
        else {
            return UpstreamFate::Close;
        };
        assert!(
            n as u64 <= *remaining,
            "more verbatim bytes than the body has"
        );
        *remaining -= n as u64;
        ex.account.bytes += n as u64;
        if *remaining == 0 {
            self.complete(0)
        } else {
            UpstreamFate::Busy
        }
    }

    fn upstream_room(&self, id: ExchangeId, client_unsent: usize) -> usize {
        match self.index_of(id) {
            Some(0) => self.buffer.saturating_sub(self.out.len() + client_unsent),
            Some(i) => self.buffer.saturating_sub(self.exchanges[i].held.len()),
            None => self.buffer,
        }
    }

    fn take_upstream_idle_hint(&mut self) -> Option<u32> {
        self.idle_hint.take()
    }

    fn on_upstream_eof(&mut self, id: ExchangeId) -> FailOutcome {
        let Some(idx) = self.index_of(id) else {
            return FailOutcome::Answered;
        };
        let ex = &mut self.exchanges[idx];
        match &mut ex.progress {
            Progress::Tunnel { upstream_done } => {
                // A half-close: the client may still be sending.
                *upstream_done = true;
                FailOutcome::Answered
            }
            Progress::Body {
                decoder: BodyDecoder::Close,
                ..
            } => {
                ex.close_after = true;
                self.complete(idx);
                FailOutcome::Answered
            }
            _ => self.fail(id, ProxyError::ClosedBeforeResponse),
        }
    }

    fn on_upstream_error(&mut self, id: ExchangeId, err: ProxyError) -> FailOutcome {
        self.fail(id, err)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    fn wants_close(&self) -> bool {
        self.close_when_flushed
    }

    fn lingers(&self) -> bool {
        self.linger && !self.peer_closed
    }

    fn is_tunnel(&self) -> bool {
        matches!(self.reading, Reading::Tunnel { .. })
    }

    fn tunnel(&self) -> Option<TunnelEnds> {
        let Reading::Tunnel {
            exchange,
            client_done,
        } = self.reading
        else {
            return None;
        };
        let upstream_done = matches!(
            self.exchange(exchange).map(|e| &e.progress),
            Some(Progress::Tunnel {
                upstream_done: true
            })
        );
        let owed_nothing_else = self
            .exchanges
            .front()
            .is_some_and(|e| e.id == exchange && e.held.is_empty());
        Some(TunnelEnds {
            exchange,
            client_done,
            upstream_done,
            owed_nothing_else,
        })
    }

    fn drain(&mut self) {
        self.draining = true;
        match self.reading {
            Reading::Head | Reading::AwaitUpgrade { .. } => {
                self.linger |= !self.input.is_empty();
                self.reading = Reading::Stopped;
                self.input.clear();
            }
            // A body being dropped: the answer is out and nothing waits for
            // the rest, so the connection ends now, lingering.
            Reading::Discard { .. } => {
                self.linger = true;
                self.reading = Reading::Stopped;
            }
            Reading::Body { .. } | Reading::Tunnel { .. } | Reading::Stopped => {}
        }
        match self.exchanges.back_mut() {
            Some(last) => last.close_after = true,
            None => self.close_when_flushed = true,
        }
        if self
            .exchanges
            .iter()
            .all(|e| matches!(e.progress, Progress::Answered))
        {
            self.advance();
        }
    }

    fn close_soon(&mut self) {
        self.closing_soon = true;
        // What is in progress ends with a close, unless its answer went out
        // saying keep-alive already: then the next request (or the idle
        // grace) ends the connection.
        if self.exchanges.back().is_some_and(|e| !e.progress.started()) {
            self.drain();
        }
    }

    fn on_header_timeout(&mut self) {
        self.refuse(ProxyError::HeaderTimeout, None);
    }

    fn abandon(&mut self, err: ProxyError) {
        self.stop_reading();
        let Some(first) = self
            .exchanges
            .iter()
            .find(|e| !matches!(e.progress, Progress::Answered))
        else {
            return;
        };
        let id = first.id;
        for ex in self.exchanges.iter_mut() {
            ex.close_after = true;
            if ex.id == id {
                ex.attempt = Attempt::Retried; // no attempt after a deadline
            }
        }
        self.fail(id, err);
    }

    fn cut_short(&mut self) {
        let now = self.shared.now.get();
        while let Some(mut ex) = self.exchanges.pop_front() {
            self.finished.push(ex.finish(now, true));
            self.recycle(ex);
        }
    }

    fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.input.is_empty()
            && self.out.is_empty()
            && !self.close_when_flushed
            && !self.is_discarding()
    }

    fn pending(&self) -> usize {
        self.exchanges.len()
    }

    fn has_partial_head(&self) -> bool {
        matches!(self.reading, Reading::Head) && !self.input.is_empty()
    }

    fn is_discarding(&self) -> bool {
        matches!(self.reading, Reading::Discard { .. })
    }

    fn any_request(&self) -> bool {
        self.next_id > 0
    }

    fn busy_since(&self) -> Option<Instant> {
        self.exchanges.front().map(Exchange::began)
    }

    fn requests(&self) -> u64 {
        self.requests
    }

    fn set_tls(&mut self, tls: crate::session::TlsInfo) {
        self.tls = Some(tls);
    }

    fn set_client_addr(&mut self, addr: std::net::IpAddr) {
        self.ctx.client = addr;
    }

    fn set_requests(&mut self, n: u64) {
        self.requests = n;
    }

    fn shrink_idle(&mut self, keep: usize) {
        if self.out.is_empty() && self.out.capacity() > keep {
            self.shared.give_bytes(std::mem::take(&mut self.out));
        }
        if self.input.is_empty() && self.input.capacity() > keep {
            self.input = BytesMut::new();
        }
        if keep == 0 && self.exchanges.is_empty() && self.exchanges.capacity() > 0 {
            self.shared.queues.give(std::mem::take(&mut self.exchanges));
        }
    }

    fn drain_finished(&mut self, f: &mut dyn FnMut(Finished)) {
        for done in self.finished.drain(..) {
            f(done);
        }
    }
}
