//! What callers read without a lock: the published [`View`] of the lease, and the one
//! `is_primary` predicate that the facade, the driver and the simulator all use.

use std::sync::atomic::{AtomicU64, Ordering};

use super::protocol::Nanos;

/// The lease as this instance holds it: primary exactly while
/// `primary_from <= now < deadline` (`deadline` 0: nothing held).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    pub deadline: Nanos,
    pub primary_from: Nanos,
    pub epoch: u64,
}

impl View {
    pub fn is_primary_at(&self, now: Nanos) -> bool {
        is_primary(self.deadline, self.primary_from, now)
    }
}

/// The predicate itself.
pub fn is_primary(deadline: Nanos, primary_from: Nanos, now: Nanos) -> bool {
    deadline != 0 && primary_from <= now && now < deadline
}

/// The view, published with atomics so `is_primary()` never blocks.
///
/// Writers store `primary_from` before `deadline` and clear `deadline` first; readers load
/// `deadline` before `primary_from`, so a torn read can only say "not primary".
#[derive(Default)]
pub struct SharedView {
    deadline: AtomicU64,
    primary_from: AtomicU64,
    epoch: AtomicU64,
}

impl SharedView {
    pub fn publish(&self, view: View) {
        let current = self.deadline.load(Ordering::Acquire);
        if view.deadline == 0
            || current == 0
            || self.primary_from.load(Ordering::Acquire) != view.primary_from
        {
            self.deadline.store(0, Ordering::Release);
        }
        self.epoch.store(view.epoch, Ordering::Release);
        self.primary_from
            .store(view.primary_from, Ordering::Release);
        self.deadline.store(view.deadline, Ordering::Release);
    }

    pub fn is_primary_at(&self, now: Nanos) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        let primary_from = self.primary_from.load(Ordering::Acquire);
        is_primary(deadline, primary_from, now)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
}
