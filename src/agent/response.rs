//! Responses: each upstream's bytes framed into the client's output in
//! request order (or held until their turn), failures turned into retries
//! or error answers, and what the upstream connection is good for after.

use crate::codec::{self, BodyDecoder, ResponseCtx, MAX_HEAD_BYTES};
use crate::error::ProxyError;

use super::exchange::{Progress, Upload};
use super::request::Reading;
use super::{local, ClientAgent};
use crate::session::{ExchangeId, FailOutcome, UpstreamFate};

/// What one response parsing step leaves to do.
enum Step {
    /// Stop with this verdict on the upstream connection, having used this
    /// many bytes of the step's input.
    Fate(UpstreamFate, usize),
    /// This many bytes were used; go on with the rest.
    Rest(usize),
}

impl Step {
    /// `used` of `len` bytes went into a head: go on if more are left.
    fn after_head(used: usize, len: usize) -> Step {
        if used == len {
            Step::Fate(UpstreamFate::Busy, used)
        } else {
            Step::Rest(used)
        }
    }
}

impl ClientAgent {
    /// The bytes of `data` that belong to `id`'s response, framed into
    /// the output (see [`ClientSession::on_response_data`]).
    pub(super) fn feed_response(&mut self, id: ExchangeId, data: &[u8]) -> (UpstreamFate, usize) {
        let Some(idx) = self.index_of(id) else {
            return (UpstreamFate::Close, data.len());
        };
        if self.out.capacity() == 0 {
            self.out = self.shared.take_bytes();
        }
        let mut used = 0;
        loop {
            let rest = &data[used..];
            let step = match self.exchanges[idx].progress {
                Progress::Waiting { .. } => self.head_step(idx, rest),
                Progress::Body { .. } => self.body_step(idx, rest),
                Progress::Tunnel { .. } => self.tunnel_step(idx, rest),
                // A response this exchange already finished (or never
                // asked for): nothing here is its.
                Progress::Queued | Progress::Answered => Step::Fate(UpstreamFate::Close, 0),
            };
            match step {
                Step::Fate(fate, n) => return (fate, used + n),
                Step::Rest(n) => used += n,
            }
        }
    }

    /// Bytes of exchange `idx`'s response head (or an informational one).
    fn head_step(&mut self, idx: usize, data: &[u8]) -> Step {
        let ex = &mut self.exchanges[idx];
        // An answer to an `Expect: 100-continue` request that came before
        // any of its body, with no 100: the client may never send that
        // body, and cannot be read past it, so the answer says this is the
        // connection's last.
        let unsure_body = ex.body_withheld();
        let ctx = ResponseCtx {
            request_method: ex.method,
            client_minor_version: ex.minor_version,
            client_keep_alive: ex.keep_alive && !ex.close_after && !unsure_body,
            upgrade: ex.upgrade,
            via: self.ctx.via,
        };
        let dest = if idx == 0 {
            &mut self.out
        } else {
            &mut ex.held
        };
        let Progress::Waiting { partial, interim } = &mut ex.progress else {
            return Step::Fate(UpstreamFate::Close, 0);
        };
        let direct = partial.is_empty();
        let before = partial.len();
        let src: &[u8] = if direct {
            data
        } else {
            partial.extend_from_slice(data);
            partial
        };
        let start = dest.len();
        let head = match codec::parse_response(src, &ctx, dest) {
            Ok(Some(head)) => head,
            Ok(None) if src.len() > MAX_HEAD_BYTES => {
                let fate = self.fail_bad_response(idx, "response head too large");
                return Step::Fate(fate, data.len());
            }
            Ok(None) => {
                if direct {
                    partial.extend_from_slice(data);
                }
                return Step::Fate(UpstreamFate::Busy, data.len());
            }
            Err(e) => {
                dest.truncate(start);
                return Step::Fate(self.fail_bad_response(idx, e.reason), data.len());
            }
        };
        // The head began in earlier input: only its tail is in `data`.
        let used = head.head_len - before;
        partial.clear();
        if let (false, Some(route)) = (head.informational, &ex.routed) {
            route.response_headers.apply(dest, start);
        }
        if let (false, true, Some(hsts)) = (
            head.informational,
            self.tls.is_some(),
            self.shared.hsts.borrow().as_ref(),
        ) {
            hsts.apply(dest, start);
        }
        if head.informational {
            *interim = true;
            ex.account.bytes += (dest.len() - start) as u64;
            if head.status == 100 {
                // Told to go on, the client sends its body.
                ex.body_coming();
            }
            return Step::Rest(used);
        }
        if let Some(field) = ex.set_cookie.take() {
            // Before the blank line the codec ended the head with.
            let end = dest.len() - 2;
            dest.splice(end..end, field.iter().copied());
        }
        ex.account.bytes += (dest.len() - start) as u64;
        ex.account.status = head.status;
        ex.close_after |= unsure_body;
        if head.keep_alive_timeout.is_some() {
            self.idle_hint = head.keep_alive_timeout;
        }
        if head.tunnel {
            ex.progress = Progress::Tunnel {
                upstream_done: false,
            };
            ex.close_upstream = true;
            ex.close_after = true;
            // Anything the client sent after its request is already the new
            // protocol's.
            let early = std::mem::take(&mut self.input);
            ex.request.bytes.extend_from_slice(&early);
            ex.upload = Upload::Coming;
            // A FIN that came while the upgrade was pending is passed on
            // like one that comes later.
            self.reading = Reading::Tunnel {
                exchange: ex.id,
                client_done: self.peer_closed,
            };
            return Step::after_head(used, data.len());
        }
        ex.close_after |= !head.client_keep_alive;
        ex.close_upstream |= !head.upstream_reusable;
        if ex.request.whole_kept() {
            // Kept for a retry that can no longer come (nothing is left to
            // hand: an upload still coming is not touched).
            ex.request.forget();
        }
        let decoder = BodyDecoder::new(head.framing);
        if decoder.is_done() {
            return Step::Fate(self.complete(idx), used);
        }
        ex.progress = Progress::Body {
            decoder,
            dechunk: head.dechunk,
        };
        Step::after_head(used, data.len())
    }

    /// Bytes of exchange `idx`'s response body.
    fn body_step(&mut self, idx: usize, data: &[u8]) -> Step {
        let ex = &mut self.exchanges[idx];
        let dest = if idx == 0 {
            &mut self.out
        } else {
            &mut ex.held
        };
        let Progress::Body { decoder, dechunk } = &mut ex.progress else {
            return Step::Fate(UpstreamFate::Close, 0);
        };
        let start = dest.len();
        let res = if *dechunk {
            decoder.feed(data, &mut |d| dest.extend_from_slice(d))
        } else {
            decoder.feed(data, &mut |_| {})
        };
        let Ok(p) = res else {
            // Mid-body: the client already has part of it, so the only
            // honest signal left is closing.
            ex.close_after = true;
            ex.progress = Progress::Answered;
            self.advance();
            return Step::Fate(UpstreamFate::Close, data.len());
        };
        if !*dechunk {
            dest.extend_from_slice(&data[..p.consumed]);
        }
        ex.account.bytes += (dest.len() - start) as u64;
        if p.done {
            Step::Fate(self.complete(idx), p.consumed)
        } else {
            Step::Fate(UpstreamFate::Busy, p.consumed)
        }
    }

    /// Bytes from the far end of a tunnel: all the client's.
    fn tunnel_step(&mut self, idx: usize, data: &[u8]) -> Step {
        let ex = &mut self.exchanges[idx];
        let dest = if idx == 0 {
            &mut self.out
        } else {
            &mut ex.held
        };
        dest.extend_from_slice(data);
        ex.account.bytes += data.len() as u64;
        Step::Fate(UpstreamFate::Busy, data.len())
    }
    /// Exchange `id` failed with `err`: a retry if it may have one, else
    /// an error answer (or the cut, once its response started).
    pub(super) fn fail(&mut self, id: ExchangeId, err: ProxyError) -> FailOutcome {
        let Some(idx) = self.index_of(id) else {
            return FailOutcome::Answered;
        };
        let discardable = self.may_discard(id);
        let ex = &mut self.exchanges[idx];
        if matches!(ex.progress, Progress::Answered) {
            return FailOutcome::Answered;
        }
        if ex.may_retry(err.retry()) {
            let partial = ex.retry();
            self.shared.give_bytes(partial);
            return FailOutcome::Retry;
        }
        if ex.progress.started() {
            // Part of the response is with the client already; the only
            // honest signal left is to cut the connection.
            ex.close_after = true;
        } else {
            // An unread body is dropped and the connection goes on where
            // its framing allows (see `body_left_unread`).
            let keep_alive = if ex.request_done() {
                ex.keep_alive && !ex.close_after
            } else {
                discardable
            };
            let answer = local::error_response(&err, keep_alive, &self.shared.date.get());
            let dest = if idx == 0 {
                &mut self.out
            } else {
                &mut ex.held
            };
            dest.extend_from_slice(&answer);
            ex.account.status = err.status();
            ex.account.bytes += answer.len() as u64;
            ex.close_after |= !keep_alive;
        }
        self.answered(idx);
        FailOutcome::Answered
    }

    fn fail_bad_response(&mut self, idx: usize, reason: &'static str) -> UpstreamFate {
        let id = self.exchanges[idx].id;
        self.fail(id, ProxyError::BadResponse(reason));
        UpstreamFate::Close
    }

    /// Exchange `idx`'s response is complete; what becomes of the upstream
    /// connection it came on.
    pub(super) fn complete(&mut self, idx: usize) -> UpstreamFate {
        let ex = &mut self.exchanges[idx];
        if !ex.request_done() || !ex.request.all_handed() {
            // The origin answered before the whole request reached it (an
            // early 413, nginx's `return`). It never gets the rest: it
            // would read the next request on the connection as body, so
            // the connection cannot be reused.
            ex.close_upstream = true;
            ex.request.forget();
        }
        let fate = if ex.close_upstream {
            UpstreamFate::Close
        } else {
            UpstreamFate::Reuse
        };
        self.answered(idx);
        fate
    }

    /// Exchange `idx` has its whole answer: a body the client is still
    /// sending is dropped where the connection can go on past it (see
    /// `body_left_unread`), and what is in order goes out.
    fn answered(&mut self, idx: usize) {
        let ex = &mut self.exchanges[idx];
        let partial = ex.answer();
        let (id, request_done) = (ex.id, ex.request_done());
        self.shared.give_bytes(partial);
        if !request_done {
            self.body_left_unread(id);
        }
        self.advance();
    }

    /// Deliver every answered exchange at the front, and the held bytes of
    /// the next one.
    pub(super) fn advance(&mut self) {
        while let Some(front) = self.exchanges.front_mut() {
            if !front.held.is_empty() {
                if self.out.is_empty() {
                    std::mem::swap(&mut self.out, &mut front.held);
                } else {
                    self.out.extend_from_slice(&front.held);
                    front.held.clear();
                }
            }
            if !matches!(front.progress, Progress::Answered) {
                break;
            }
            let mut done = self.exchanges.pop_front().expect("front exists");
            let close_after = done.close_after;
            self.finished
                .push(done.finish(self.shared.now.get(), false));
            self.recycle(done);
            if close_after {
                self.stop_reading();
                break;
            }
        }
        if self.peer_closed && self.exchanges.is_empty() {
            self.close_when_flushed = true;
        }
        // The upgrade was answered without switching: back to requests.
        if let Reading::AwaitUpgrade { exchange } = self.reading {
            if self
                .exchange(exchange)
                .is_none_or(|e| matches!(e.progress, Progress::Answered))
            {
                self.reading = Reading::Head;
            }
        }
        // Room may have opened up for requests parsed-but-not-read.
        if matches!(self.reading, Reading::Head) && !self.input.is_empty() {
            self.parse_input();
        }
    }
}
