//! A queue's consumers and who is served next: round-robin, highest
//! `x-priority` first, or the single active consumer.

use std::collections::VecDeque;

/// A consumer as the queue machine sees it. The broker's consumer checks its
/// prefetch credit and its connection's buffer; tests use plain counters.
pub trait Slot: Clone {
    /// How a cancel names this consumer.
    type Key: std::fmt::Debug;
    fn has_key(&self, key: &Self::Key) -> bool;
    /// Take room for one more delivery, if there is any.
    fn try_reserve(&self) -> bool;
    /// Give back room taken by [`try_reserve`](Slot::try_reserve) and not used.
    fn unreserve(&self);
    fn priority(&self) -> i32;
    fn no_ack(&self) -> bool;
    fn exclusive(&self) -> bool;
}

#[derive(Debug)]
pub(super) struct Consumers<C> {
    list: VecDeque<C>,
    /// Whether consumers have different priorities (otherwise plain round-robin).
    mixed_priorities: bool,
    /// Whether the queue ever had a consumer (for auto-delete).
    pub had_consumer: bool,
}

impl<C: Slot> Consumers<C> {
    pub fn new() -> Consumers<C> {
        Consumers {
            list: VecDeque::new(),
            mixed_priorities: false,
            had_consumer: false,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn any_exclusive(&self) -> bool {
        self.list.iter().any(|c| c.exclusive())
    }

    pub fn add(&mut self, c: C) {
        self.list.push_back(c);
        self.had_consumer = true;
        self.update_priorities();
    }

    /// Remove the consumers `is` picks; returns how many.
    pub fn remove(&mut self, is: impl Fn(&C) -> bool) -> usize {
        let before = self.list.len();
        self.list.retain(|c| !is(c));
        self.update_priorities();
        before - self.list.len()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = C> + '_ {
        self.mixed_priorities = false;
        self.list.drain(..)
    }

    fn update_priorities(&mut self) {
        let first = self.list.front().map(|c| c.priority());
        self.mixed_priorities = self.list.iter().any(|c| Some(c.priority()) != first);
    }

    /// The next consumer to deliver to, with room already reserved; it is
    /// moved to the back of its turn (round-robin). `single_active`: only the
    /// longest-registered consumer receives (`x-single-active-consumer`).
    pub fn next(&mut self, single_active: bool) -> Option<C> {
        if single_active {
            return self.list.front().filter(|c| c.try_reserve()).cloned();
        }
        if !self.mixed_priorities {
            for _ in 0..self.list.len() {
                let c = self.list.pop_front()?;
                let ok = c.try_reserve();
                self.list.push_back(c);
                if ok {
                    return self.list.back().cloned();
                }
            }
            return None;
        }
        // Highest priority first; round-robin among equals (deque order).
        let mut levels: Vec<i32> = self.list.iter().map(|c| c.priority()).collect();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        for p in levels {
            for i in 0..self.list.len() {
                if self.list[i].priority() == p && self.list[i].try_reserve() {
                    let c = self.list.remove(i)?;
                    self.list.push_back(c.clone());
                    return Some(c);
                }
            }
        }
        None
    }
}
