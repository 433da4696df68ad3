//! The event stream behind `directorctl vrrp --follow`.
//!
//! The executor publishes every [`HostEvent`] into a [`Journal`] *after*
//! executing it: a follower sees "VIPs added" only once the addresses are
//! on the interface. The journal is two bounded things:
//!
//! - the last [`JOURNAL_EVENTS`] events, so a client can ask for the events
//!   after a sequence number it already has (`since`), e.g. the startup
//!   transitions it connected too late for;
//! - a `tokio::sync::broadcast` channel of the same capacity for the live
//!   tail. A follower that does not keep up is overtaken (`Lagged`), never
//!   waited for: the executor (and so the VRRP timers behind it) is never
//!   blocked by a slow reader, and memory does not grow with one.
//!
//! A [`Subscription`] merges both into one gap-free sequence: it delivers
//! every event in `seq` order exactly once, and where events were lost
//! (overtaken, or older than the journal) it says so with
//! [`Item::Lost`] naming the exact sequence numbers. Nothing is skipped
//! silently: the driver numbers events 1, 2, 3, ... without gaps, so any
//! jump in `seq` is a loss and is reported as one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use vrrp::driver::HostEvent;

/// Events kept for `since` and for the live tail (each a few hundred bytes).
pub const JOURNAL_EVENTS: usize = 1024;

/// Recent events plus the live tail (see the module docs). Clones share
/// one journal.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Live subscriptions, so a stopping daemon can let them finish.
    followers: AtomicUsize,
}

struct Inner {
    recent: VecDeque<HostEvent>,
    /// `None` once closed: receivers see the end of the stream after the
    /// events they still hold.
    live: Option<broadcast::Sender<HostEvent>>,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(HostEvent),
    /// Events `first_seq..=last_seq` will never be delivered: this
    /// follower fell behind, or asked for events older than the journal.
    Lost {
        first_seq: u64,
        last_seq: u64,
    },
}

impl Journal {
    /// A journal keeping `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Journal {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        Journal {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    recent: VecDeque::with_capacity(capacity),
                    live: Some(live),
                }),
                capacity,
                followers: AtomicUsize::new(0),
            }),
        }
    }

    /// Records an executed event and hands it to the live followers.
    /// Never waits for a follower: a broadcast send only overwrites the
    /// oldest slot.
    pub fn publish(&self, ev: HostEvent) {
        let Ok(mut inner) = self.shared.inner.lock() else {
            return;
        };
        if inner.recent.len() == self.shared.capacity {
            inner.recent.pop_front();
        }
        inner.recent.push_back(ev.clone());
        if let Some(live) = &inner.live {
            // No follower: nothing to do.
            let _ = live.send(ev);
        }
    }

    /// Ends every stream (after the events already published): VRRP has
    /// stopped and nothing more will come.
    pub fn close(&self) {
        if let Ok(mut inner) = self.shared.inner.lock() {
            inner.live = None;
        }
    }

    /// Subscriptions alive now.
    pub fn followers(&self) -> usize {
        self.shared.followers.load(Ordering::Relaxed)
    }

    /// The raw live tail (no journal, no gap reporting); ended at once if
    /// the journal is closed.
    pub fn live(&self) -> broadcast::Receiver<HostEvent> {
        let inner = self.shared.inner.lock().ok();
        match inner.as_ref().and_then(|i| i.live.as_ref()) {
            Some(live) => live.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// A subscription that receives every event published from now on.
    /// Take the snapshot the client starts from *after* this call, then
    /// call [`Subscription::start_after`] with its `last_event_seq` (or
    /// the client's `since`): no event can fall between the two.
    pub fn subscribe(&self) -> Subscription {
        self.shared.followers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            shared: self.shared.clone(),
            live: self.live(),
            backlog: VecDeque::new(),
            next: 1,
            pending: None,
        }
    }
}

/// One follower's view: every event after a sequence number, in order,
/// with losses reported (see the module docs).
pub struct Subscription {
    shared: Arc<Shared>,
    live: broadcast::Receiver<HostEvent>,
    /// Journal events not yet delivered, oldest first.
    backlog: VecDeque<HostEvent>,
    /// The sequence number the client expects next.
    next: u64,
    /// An event held back while the loss before it is reported.
    pending: Option<HostEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.followers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// Deliver the events with `seq > after`, starting with those still in
    /// the journal.
    pub fn start_after(&mut self, after: u64) {
        self.next = after.saturating_add(1);
        // The live receiver exists already and `publish` writes the
        // journal and sends live under one lock: every event is in this
        // copy, or reaches the receiver, or both (duplicates are dropped
        // by `seq`).
        if let Ok(inner) = self.shared.inner.lock() {
            self.backlog = inner
                .recent
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect();
        }
    }

    /// The next item; `None` once the journal is closed and every event
    /// published before was delivered. Cancel-safe: the only await is the
    /// broadcast receive, so it can sit in a `select!` beside the
    /// client's socket.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            let ev = match self.pending.take() {
                Some(ev) => ev,
                None => match self.backlog.pop_front() {
                    Some(ev) => ev,
                    None => match self.live.recv().await {
                        Ok(ev) => ev,
                        // Overtaken: the receiver now points at the oldest
                        // event still held, which arrives next; its `seq`
                        // says exactly what was lost (the count `n` would
                        // also include duplicates of the journal copy).
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                },
            };
            if ev.seq < self.next {
                // In the snapshot or the journal copy already.
                continue;
            }
            if ev.seq > self.next {
                let lost = Item::Lost {
                    first_seq: self.next,
                    last_seq: ev.seq - 1,
                };
                self.next = ev.seq;
                self.pending = Some(ev);
                return Some(lost);
            }
            self.next = ev.seq + 1;
            return Some(Item::Event(ev));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrrp::machine::{Action, Reason, State};
    use vrrp::Time;

    fn ev(seq: u64) -> HostEvent {
        HostEvent {
            seq,
            at: Time::from_millis(seq * 10),
            instance: "VI_1".into(),
            interface: "eth0".into(),
            action: Action::StateChange {
                old: State::Backup,
                new: State::Master,
                reason: Reason::MasterDownTimer,
            },
        }
    }

    fn seqs(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Event(e) => e.seq.to_string(),
                Item::Lost {
                    first_seq,
                    last_seq,
                } => format!("lost {first_seq}-{last_seq}"),
            })
            .collect()
    }

    /// Everything available now, without waiting for more.
    async fn drain(sub: &mut Subscription) -> Vec<Item> {
        let mut out = Vec::new();
        while let Ok(Some(item)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await
        {
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn live_events_after_the_snapshot_arrive_once_in_order() {
        let j = Journal::new(8);
        for s in 1..=3 {
            j.publish(ev(s));
        }
        let mut sub = j.subscribe();
        // Snapshot at seq 3; event 4 was emitted before the snapshot was
        // answered but executed after the subscription.
        j.publish(ev(4));
        sub.start_after(3);
        j.publish(ev(5));
        assert_eq!(seqs(&drain(&mut sub).await), ["4", "5"]);
    }

    #[tokio::test]
    async fn events_in_both_journal_and_live_are_not_repeated() {
        let j = Journal::new(8);
        let mut sub = j.subscribe();
        j.publish(ev(1));
        j.publish(ev(2));
        // 1 and 2 are in the journal copy and in the live channel.
        sub.start_after(0);
        j.publish(ev(3));
        assert_eq!(seqs(&drain(&mut sub).await), ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn since_replays_the_journal_and_reports_what_it_no_longer_has() {
        let j = Journal::new(4);
        for s in 1..=10 {
            j.publish(ev(s));
        }
        let mut sub = j.subscribe();
        sub.start_after(2);
        // The journal holds 7..=10: 3..=6 are gone, and said so.
        assert_eq!(
            seqs(&drain(&mut sub).await),
            ["lost 3-6", "7", "8", "9", "10"]
        );

        let mut sub = j.subscribe();
        sub.start_after(8);
        assert_eq!(seqs(&drain(&mut sub).await), ["9", "10"]);
    }

    #[tokio::test]
    async fn a_slow_follower_is_overtaken_and_told_exactly_what_it_lost() {
        let j = Journal::new(4);
        let mut sub = j.subscribe();
        sub.start_after(0);
        j.publish(ev(1));
        assert_eq!(seqs(&drain(&mut sub).await), ["1"]);
        // The follower stops reading; the publisher does not wait.
        for s in 2..=20 {
            j.publish(ev(s));
        }
        assert_eq!(
            seqs(&drain(&mut sub).await),
            ["lost 2-16", "17", "18", "19", "20"]
        );
        j.publish(ev(21));
        assert_eq!(seqs(&drain(&mut sub).await), ["21"]);
    }

    #[tokio::test]
    async fn a_gap_in_the_published_sequence_is_reported_not_skipped() {
        let j = Journal::new(8);
        let mut sub = j.subscribe();
        sub.start_after(0);
        j.publish(ev(1));
        j.publish(ev(3));
        assert_eq!(seqs(&drain(&mut sub).await), ["1", "lost 2-2", "3"]);
    }

    #[tokio::test]
    async fn closing_ends_the_stream_after_the_last_event_and_counts_followers() {
        let j = Journal::new(4);
        let mut sub = j.subscribe();
        sub.start_after(0);
        assert_eq!(j.followers(), 1);
        j.publish(ev(1));
        j.close();
        // Published before the close: still delivered, then the end.
        assert_eq!(seqs(&drain(&mut sub).await), ["1"]);
        assert_eq!(sub.next().await, None);
        drop(sub);
        assert_eq!(j.followers(), 0);
        // Subscribing after the close: the journal, then the end at once.
        let mut late = j.subscribe();
        late.start_after(0);
        assert_eq!(late.next().await, Some(Item::Event(ev(1))));
        assert_eq!(late.next().await, None);
    }
}
