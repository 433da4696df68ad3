//! Rise/fall hysteresis: the pure function that turns a stream of probe
//! results into an up/down state that flips only on an edge.
//!
//! keepalived's habit, kept: a real server is up after `rise` consecutive
//! successes and down after `fall` consecutive failures; any result of the
//! other kind resets the run. A single lost probe therefore never moves a
//! server, and a flapping one moves at most once per `rise`/`fall` run.
//!
//! Time is an input ([`Hysteresis::record`] takes `now`), so the last-change
//! time is testable without a clock.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the dataplane is told about a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Down,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// An edge: the state changed at `at` after the run of results that
/// crossed the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    /// Time of the result that crossed the threshold (the caller's clock).
    pub at: Duration,
}

/// Rise/fall state of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    state: Health,
    /// Consecutive successes (0 after any failure).
    successes: u32,
    /// Consecutive failures (0 after any success).
    failures: u32,
    last_change: Option<Duration>,
}

impl Hysteresis {
    /// A check that starts in `initial`. `rise` and `fall` of 0 are
    /// treated as 1 (config validation rejects them; this keeps the
    /// function total).
    pub fn new(rise: u32, fall: u32, initial: Health) -> Hysteresis {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            state: initial,
            successes: 0,
            failures: 0,
            last_change: None,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// When the state last changed; `None` while it is the initial one.
    pub fn last_change(&self) -> Option<Duration> {
        self.last_change
    }

    /// Feeds one probe result; returns the transition if this result
    /// crossed the threshold.
    pub fn record(&mut self, now: Duration, success: bool) -> Option<Transition> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.state == Health::Down && self.successes >= self.rise {
                return Some(self.flip(now, Health::Up));
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.state == Health::Up && self.failures >= self.fall {
                return Some(self.flip(now, Health::Down));
            }
        }
        None
    }

    fn flip(&mut self, now: Duration, to: Health) -> Transition {
        let from = self.state;
        self.state = to;
        self.last_change = Some(now);
        Transition { from, to, at: now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Feeds `results` ('+' success, '-' failure) one per second from t=1s
    /// and returns the state after each, as a string of 'U'/'D', plus the
    /// transitions.
    fn run(h: &mut Hysteresis, results: &str) -> (String, Vec<Transition>) {
        let mut states = String::new();
        let mut edges = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let now = ms(1000 * (i as u64 + 1));
            if let Some(t) = h.record(now, c == '+') {
                edges.push(t);
            }
            states.push(match h.state() {
                Health::Up => 'U',
                Health::Down => 'D',
            });
        }
        (states, edges)
    }

    #[test]
    fn table() {
        // (rise, fall, initial, results, states after each result)
        let cases: &[(u32, u32, Health, &str, &str)] = &[
            // Down after `fall` consecutive failures, not before.
            (2, 3, Health::Up, "---", "UUD"),
            // A success in the middle resets the failure run: one lost
            // probe never takes a server out.
            (2, 3, Health::Up, "--+--+--", "UUUUUUUU"),
            // Up again after `rise` consecutive successes.
            (2, 3, Health::Down, "++", "DU"),
            (2, 3, Health::Down, "+-+-+-", "DDDDDD"),
            // Already up: successes change nothing; already down:
            // failures change nothing.
            (1, 1, Health::Up, "++++", "UUUU"),
            (1, 1, Health::Down, "----", "DDDD"),
            // rise = fall = 1 follows every result.
            (1, 1, Health::Up, "-+-+", "DUDU"),
            // A full cycle: down after 3, up after 2, down after 3.
            (2, 3, Health::Up, "---++---", "UUDDUUUD"),
        ];
        for &(rise, fall, initial, results, want) in cases {
            let mut h = Hysteresis::new(rise, fall, initial);
            let (got, _) = run(&mut h, results);
            assert_eq!(
                got, want,
                "rise {rise} fall {fall} from {initial} on {results}"
            );
        }
    }

    #[test]
    fn a_transition_is_reported_only_on_the_edge_with_its_time() {
        let mut h = Hysteresis::new(2, 3, Health::Up);
        let (_, edges) = run(&mut h, "-----++++");
        assert_eq!(
            edges,
            vec![
                Transition {
                    from: Health::Up,
                    to: Health::Down,
                    at: ms(3000)
                },
                Transition {
                    from: Health::Down,
                    to: Health::Up,
                    at: ms(7000)
                },
            ]
        );
        assert_eq!(h.last_change(), Some(ms(7000)));
        assert_eq!(h.consecutive_successes(), 4);
        assert_eq!(h.consecutive_failures(), 0);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = Hysteresis::new(0, 0, Health::Up);
        assert!(h.record(ms(1), false).is_some());
        assert!(h.record(ms(2), true).is_some());
    }

    #[test]
    fn counters_saturate() {
        let mut h = Hysteresis::new(1, 1, Health::Up);
        h.successes = u32::MAX;
        assert_eq!(h.record(ms(1), true), None);
        assert_eq!(h.consecutive_successes(), u32::MAX);
    }
}
