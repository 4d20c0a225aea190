//! The disk budget: how many segment files may exist at once. Pure arithmetic, no I/O.
//!
//! Every segment file counts at `segment_max_bytes` from the moment its creation starts until
//! its removal has succeeded, whether it is sealed, active, prepared or being prepared. A
//! failed removal keeps its share until a retry succeeds. Must never: go below zero or let a
//! file exist that is not counted.

use super::super::error::WalError;

/// Segment files counted against `wal_max_bytes`.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    segments_on_disk: u64,
    segment_max_bytes: u64,
    wal_max_bytes: u64,
}

impl Budget {
    pub fn new(segments_on_disk: u64, segment_max_bytes: u64, wal_max_bytes: u64) -> Budget {
        Budget {
            segments_on_disk,
            segment_max_bytes,
            wal_max_bytes,
        }
    }

    /// Segment files counted now.
    pub fn segments(&self) -> u64 {
        self.segments_on_disk
    }

    /// Whether one more segment file fits.
    pub fn allows_one_more(&self) -> bool {
        (self.segments_on_disk + 1).saturating_mul(self.segment_max_bytes) <= self.wal_max_bytes
    }

    /// Counts a file whose creation starts now.
    pub fn add(&mut self) {
        self.segments_on_disk += 1;
    }

    /// Gives back the shares of `count` files that are gone (removed, or never created).
    pub fn release(&mut self, count: u64) {
        assert!(
            count <= self.segments_on_disk,
            "released {count} of {} segments",
            self.segments_on_disk
        );
        self.segments_on_disk -= count;
    }

    /// The error for an append that needs a segment beyond the budget.
    pub fn full_error(&self) -> WalError {
        WalError::WalFull {
            used_bytes: self.segments_on_disk * self.segment_max_bytes,
            budget_bytes: self.wal_max_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_against_the_byte_budget() {
        let mut budget = Budget::new(1, 100, 300);
        assert!(budget.allows_one_more());
        budget.add();
        assert!(budget.allows_one_more());
        budget.add();
        assert!(!budget.allows_one_more());
        assert!(matches!(
            budget.full_error(),
            WalError::WalFull {
                used_bytes: 300,
                budget_bytes: 300
            }
        ));
        budget.release(2);
        assert_eq!(budget.segments(), 1);
    }

    #[test]
    #[should_panic(expected = "released")]
    fn releasing_more_than_counted_is_a_bug() {
        Budget::new(1, 100, 300).release(2);
    }
}
