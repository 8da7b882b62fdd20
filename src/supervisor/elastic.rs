//! Elastic workers (`--workers MIN..MAX`): the supervisor's side of
//! growing and shrinking the pool, as the [`Scaler`](crate::scaler)
//! decides. Growing starts the next worker on its own lane (taken back
//! from the worker that carried it); shrinking hands the last worker's
//! lanes to the worker with the fewest, then retires it (it serves what
//! it accepted and finishes what is in flight; see `Core::begin_retire`).
//! Nothing is closed, so no connection is lost either way.

use std::process::ExitCode;
use std::time::Instant;

use super::{Supervisor, RETIRE_WITHIN};
use crate::control::Command;
use crate::scaler::Decision;

impl Supervisor {
    /// Look at the busy fractions and grow or shrink by one worker.
    pub(super) fn scale(&mut self, now: Instant) -> Option<ExitCode> {
        let serving: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].serving())
            .collect();
        let changing = self.slots.iter().any(|s| s.retiring);
        let busy: Vec<f64> = {
            let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            serving
                .iter()
                .map(|&i| {
                    let w = board.workers[i].lock().unwrap_or_else(|e| e.into_inner());
                    // A worker still starting has not published a tick yet.
                    if w.state == "running" {
                        w.busy
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        };
        let changing = changing || busy.iter().any(|b| b.is_nan());
        match self.scaler.observe(now, &busy, changing) {
            Decision::Grow => self.grow(serving.len()),
            Decision::Shrink => self.shrink(serving.len()),
            Decision::Stay => {}
        }
        None
    }

    /// Start worker `next` (there are `next` serving).
    fn grow(&mut self, next: usize) {
        if !self.slots.get(next).is_some_and(|s| s.done) {
            return;
        }
        match self.start_worker(next) {
            Ok((slot, _)) => {
                self.slots[next] = slot;
                // Kept connections stay with the worker that accepted them:
                // the others let theirs go, each at its next request
                // boundary, and those clients' new connections spread over
                // every worker, the new one included. (Letting a part go
                // leaves the new worker short: with a fraction f shed, it
                // gets f of a fair share; only all of them balance.)
                for j in 0..next {
                    if self.slots[j].serving() {
                        if let Some(m) = &self.slots[j].mailbox {
                            let _ = m.send(Command::Shed { every: 1 });
                        }
                    }
                }
                // It starts with every upstream up: tell it what the checks
                // say.
                if let Some(c) = &self.checker {
                    c.tell(crate::health_check::Note::Resend);
                }
                if let Ok(mut b) = self.board.lock() {
                    b.scale_ups += 1;
                }
                let pin = match self.cpu_of(next) {
                    Some(cpu) => format!("on CPU {cpu}"),
                    None if self.cfg.pin => "unpinned (more workers than CPUs)".to_string(),
                    None => "unpinned".to_string(),
                };
                eprintln!(
                    "ringmux: every worker busy: worker {next} started {pin}; {} running",
                    next + 1
                );
            }
            Err(e) => eprintln!("ringmux: worker {next} could not start: {e}"),
        }
    }

    /// Retire the last of the `n` serving workers.
    fn shrink(&mut self, n: usize) {
        if n < 2 {
            return;
        }
        let last = n - 1;
        // Its lanes go to the worker carrying the fewest (the lowest index
        // among equals), which accepts on them before `last` lets go.
        let heir = (0..last)
            .filter(|&i| self.slots[i].serving())
            .min_by_key(|&i| self.lanes.lanes_of(i).len())
            .expect("n >= 2");
        for lane in self.lanes.lanes_of(last) {
            if let Some(m) = &self.slots[heir].mailbox {
                let _ = m.send(Command::Adopt {
                    lane,
                    fds: self.lanes.fds(lane),
                });
            }
            self.lanes.set_owner(lane, heir);
        }
        let heir_box = self.slots[heir].mailbox.clone();
        let slot = &mut self.slots[last];
        slot.retiring = true;
        if let Some(m) = &slot.mailbox {
            // Its idle connections go to the heir (its busy ones once
            // their exchange is over): shrinking closes none of them.
            let _ = m.send(Command::Retire {
                deadline: Instant::now() + RETIRE_WITHIN,
                heir: heir_box,
            });
        }
        if let Ok(mut b) = self.board.lock() {
            b.scale_downs += 1;
        }
        eprintln!(
            "ringmux: workers quiet: worker {last} retires (its lanes go to worker {heir}); {last} stay"
        );
    }
}
