//! What the subscription's listener knows about assigned partitions, and what the run
//! knows about each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use annals_core::Offset;
use annals_kafka_store::subscription::{AssignmentListener, TopicPartition};

use crate::cursor::Cursor;
use crate::fold::Item;
use crate::schema::Database;
use crate::store;

/// The listener's view of the partitions, shared with the run.
pub(super) struct Shared {
    pub(super) state: Mutex<SharedState>,
}

pub(super) struct SharedState {
    pub(super) version: i32,
    pub(super) next_epoch: u64,
    pub(super) partitions: HashMap<(String, u32), Assignment>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Assignment {
    pub(super) epoch: u64,
    pub(super) assigned: bool,
    pub(super) stored: u64,
    pub(super) high_water: u64,
}

impl Shared {
    pub(super) fn new(version: i32) -> Self {
        Self {
            state: Mutex::new(SharedState {
                version,
                next_epoch: 1,
                partitions: HashMap::new(),
            }),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the stored offsets of newly assigned partitions.
pub(super) struct Listener {
    pub(super) db: Database,
    pub(super) name: &'static str,
    pub(super) topic: String,
    pub(super) shared: Arc<Shared>,
    pub(super) runtime: tokio::runtime::Handle,
}

impl AssignmentListener for Listener {
    fn assigned(&self, partitions: &[TopicPartition]) -> Result<Vec<Offset>, annals_core::Error> {
        let numbers: Vec<u32> = partitions.iter().map(|tp| tp.partition).collect();
        let version = self.shared.lock().version;
        let stored = self
            .runtime
            .block_on(store::ensure_offsets(
                &self.db,
                self.name,
                version,
                &self.topic,
                &numbers,
            ))
            .map_err(|e| annals_core::Error::backend("reading stored projection offsets", e))?;
        let by_partition: HashMap<u32, store::Stored> =
            stored.into_iter().map(|s| (s.partition, s)).collect();
        let mut state = self.shared.lock();
        let mut offsets = Vec::with_capacity(partitions.len());
        for tp in partitions {
            let s = by_partition
                .get(&tp.partition)
                .copied()
                .unwrap_or(store::Stored {
                    partition: tp.partition,
                    next_offset: 0,
                    high_water: 0,
                });
            let epoch = state.next_epoch;
            state.next_epoch += 1;
            state.partitions.insert(
                (tp.topic.clone(), tp.partition),
                Assignment {
                    epoch,
                    assigned: true,
                    stored: s.next_offset,
                    high_water: s.high_water,
                },
            );
            offsets.push(Offset(s.next_offset));
        }
        Ok(offsets)
    }

    fn revoked(&self, partitions: &[TopicPartition]) {
        let mut state = self.shared.lock();
        for tp in partitions {
            let epoch = state.next_epoch;
            state.next_epoch += 1;
            if let Some(a) = state.partitions.get_mut(&(tp.topic.clone(), tp.partition)) {
                a.epoch = epoch;
                a.assigned = false;
            }
        }
    }
}

/// The run's view of one partition.
#[derive(Debug)]
pub(super) struct Local {
    pub(super) epoch: u64,
    pub(super) assigned: bool,
    pub(super) cursor: Cursor,
    pub(super) committed: u64,
    pub(super) high_water: u64,
    pub(super) caught_up: bool,
    pub(super) rate: Rate,
}

/// Events per second over the last second or so.
#[derive(Debug)]
pub(super) struct Rate {
    pub(super) since: Instant,
    pub(super) count: u64,
    pub(super) value: f64,
}

impl Rate {
    pub(super) fn new() -> Self {
        Self {
            since: Instant::now(),
            count: 0,
            value: 0.0,
        }
    }

    pub(super) fn add(&mut self, events: u64) -> f64 {
        self.count += events;
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            self.value = self.count as f64 / elapsed.as_secs_f64();
            self.count = 0;
            self.since = Instant::now();
        } else if self.value == 0.0 && elapsed > Duration::ZERO {
            self.value = self.count as f64 / elapsed.as_secs_f64().max(0.001);
        }
        self.value
    }
}

impl Local {
    /// Brings the partition's state up to the listener's latest assignment: a new
    /// assignment positions it at the stored offset, a revocation stops applying it.
    /// `false` when it cannot, because a seek is still in flight: the subscription must
    /// restart.
    pub(super) fn sync(&mut self, a: Assignment, pending: &mut Vec<Item>, partition: u32) -> bool {
        if self.epoch == a.epoch {
            return true;
        }
        if a.assigned && self.cursor.is_rewinding() {
            return false;
        }
        self.epoch = a.epoch;
        self.caught_up = false;
        pending.retain(|item| item.raw.position.as_ref().map(|x| x.partition.0) != Some(partition));
        self.assigned = a.assigned;
        if a.assigned {
            self.committed = a.stored;
            self.high_water = a.high_water;
            self.cursor.seek(a.stored);
        }
        true
    }

    pub(super) fn new(a: Assignment) -> Self {
        Self {
            epoch: a.epoch,
            assigned: a.assigned,
            cursor: Cursor::new(a.stored),
            committed: a.stored,
            high_water: a.high_water,
            caught_up: false,
            rate: Rate::new(),
        }
    }
}
