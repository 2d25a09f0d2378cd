//! Which delivered records of a partition a runner may apply, across seeks.
//!
//! A subscription delivers records through a queue; when the runner seeks a partition
//! (after an offset conflict or a version switch), records delivered before the seek may
//! still be queued. Offsets cannot tell them apart by gaps, because transaction markers
//! take offsets too. What can: the stale records continue the stream after the last
//! record the runner saw, while the fresh stream after a backward seek to `T` starts at
//! the first record at or after `T`, which is at or before that last record (which is
//! itself a record at or after `T`). So after a backward seek every record above the
//! last one seen is stale until one at or below it arrives. After a forward seek, stale
//! records at or after the target are the same records the fresh stream brings, in the
//! same order, so applying them is right and the fresh copies are dropped as duplicates.
//!
//! The reasoning holds for one seek in flight at a time. The runner never seeks a
//! partition that is still rewinding; it restarts the subscription instead.

/// The runner's view of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The offset the next applied record must be at or after: the stored offset plus
    /// what the runner accepted since.
    position: u64,
    /// The offset of the last record delivered, applied or not.
    last_delivered: Option<u64>,
    /// After a backward seek: records above this are stale.
    rewind_above: Option<u64>,
}

/// What to do with a delivered record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Apply it: it is the next record of the partition.
    Apply,
    /// Already applied or before the current position.
    Duplicate,
    /// Delivered before the last seek took effect.
    Stale,
}

impl Cursor {
    /// A cursor at the stored offset, with nothing delivered yet.
    pub(crate) fn new(position: u64) -> Self {
        Self {
            position,
            last_delivered: None,
            rewind_above: None,
        }
    }

    /// The next offset to apply.
    #[cfg(test)]
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Whether stale records may still arrive (a backward seek is in flight).
    pub(crate) fn is_rewinding(&self) -> bool {
        self.rewind_above.is_some()
    }

    /// Judges one delivered record and moves past it when it is to be applied.
    pub(crate) fn deliver(&mut self, offset: u64) -> Verdict {
        let stale = matches!(self.rewind_above, Some(bound) if offset > bound);
        self.last_delivered = Some(offset);
        if stale {
            return Verdict::Stale;
        }
        self.rewind_above = None;
        if offset < self.position {
            return Verdict::Duplicate;
        }
        self.position = offset + 1;
        Verdict::Apply
    }

    /// The partition was (re)positioned at `to`: by a seek of the runner, or by a new
    /// assignment that started it at the stored offset.
    pub(crate) fn seek(&mut self, to: u64) {
        self.rewind_above = match self.last_delivered {
            Some(last) if to <= last => Some(last),
            _ => None,
        };
        self.position = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cursor: &mut Cursor, offsets: &[u64]) -> Vec<u64> {
        offsets
            .iter()
            .copied()
            .filter(|o| cursor.deliver(*o) == Verdict::Apply)
            .collect()
    }

    #[test]
    fn gaps_from_transaction_markers_are_fine() {
        let mut c = Cursor::new(0);
        assert_eq!(run(&mut c, &[0, 1, 3, 4, 6]), vec![0, 1, 3, 4, 6]);
        assert_eq!(c.position(), 7);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut c = Cursor::new(5);
        assert_eq!(run(&mut c, &[3, 4, 5, 6, 6]), vec![5, 6]);
    }

    #[test]
    fn backward_seek_drops_queued_records_until_the_fresh_stream() {
        let mut c = Cursor::new(0);
        assert_eq!(run(&mut c, &[0, 1, 2, 3]), vec![0, 1, 2, 3]);
        // A replay reset the stored offset to 1; records 4..=6 were already queued.
        c.seek(1);
        assert!(c.is_rewinding());
        assert_eq!(
            run(&mut c, &[4, 5, 6, 1, 2, 3, 4, 5, 6, 7]),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        assert!(!c.is_rewinding());
    }

    #[test]
    fn backward_seek_to_a_marker_still_finds_the_fresh_stream() {
        let mut c = Cursor::new(0);
        run(&mut c, &[0, 2, 4]);
        // Offsets 1 and 3 are markers; seek to 3, the fresh stream starts at 4.
        c.seek(3);
        assert_eq!(run(&mut c, &[6, 8, 4, 6, 8]), vec![4, 6, 8]);
    }

    #[test]
    fn forward_seek_keeps_queued_records_at_or_after_the_target() {
        let mut c = Cursor::new(0);
        run(&mut c, &[0, 1]);
        // Another owner stored 5; records 2..=7 were queued, then the fresh stream from 5.
        c.seek(5);
        assert!(!c.is_rewinding());
        assert_eq!(
            run(&mut c, &[2, 3, 4, 5, 6, 7, 5, 6, 7, 8]),
            vec![5, 6, 7, 8]
        );
    }

    #[test]
    fn a_seek_before_anything_was_delivered_needs_no_rewind() {
        let mut c = Cursor::new(10);
        c.seek(3);
        assert!(!c.is_rewinding());
        assert_eq!(run(&mut c, &[3, 4]), vec![3, 4]);
    }
}
