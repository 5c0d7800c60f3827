//! Publisher confirms for one channel, sans-IO.
//!
//! Sequence numbers start at 1. A message is confirmed once every queue has it:
//! at once for transient messages, after the store's group commit for
//! persistent messages in durable queues. Confirms go out in order and are
//! coalesced with `multiple`; while a group commit is outstanding, later
//! confirms wait behind it so that ordering holds. A queue that refuses a
//! message (`x-overflow: reject-publish`) gets it nacked.

use std::collections::{BTreeSet, VecDeque};

/// A confirm frame to send: (ack?, delivery tag, multiple).
pub(super) type ConfirmFrame = (bool, u64, bool);

#[derive(Debug, Default)]
pub(super) struct Confirms {
    next_seq: u64,
    /// Every sequence number up to this one has been confirmed.
    acked_upto: u64,
    /// A message in the current batch must reach the disk before its confirm.
    batch_needs_sync: bool,
    /// Outstanding group commits: the highest sequence number each covers.
    waiting: VecDeque<u64>,
    /// Sequence numbers already nacked individually (not to be acked later).
    nacked: BTreeSet<u64>,
}

impl Confirms {
    /// Note a published message; returns its sequence number.
    pub fn published(
        &mut self,
        needs_sync: bool,
        rejected: bool,
        out: &mut Vec<ConfirmFrame>,
    ) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        if rejected {
            out.push((false, seq, false));
            self.nacked.insert(seq);
        } else if needs_sync {
            self.batch_needs_sync = true;
        }
        seq
    }

    /// The frames handled in one read are done: confirm what can be confirmed.
    /// Returns the sequence number a new group commit must cover, if any.
    pub fn end_of_batch(&mut self, out: &mut Vec<ConfirmFrame>) -> Option<u64> {
        if self.batch_needs_sync {
            self.batch_needs_sync = false;
            self.waiting.push_back(self.next_seq);
            return Some(self.next_seq);
        }
        if self.waiting.is_empty() {
            self.release(self.next_seq, true, out);
        }
        None
    }

    /// A group commit covering up to `upto` finished (`ok`: it reached the disk).
    pub fn persisted(&mut self, upto: u64, ok: bool, out: &mut Vec<ConfirmFrame>) {
        if self.waiting.front() == Some(&upto) {
            self.waiting.pop_front();
        }
        self.release(upto, ok, out);
        if ok && self.waiting.is_empty() {
            self.release(self.next_seq, true, out);
        }
    }

    /// Confirm everything up to `limit` (ack, or nack when `ok` is false).
    fn release(&mut self, limit: u64, ok: bool, out: &mut Vec<ConfirmFrame>) {
        if limit <= self.acked_upto {
            return;
        }
        let first = self.acked_upto + 1;
        if self.nacked.range(first..=limit).next().is_none() {
            out.push((ok, limit, limit > first));
        } else {
            for seq in first..=limit {
                if !self.nacked.contains(&seq) {
                    out.push((ok, seq, false));
                }
            }
        }
        self.nacked = self.nacked.split_off(&(limit + 1));
        self.acked_upto = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_confirms_coalesce_per_batch() {
        let mut c = Confirms::default();
        let mut out = Vec::new();
        for _ in 0..3 {
            c.published(false, false, &mut out);
        }
        assert_eq!(c.end_of_batch(&mut out), None);
        c.published(false, false, &mut out);
        c.end_of_batch(&mut out);
        assert_eq!(out, vec![(true, 3, true), (true, 4, false)]);
    }

    #[test]
    fn persistent_confirms_wait_for_the_group_commit() {
        let mut c = Confirms::default();
        let mut out = Vec::new();
        c.published(false, false, &mut out);
        c.published(true, false, &mut out);
        assert_eq!(c.end_of_batch(&mut out), Some(2));
        assert!(out.is_empty());
        // A later transient message waits behind the outstanding commit.
        c.published(false, false, &mut out);
        assert_eq!(c.end_of_batch(&mut out), None);
        assert!(out.is_empty());
        c.persisted(2, true, &mut out);
        assert_eq!(out, vec![(true, 2, true), (true, 3, false)]);
    }

    #[test]
    fn nacks_are_never_followed_by_an_ack_for_the_same_tag() {
        let mut c = Confirms::default();
        let mut out = Vec::new();
        c.published(false, false, &mut out);
        c.published(false, true, &mut out);
        c.published(false, false, &mut out);
        c.end_of_batch(&mut out);
        assert_eq!(
            out,
            vec![(false, 2, false), (true, 1, false), (true, 3, false)]
        );
    }

    #[test]
    fn failed_commit_nacks() {
        let mut c = Confirms::default();
        let mut out = Vec::new();
        c.published(true, false, &mut out);
        c.end_of_batch(&mut out);
        c.persisted(1, false, &mut out);
        assert_eq!(out, vec![(false, 1, false)]);
    }
}
