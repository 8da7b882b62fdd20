//! Session affinity in the dispatch core (see `crate::affinity` for the
//! cookie): where a session's request goes, and what its response and the
//! request carry back.
//!
//! - A valid cookie names the session's home. If the home is up and warm
//!   (or no upstream is warm), the request goes there and nowhere else (it
//!   waits in the home's queue if it must). If the home is cold, warming or
//!   down, the policy serves it from a warm peer at once (the home warms up
//!   meanwhile), and the cookie is rewritten to record that peer while
//!   still naming the home; while that peer stays up and warm, the
//!   session's later requests go to it too.
//! - Back home, with a peer recorded, the request carries the peer's name
//!   in `--session-peer-header` (if set) so the application can fetch the
//!   session's state from it, and the cookie is rewritten without the peer.
//! - A home this proxy does not know (removed by a reload, or another
//!   proxy's), or no valid cookie at all: the policy decides, and the
//!   cookie is set to name the upstream that served.

use super::core::{ClientId, Core};
use crate::affinity::{upstream_key, Ticket};
use crate::session::ExchangeId;
use crate::spec::UpstreamId;

impl Core {
    /// The session ticket of `client`'s exchange `ex`, if affinity is on
    /// and its cookie is valid.
    fn ticket(&self, client: ClientId, ex: ExchangeId) -> Option<Ticket> {
        let aff = self.cfg.affinity.as_ref()?;
        let value = self.clients.get(client)?.session.affinity(ex)?;
        aff.read(value, self.date_secs)
    }

    /// The upstream with cookie key `key`, if this worker has it (and a
    /// reload did not remove it).
    fn upstream_by_key(&self, pool: usize, key: u64) -> Option<UpstreamId> {
        self.pools[pool]
            .upstreams()
            .iter()
            .find(|u| !u.removed && upstream_key(&u.spec.name) == key)
            .map(|u| u.spec.id)
    }

    /// Where the session's request must go and nowhere else: its home when
    /// the home is known, up, and warm (or nothing is); else the peer the
    /// cookie records, while that peer is up and warm (so a session stays
    /// on one peer while its home warms up); else nowhere in particular.
    pub(super) fn session_home(
        &self,
        client: ClientId,
        ex: ExchangeId,
        pool: usize,
    ) -> Option<UpstreamId> {
        let t = self.ticket(client, ex)?;
        let home = self.upstream_by_key(pool, t.home)?;
        let u = self.pools[pool].upstream(home)?;
        let ready = u.warm.is_warm() || !self.pools[pool].warm_peer_up(self.now);
        if u.is_up(self.now) && ready {
            return Some(home);
        }
        let peer = self.upstream_by_key(pool, t.peer?)?;
        let p = self.pools[pool].upstream(peer)?;
        (p.is_up(self.now) && p.warm.is_warm()).then_some(peer)
    }

    /// The session's home, when it is known, up and cold (its requests go
    /// to a peer meanwhile, and the home is to warm up).
    pub(super) fn cold_home(
        &self,
        client: ClientId,
        ex: ExchangeId,
        pool: usize,
    ) -> Option<UpstreamId> {
        let t = self.ticket(client, ex)?;
        let home = self.upstream_by_key(pool, t.home)?;
        let u = self.pools[pool].upstream(home)?;
        (u.is_up(self.now) && !u.warm.is_warm()).then_some(home)
    }

    /// `client`'s exchange `ex` was placed on `upstream` (of pool `pool`):
    /// the cookie its response sets, and the hand-off field its request
    /// carries, if any.
    pub(super) fn settle_session(
        &mut self,
        client: ClientId,
        ex: ExchangeId,
        pool: usize,
        upstream: UpstreamId,
    ) {
        let Some(aff) = self.cfg.affinity.clone() else {
            return;
        };
        let Some(serving) = self.pools[pool]
            .upstream(upstream)
            .map(|u| upstream_key(&u.spec.name))
        else {
            return;
        };
        let now = self.date_secs;
        let ticket = self.ticket(client, ex);
        let mut hand_off = None;
        let renew = |t: &Ticket| t.expires.saturating_sub(now) < aff.max_age.as_secs() / 2;
        let cookie = match ticket {
            // A home we know: it stays the home.
            Some(t) if self.upstream_by_key(pool, t.home).is_some() => {
                if t.home == serving {
                    // Home again: say where the session was meanwhile, once
                    // per connection and ticket.
                    let told = self
                        .clients
                        .get(client)
                        .is_some_and(|c| c.handed_off == Some(t));
                    if let (Some(peer), Some(header), false) = (t.peer, aff.peer_header, told) {
                        let name = self.pools[pool]
                            .upstreams()
                            .iter()
                            .find(|u| upstream_key(&u.spec.name) == peer)
                            .map(|u| u.spec.name.clone());
                        if let Some(name) = name {
                            hand_off = Some(format!("{header}: {name}\r\n").into_bytes());
                            if let Some(c) = self.clients.get_mut(client) {
                                c.handed_off = Some(t);
                            }
                        }
                    }
                    (t.peer.is_some() || renew(&t)).then(|| aff.ticket(t.home, None, now))
                } else {
                    // A peer serves while home warms up (or is down).
                    (t.peer != Some(serving) || renew(&t))
                        .then(|| aff.ticket(t.home, Some(serving), now))
                }
            }
            // No cookie, a bad one, or a home gone for good: the session
            // lives where it is served now.
            _ => Some(aff.ticket(serving, None, now)),
        };
        if let Some(c) = self.clients.get_mut(client) {
            c.session.set_extra_head(ex, hand_off);
            c.session.set_cookie(ex, cookie.map(|t| aff.set_cookie(&t)));
        }
    }
}
