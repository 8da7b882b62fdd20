use super::*;
use warmth::Warmth;

fn spec(port: u16, weight: u32, max_conns: usize) -> UpstreamSpec {
    let mut s = UpstreamSpec::plain(format!("u{port}"), ([127, 0, 0, 1], port).into());
    s.id = UpstreamId(u32::from(port));
    s.weight = weight;
    s.max_conns = max_conns;
    s
}

fn settings() -> PoolSettings {
    PoolSettings {
        pool_size: 2,
        max_connecting: 4,
        idle_reuse: IdleReuse::Lifo,
        ..PoolSettings::default()
    }
}

const U1: UpstreamId = UpstreamId(1);

fn pool(specs: &[UpstreamSpec]) -> Pool {
    Pool::new(
        specs,
        settings(),
        Box::new(wrr::WeightedRoundRobin::default()),
    )
}

fn place(p: &mut Pool, now: Instant) -> Placement {
    p.place(RequestKey::default(), now, false, None)
}

/// Every upstream warm (as after their first connections).
fn warm_all(p: &mut Pool, now: Instant) {
    for u in &mut p.upstreams {
        u.warm.on_connected(now);
    }
}

/// Connect, then the first answer: a proven active connection.
fn open_one(p: &mut Pool, now: Instant) {
    assert!(matches!(place(p, now), Placement::Connect { .. }));
    p.connected(U1, now);
    p.proven(U1);
}

#[test]
fn reuses_idle_from_the_next_turn_on_once_the_quarantine_passed() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let now = Instant::now();
    open_one(&mut p, now);
    assert_eq!(p.release(U1, 7, true, now), Release::Keep);
    let later = now + QUARANTINE;
    assert_eq!(p.next_quarantine_end(now), Some(later));
    assert_eq!(
        place(&mut p, later),
        Placement::Connect { upstream: U1 },
        "not in the turn it was released in"
    );
    p.connect_abandoned(U1);
    p.begin_turn();
    assert_eq!(
        place(&mut p, now),
        Placement::Connect { upstream: U1 },
        "nor before the quarantine passed"
    );
    p.connect_abandoned(U1);
    assert_eq!(
        place(&mut p, later),
        Placement::Reuse {
            upstream: U1,
            conn: 7
        }
    );
    assert_eq!(p.upstreams()[0].active, 1);
    assert_eq!(p.next_quarantine_end(later), None);
}

#[test]
fn a_retry_evicts_an_idle_connection_when_idle_ones_fill_the_limit() {
    let mut p = pool(&[spec(1, 1, 2)]);
    let now = Instant::now();
    open_one(&mut p, now);
    open_one(&mut p, now);
    p.release(U1, 1, true, now);
    p.release(U1, 2, true, now);
    p.begin_turn();
    let later = now + QUARANTINE;
    assert_eq!(
        p.place(RequestKey::default(), later, true, None),
        Placement::ConnectEvicting {
            upstream: U1,
            evict: 1
        },
        "the one idle the longest goes"
    );
    assert_eq!(p.upstreams()[0].open(), 2);
}

#[test]
fn idle_beyond_pool_size_only_lingers() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let now = Instant::now();
    for _ in 0..3 {
        open_one(&mut p, now);
    }
    assert_eq!(p.release(U1, 1, true, now), Release::Keep);
    assert_eq!(p.release(U1, 2, true, now), Release::Keep);
    assert_eq!(
        p.release(U1, 3, true, now),
        Release::Linger,
        "pool size is 2"
    );
    p.begin_turn();
    // The lingering one is on top, so a burst reuses it first.
    assert_eq!(
        place(&mut p, now + QUARANTINE),
        Placement::Reuse {
            upstream: U1,
            conn: 3
        }
    );
}

#[test]
fn the_newest_connection_old_enough_is_reused() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let now = Instant::now();
    open_one(&mut p, now);
    open_one(&mut p, now);
    p.release(U1, 1, true, now);
    p.begin_turn();
    p.release(U1, 2, true, now);
    assert_eq!(
        place(&mut p, now + QUARANTINE),
        Placement::Reuse {
            upstream: U1,
            conn: 1
        },
        "2 was released in this turn"
    );
}

#[test]
fn an_unreusable_connection_is_never_kept() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let now = Instant::now();
    open_one(&mut p, now);
    assert_eq!(p.release(U1, 9, false, now), Release::Close);
    assert!(p.upstreams()[0].idle.is_empty());
}

#[test]
fn waits_at_max_conns_and_reports_unavailable_when_down() {
    let mut p = Pool::new(
        &[spec(1, 1, 1), spec(2, 1, 1)],
        PoolSettings {
            panic_threshold: 0,
            ..settings()
        },
        Box::new(wrr::WeightedRoundRobin::default()),
    );
    let now = Instant::now();
    p.checked(UpstreamId(2), false);
    assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    assert_eq!(place(&mut p, now), Placement::Wait { upstream: U1 });
    // `fall` (3) failed connects in a row take it down.
    for _ in 0..2 {
        p.connect_failed(U1, now);
        assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    }
    p.connect_failed(U1, now);
    assert_eq!(place(&mut p, now), Placement::Unavailable);
    assert_eq!(p.upstreams()[0].state(now), "down");
    // After the backoff it is tried again.
    assert_eq!(
        place(&mut p, now + health::FIRST_BACKOFF),
        Placement::Connect { upstream: U1 }
    );
}

#[test]
fn failed_upstream_is_skipped_while_another_is_up() {
    let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
    let now = Instant::now();
    let Placement::Connect { upstream } = place(&mut p, now) else {
        panic!()
    };
    p.connect_failed(upstream, now);
    // A retry avoids the upstream it failed on.
    assert_eq!(
        p.place(RequestKey::default(), now, true, Some(upstream)),
        Placement::Connect {
            upstream: UpstreamId(3 - upstream.0)
        }
    );
    p.connect_abandoned(UpstreamId(3 - upstream.0));
    // Two more failures (resets count too) make `fall`: it is down.
    p.reset_before_answer(upstream, now);
    p.reset_before_answer(upstream, now);
    for _ in 0..3 {
        assert_eq!(
            place(&mut p, now),
            Placement::Connect {
                upstream: UpstreamId(3 - upstream.0)
            }
        );
    }
}

/// Three connect failures in a row on `id` (fall=3): down.
fn take_down(p: &mut Pool, id: UpstreamId, now: Instant) {
    for _ in 0..3 {
        p.reset_before_answer(id, now);
    }
    assert!(!p.upstream(id).unwrap().is_up(now));
}

#[test]
fn the_only_upstream_is_never_refused_for_failures_of_traffic() {
    let now = Instant::now();
    for threshold in [0, 50] {
        let mut p = Pool::new(
            &[spec(1, 1, 10)],
            PoolSettings {
                panic_threshold: threshold,
                ..settings()
            },
            policy::build(&Default::default(), 1),
        );
        take_down(&mut p, U1, now);
        assert_eq!(
            place(&mut p, now),
            Placement::Connect { upstream: U1 },
            "threshold {threshold}"
        );
        // The checker's verdict is another matter: only the threshold
        // overrides it.
        p.connect_abandoned(U1);
        p.checked(U1, false);
        let want = if threshold == 0 {
            Placement::Unavailable
        } else {
            Placement::Connect { upstream: U1 }
        };
        assert_eq!(place(&mut p, now), want, "threshold {threshold}");
    }
}

#[test]
fn below_the_threshold_every_upstream_is_chosen_from_and_it_is_noticed() {
    let now = Instant::now();
    let mut p = Pool::new(
        &[spec(1, 1, 100), spec(2, 1, 100), spec(3, 1, 100)],
        PoolSettings {
            max_connecting: 100,
            ..settings()
        },
        Box::new(wrr::WeightedRoundRobin::default()),
    );
    take_down(&mut p, UpstreamId(1), now);
    // Two of three up: health decides.
    for _ in 0..6 {
        let Placement::Connect { upstream } = place(&mut p, now) else {
            panic!()
        };
        assert_ne!(upstream, UpstreamId(1));
    }
    assert!(
        !p.panicking() && p.take_notices().len() == 1,
        "the down one, noticed"
    );
    take_down(&mut p, UpstreamId(2), now);
    let mut chosen = std::collections::HashSet::new();
    for _ in 0..9 {
        let Placement::Connect { upstream } = place(&mut p, now) else {
            panic!()
        };
        chosen.insert(upstream);
    }
    assert_eq!(chosen.len(), 3, "down ones too: {chosen:?}");
    assert!(p.panicking());
    let notices = p.take_notices();
    assert!(
        notices.contains(&Notice::Panic { up: 1, live: 3 }),
        "{notices:?}"
    );
    // One answers again: two of three, health decides again.
    p.record_response(UpstreamId(2), Duration::from_millis(1), now);
    place(&mut p, now);
    let notices = p.take_notices();
    assert!(
        notices.contains(&Notice::Back {
            upstream: UpstreamId(2)
        }),
        "{notices:?}"
    );
    assert!(
        notices.contains(&Notice::Calm { up: 2, live: 3 }),
        "{notices:?}"
    );
}

#[test]
fn connections_open_as_fast_as_the_origin_answers() {
    let mut p = pool(&[spec(1, 1, 100)]);
    let now = Instant::now();
    for _ in 0..4 {
        assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    }
    assert_eq!(
        place(&mut p, now),
        Placement::Wait { upstream: U1 },
        "four opening connections at most"
    );
    // Connected but silent: still opening.
    for _ in 0..4 {
        p.connected(U1, now);
    }
    assert_eq!(place(&mut p, now), Placement::Wait { upstream: U1 });
    assert_eq!(p.next_opening_expiry(now), Some(now + OPENING_FOR));
    // Two answer: two more may open.
    p.proven(U1);
    p.proven(U1);
    for _ in 0..2 {
        assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    }
    assert_eq!(place(&mut p, now), Placement::Wait { upstream: U1 });
    // A connect given up, or a silent connection that closes, gives
    // its place back.
    p.connect_abandoned(U1);
    assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    p.connected(U1, now);
    p.active_closed(U1, false);
    assert_eq!(place(&mut p, now), Placement::Connect { upstream: U1 });
    assert_eq!(place(&mut p, now), Placement::Wait { upstream: U1 });
}

#[test]
fn silent_connections_stop_counting_after_a_while() {
    // A cold origin whose first requests are slow (or a far one whose
    // handshakes take long): four more every OPENING_FOR.
    let mut p = pool(&[spec(1, 1, 100)]);
    let t0 = Instant::now();
    for _ in 0..4 {
        place(&mut p, t0);
    }
    assert_eq!(place(&mut p, t0), Placement::Wait { upstream: U1 });
    let later = t0 + OPENING_FOR;
    assert_eq!(p.next_opening_expiry(t0), Some(later));
    for _ in 0..4 {
        assert_eq!(place(&mut p, later), Placement::Connect { upstream: U1 });
    }
    assert_eq!(place(&mut p, later), Placement::Wait { upstream: U1 });
}

#[test]
fn a_reload_keeps_what_stays_and_drains_what_goes() {
    let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
    let now = Instant::now();
    warm_all(&mut p, now);
    // Upstream 1: one idle connection and one busy; 2 gets one busy.
    for _ in 0..2 {
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Connect { upstream: U1 }
        );
        p.connected(U1, now);
        p.proven(U1);
        let _ = p.place(RequestKey::default(), now, false, None);
    }
    p.release(U1, 10, true, now);
    let two = UpstreamId(2);
    p.connected(two, now);
    // The reload keeps 2 (reweighted), drops 1, adds 3.
    let mut w2 = spec(2, 5, 10);
    w2.id = two;
    let close = p.apply(&[w2, spec(3, 1, 10)], settings(), now);
    assert_eq!(
        close,
        vec![10],
        "the removed upstream's idle connection closes"
    );
    let ids: Vec<u32> = p.upstreams().iter().map(|u| u.spec.id.0).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3],
        "1 stays known while a connection is busy"
    );
    assert!(p.upstream(UpstreamId(1)).unwrap().removed);
    assert_eq!(p.upstream(two).unwrap().spec.weight, 5);
    assert_eq!(p.upstream(two).unwrap().active, 1, "counts survive");
    // Nothing new goes to a removed upstream.
    for _ in 0..20 {
        match p.place(RequestKey::default(), now + QUARANTINE, false, None) {
            Placement::Connect { upstream } | Placement::Wait { upstream } => {
                assert_ne!(upstream, U1)
            }
            other => panic!("{other:?}"),
        }
    }
    // Its busy connection ends: closed, not kept, and 1 is forgotten.
    assert_eq!(p.release(U1, 11, true, now), Release::Close);
    assert!(p.upstream(U1).is_none());
}

#[test]
fn an_upstream_added_by_a_reload_starts_cold_warms_and_ramps() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let t = Instant::now();
    warm_all(&mut p, t);
    let mut two = spec(2, 1, 10);
    two.slow_start = Duration::from_secs(10);
    p.apply(&[spec(1, 1, 10), two], settings(), t);
    // Cold while a warm peer is up: everything goes to 1, and 2 is
    // to be warmed.
    for _ in 0..3 {
        assert_eq!(place(&mut p, t), Placement::Connect { upstream: U1 });
    }
    assert_eq!(p.take_to_warm(), vec![UpstreamId(2)], "once");
    assert!(p.take_to_warm().is_empty());
    assert!(p.reserve_spare(UpstreamId(2), t));
    p.connected(UpstreamId(2), t);
    // Warm now, at a tenth of its weight, and all of it ten seconds on.
    p.fill_candidates(t, false, None);
    let weights: Vec<u32> = p.candidates.iter().map(|c| c.weight).collect();
    assert_eq!(weights, vec![10, 1]);
    p.fill_candidates(t + Duration::from_secs(5), false, None);
    assert_eq!(p.candidates[1].weight, 6);
    p.fill_candidates(t + Duration::from_secs(10), false, None);
    assert_eq!(p.candidates[1].weight, 10);
    // Down, then back: cold again until a connection is made.
    for _ in 0..3 {
        p.reset_before_answer(UpstreamId(2), t);
    }
    let later = t + health::FIRST_BACKOFF;
    p.fill_candidates(later, false, None);
    assert!(!p.candidates[1].up, "cold after being down");
}

#[test]
fn a_warm_up_that_connects_nowhere_goes_cold_and_starts_again() {
    let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
    let t = Instant::now();
    p.upstreams[0].warm.on_connected(t);
    let two = UpstreamId(2);
    // wrr chooses 1 first (equal scores), then 2: it warms.
    place(&mut p, t);
    place(&mut p, t);
    assert_eq!(p.take_to_warm(), vec![two]);
    assert!(p.reserve_spare(two, t));
    assert!(p.reserve_spare(two, t));
    p.warmup_opened(two);
    p.connect_failed(two, t);
    assert!(
        matches!(p.upstreams[1].warm.warmth, Warmth::Warming { .. }),
        "one connect still in flight"
    );
    p.connect_failed(two, t);
    assert_eq!(p.upstreams[1].warm.warmth, Warmth::Cold);
    // Warmed again once the policy chooses it (wrr: within two).
    place(&mut p, t);
    place(&mut p, t);
    assert_eq!(p.take_to_warm(), vec![two], "warmed again");
    // Nothing could be opened at all (its limits): cold at once.
    p.warmup_opened(two);
    assert_eq!(p.upstreams[1].warm.warmth, Warmth::Cold);
}

#[test]
fn past_max_idle_the_connection_idle_the_longest_goes_whatever_its_upstream() {
    let mut p: Pool = Pool::new(
        &[spec(1, 1, 10), spec(2, 1, 10), spec(3, 1, 10)],
        PoolSettings {
            max_idle: 2,
            ..settings()
        },
        Box::new(wrr::WeightedRoundRobin::default()),
    );
    let t = Instant::now();
    for (i, id) in [1u32, 2, 3].into_iter().enumerate() {
        p.get(UpstreamId(id)).unwrap().active += 1;
        p.release(
            UpstreamId(id),
            u64::from(id) * 10,
            true,
            t + Duration::from_millis(i as u64),
        );
    }
    assert_eq!(p.take_evicted(), vec![10], "upstream 1's, the oldest");
    assert_eq!(p.idle_total(), 2);
    // One of the others is reused: nothing more goes, and the next
    // release over the limit takes the oldest still idle.
    assert!(p.idle_closed(UpstreamId(2), 20, false));
    p.get(UpstreamId(1)).unwrap().active += 1;
    p.release(UpstreamId(1), 11, true, t + Duration::from_millis(9));
    assert!(p.take_evicted().is_empty());
    p.get(UpstreamId(2)).unwrap().active += 1;
    p.release(UpstreamId(2), 21, true, t + Duration::from_millis(10));
    assert_eq!(p.take_evicted(), vec![30]);
}

#[test]
fn a_connection_idle_again_since_is_not_taken_for_the_oldest() {
    let mut p = Pool::new(
        &[spec(1, 1, 10)],
        PoolSettings {
            max_idle: 2,
            idle_reuse: IdleReuse::Fifo,
            ..settings()
        },
        Box::new(wrr::WeightedRoundRobin::default()),
    );
    let t = Instant::now();
    let ms = |n| t + Duration::from_millis(n);
    // A idle at 0, B at 1; A reused and idle again at 2; C at 3: B
    // has been idle the longest.
    for (conn, at) in [(10, 0), (20, 1)] {
        p.begin_turn();
        p.get(U1).unwrap().active += 1;
        p.release(U1, conn, true, ms(at));
    }
    p.begin_turn();
    let Placement::Reuse { conn, .. } = place(&mut p, ms(2)) else {
        panic!("reuses one")
    };
    assert_eq!(conn, 10, "FIFO: the one idle the longest");
    p.begin_turn();
    p.release(U1, conn, true, ms(2));
    p.begin_turn();
    p.get(U1).unwrap().active += 1;
    p.release(U1, 30, true, ms(3));
    let other = if conn == 10 { 20 } else { 10 };
    assert_eq!(p.take_evicted(), vec![other], "reused {conn}");
}

#[test]
fn only_chosen_cold_upstreams_warm_and_only_so_many_at_once() {
    let specs: Vec<UpstreamSpec> = (1..=200).map(|i| spec(i, 1, 10)).collect();
    let mut p = pool(&specs);
    let t = Instant::now();
    p.upstreams[0].warm.on_connected(t);
    // Two requests: wrr chooses the warm one, then a cold one, which
    // warms; not the other 198.
    place(&mut p, t);
    place(&mut p, t);
    assert_eq!(p.take_to_warm().len(), 1);
    // Many: never more than MAX_WARMING warming at once.
    for _ in 0..400 {
        let _ = place(&mut p, t);
    }
    let warming = p
        .upstreams
        .iter()
        .filter(|u| matches!(u.warm.warmth, Warmth::Warming { .. }))
        .count();
    assert_eq!(warming, MAX_WARMING);
}

#[test]
fn a_worker_starting_beside_others_takes_their_warm_upstreams_as_warm() {
    let mut ramped = spec(2, 1, 10);
    ramped.slow_start = Duration::from_secs(10);
    ramped.warmup_check = Some("/ready".into());
    let mut p = pool(&[spec(1, 1, 10), ramped]);
    let t = Instant::now() + Duration::from_secs(60);
    p.seed_warm(&[UpstreamId(2)], t);
    assert!(!p.upstreams[0].warm.is_warm(), "not warm elsewhere: cold");
    assert!(p.upstreams[1].warm.is_warm());
    p.fill_candidates(t, false, None);
    assert!(!p.candidates[0].up, "1 waits for its own warm-up");
    assert_eq!(p.candidates[1].weight, 10, "past its ramp");
    assert_eq!(
        place(&mut p, t),
        Placement::Connect {
            upstream: UpstreamId(2)
        }
    );
}

#[test]
fn a_cold_upstreams_waiters_move_once_a_peer_is_warm() {
    let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
    let t = Instant::now();
    let w = Waiter {
        client: 7,
        exchange: 1,
        since: t,
        key: RequestKey::default(),
        fresh: false,
        avoid: None,
        flexible: false,
    };
    p.enqueue(UpstreamId(2), w).unwrap();
    assert!(p.take_stranded(t).is_empty(), "nothing is warm: it waits");
    p.upstreams[0].warm.on_connected(t);
    assert_eq!(p.take_stranded(t), vec![w]);
}

#[test]
fn a_readiness_check_added_or_removed_by_a_reload() {
    let t = Instant::now();
    let mut p = pool(&[spec(1, 1, 10)]);
    p.upstreams[0].warm.on_connected(t);
    let mut checked = spec(1, 1, 10);
    checked.warmup_check = Some("/ready".into());
    p.apply(&[checked.clone()], settings(), t);
    assert!(p.upstreams[0].warm.is_warm(), "serving: it keeps serving");
    let mut cold = pool(&[spec(1, 1, 10)]);
    cold.apply(&[checked], settings(), t);
    cold.upstreams[0].warm.on_connected(t);
    assert!(
        !cold.upstreams[0].warm.is_warm(),
        "cold: it awaits the check"
    );
    cold.apply(&[spec(1, 1, 10)], settings(), t);
    assert!(cold.upstreams[0].warm.is_warm(), "the check was taken away");
}

#[test]
fn idle_closed_removes_only_idle() {
    let mut p = pool(&[spec(1, 1, 10)]);
    let now = Instant::now();
    open_one(&mut p, now);
    p.release(U1, 4, true, now);
    assert!(p.idle_closed(U1, 4, true));
    assert!(!p.idle_closed(U1, 4, true));
    assert_eq!(p.upstreams()[0].idle_lost, 1);
    assert_eq!(p.upstreams()[0].open(), 0);
}
