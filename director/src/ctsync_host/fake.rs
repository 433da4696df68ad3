//! In-memory [`ConntrackTable`] and [`EventSource`] (DESIGN.md principle
//! 2: every kernel API has a fake). The driver's tests run two drivers
//! over loopback TCP against these; other tests (failover simulations)
//! may use them too, hence `pub`.
//!
//! The table is shared through a handle ([`FakeTable::view`]) so a test
//! can look at what the driver wrote while the driver owns the table.
//! Writes can be slowed down ([`FakeTable::set_delay`]) to test the VRRP
//! ordering barrier, and refused ([`FakeTable::refuse`]) to test
//! `ApplyFailed`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use ctsync::{Entry, Key};

use super::table::{Applied, ConntrackTable, EventSource, SourceBatch, Subscription};
use crate::conntrack::ConntrackError;

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<Key, Entry>,
    delay: Duration,
    refused: BTreeSet<Key>,
    /// Keys whose entry has window tracking off: written by an upsert
    /// (as the kernel table's writes do) or loosened; an entry the test
    /// inserts as a local connection is tracked.
    liberal: BTreeSet<Key>,
    loosens: u64,
    upsert_batches: u64,
    delete_batches: u64,
    dumps: u64,
}

impl Inner {
    /// TCP entries that still have window tracking on.
    fn tracked(&self) -> Vec<Key> {
        self.entries
            .values()
            .filter(|e| e.tcp.is_some() && !self.liberal.contains(&e.key()))
            .map(Entry::key)
            .collect()
    }
}

/// A conntrack table in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeTable {
    inner: Arc<Mutex<Inner>>,
}

/// A read-only look at a [`FakeTable`] another thread owns.
#[derive(Debug, Clone)]
pub struct FakeView {
    inner: Arc<Mutex<Inner>>,
}

impl FakeTable {
    pub fn new() -> FakeTable {
        FakeTable::default()
    }

    /// A table that already holds `entries` (a kernel with connections).
    pub fn with(entries: impl IntoIterator<Item = Entry>) -> FakeTable {
        let t = FakeTable::new();
        if let Ok(mut i) = t.inner.lock() {
            i.entries = entries.into_iter().map(|e| (e.key(), e)).collect();
        }
        t
    }

    pub fn view(&self) -> FakeView {
        FakeView {
            inner: self.inner.clone(),
        }
    }

    /// Every later write batch takes this long (a slow kernel).
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut i) = self.inner.lock() {
            i.delay = delay;
        }
    }

    /// Upserts of `key` fail from now on, as a full table would refuse
    /// them.
    pub fn refuse(&self, key: Key) {
        if let Ok(mut i) = self.inner.lock() {
            i.refused.insert(key);
        }
    }
}

impl FakeView {
    pub fn entries(&self) -> BTreeMap<Key, Entry> {
        self.inner
            .lock()
            .map(|i| i.entries.clone())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.inner
            .lock()
            .ok()
            .and_then(|i| i.entries.get(key).copied())
    }

    /// (upsert batches, delete batches, dumps) served so far.
    pub fn calls(&self) -> (u64, u64, u64) {
        self.inner
            .lock()
            .map(|i| (i.upsert_batches, i.delete_batches, i.dumps))
            .unwrap_or_default()
    }

    /// A connection ending in the local kernel.
    pub fn remove(&self, key: &Key) {
        if let Ok(mut i) = self.inner.lock() {
            i.entries.remove(key);
            i.liberal.remove(key);
        }
    }

    /// Writes from the test itself (as a local connection would appear:
    /// window-tracked).
    pub fn insert(&self, e: Entry) {
        if let Ok(mut i) = self.inner.lock() {
            i.liberal.remove(&e.key());
            i.entries.insert(e.key(), e);
        }
    }

    /// TCP entries that still have window tracking on (neither written
    /// by an upsert nor loosened).
    pub fn tracked(&self) -> Vec<Key> {
        self.inner.lock().map(|i| i.tracked()).unwrap_or_default()
    }

    /// How many times the table was loosened.
    pub fn loosens(&self) -> u64 {
        self.inner.lock().map(|i| i.loosens).unwrap_or(0)
    }
}

impl ConntrackTable for FakeTable {
    fn upsert(&mut self, entries: &[Entry]) -> Applied {
        let delay = self.inner.lock().map(|i| i.delay).unwrap_or_default();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut out = Applied::default();
        if let Ok(mut i) = self.inner.lock() {
            i.upsert_batches += 1;
            for e in entries {
                if i.refused.contains(&e.key()) {
                    out.failed
                        .push((e.key(), "Cannot allocate memory (errno 12)".into()));
                    out.table_full = true;
                } else {
                    i.entries.insert(e.key(), *e);
                    i.liberal.insert(e.key());
                    out.written += 1;
                }
            }
        }
        out
    }

    fn delete(&mut self, keys: &[Key]) -> Applied {
        let delay = self.inner.lock().map(|i| i.delay).unwrap_or_default();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut out = Applied::default();
        if let Ok(mut i) = self.inner.lock() {
            i.delete_batches += 1;
            for k in keys {
                i.entries.remove(k);
                i.liberal.remove(k);
                out.written += 1;
            }
        }
        out
    }

    fn dump(&mut self) -> Result<Vec<Entry>, ConntrackError> {
        let mut i = self.inner.lock().map_err(|_| ConntrackError::Io {
            what: "dumping the fake table",
            source: std::io::Error::other("poisoned"),
        })?;
        i.dumps += 1;
        Ok(i.entries.values().copied().collect())
    }

    fn loosen(&mut self) -> Result<Applied, ConntrackError> {
        let mut i = self.inner.lock().map_err(|_| ConntrackError::Io {
            what: "loosening the fake table",
            source: std::io::Error::other("poisoned"),
        })?;
        i.loosens += 1;
        let strict = i.tracked();
        let written = strict.len();
        i.liberal.extend(strict);
        Ok(Applied {
            written,
            ..Applied::default()
        })
    }
}

/// Kernel events a test injects ([`FakeEventsTx`]). Like the kernel's
/// groups, a source that is not listening never delivers: what is
/// injected meanwhile is counted and dropped.
#[derive(Debug)]
pub struct FakeEvents {
    rx: mpsc::Receiver<SourceBatch>,
    switch: Arc<FakeSubscription>,
}

/// The test's end of [`FakeEvents`].
#[derive(Debug, Clone)]
pub struct FakeEventsTx {
    tx: mpsc::Sender<SourceBatch>,
    switch: Arc<FakeSubscription>,
}

/// [`FakeEvents`]' subscription switch.
#[derive(Debug)]
pub struct FakeSubscription {
    listening: AtomicBool,
    /// Batches injected while not listening.
    dropped: AtomicU64,
}

impl Subscription for FakeSubscription {
    fn set_listening(&self, on: bool) -> Result<(), ConntrackError> {
        self.listening.store(on, Ordering::SeqCst);
        Ok(())
    }
}

impl FakeEvents {
    pub fn new() -> (FakeEvents, FakeEventsTx) {
        let (tx, rx) = mpsc::channel();
        let switch = Arc::new(FakeSubscription {
            listening: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
        });
        (
            FakeEvents {
                rx,
                switch: switch.clone(),
            },
            FakeEventsTx { tx, switch },
        )
    }
}

impl FakeEventsTx {
    /// Returns false once the driver dropped its source.
    pub fn send(&self, batch: SourceBatch) -> bool {
        self.tx.send(batch).is_ok()
    }

    /// Whether the driver has the subscription on.
    pub fn listening(&self) -> bool {
        self.switch.listening.load(Ordering::SeqCst)
    }

    /// Batches that were injected while the driver was not listening.
    pub fn dropped(&self) -> u64 {
        self.switch.dropped.load(Ordering::SeqCst)
    }
}

impl EventSource for FakeEvents {
    fn subscription(&self) -> Arc<dyn Subscription> {
        self.switch.clone()
    }

    fn next_batch(&mut self, timeout: Duration) -> Result<Option<SourceBatch>, ConntrackError> {
        match self.rx.recv_timeout(timeout) {
            Ok(_) if !self.switch.listening.load(Ordering::SeqCst) => {
                self.switch.dropped.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
            Ok(b) => Ok(Some(b)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            // The test is done with it: behave like an idle socket.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                Ok(None)
            }
        }
    }
}
