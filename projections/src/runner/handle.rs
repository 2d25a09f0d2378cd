//! The handle of a running projector and the progress it reports.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::error::Result;

/// What a projector has done so far, as its handle reports it.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// The version of the read model it writes.
    pub version: i32,
    /// Events applied (or ignored by the projection) and committed.
    pub applied: u64,
    /// Events parked as poison (or behind poison).
    pub parked: u64,
    /// Batches committed.
    pub batches: u64,
    /// Partitions of all its topics.
    pub total_partitions: usize,
    /// The partitions assigned to this projector, by topic and partition.
    pub partitions: BTreeMap<(String, u32), PartitionProgress>,
}

/// One assigned partition's progress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct PartitionProgress {
    /// The stored offset: the next record to apply.
    pub next_offset: u64,
    /// The projector reached the end of the partition and applied everything before it.
    pub caught_up: bool,
}

impl Progress {
    /// Whether every partition of every topic is assigned here and caught up.
    pub fn caught_up(&self) -> bool {
        self.total_partitions > 0
            && self.partitions.len() == self.total_partitions
            && self.partitions.values().all(|p| p.caught_up)
    }

    /// Whether every partition assigned here is caught up (and at least one is).
    pub fn assigned_caught_up(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.values().all(|p| p.caught_up)
    }
}

/// Runs a projection against Kafka event topics with its read model in Postgres.
/// A running projector.
#[derive(Debug)]
pub struct ProjectorHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    outcome: Option<Result<()>>,
    progress: watch::Receiver<Progress>,
}

impl ProjectorHandle {
    pub(super) fn new(
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<()>>,
        progress: watch::Receiver<Progress>,
    ) -> Self {
        Self {
            stop: Some(stop),
            task: Some(task),
            outcome: None,
            progress,
        }
    }

    /// The progress now.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits until `done` holds for the progress, at most `timeout`. `Ok(false)` on
    /// timeout; the projector's error if it stopped.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Progress) -> bool,
    ) -> Result<bool> {
        let waited = tokio::time::timeout(timeout, self.progress.wait_for(|p| done(p)))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(true),
            Err(_) => Ok(false),
            Ok(false) => {
                self.finish().await?;
                let progress = self.progress.borrow().clone();
                Ok(done(&progress))
            }
        }
    }

    /// Waits for the next change of progress: `Ok(false)` when the projector stopped
    /// without an error, its error if it stopped on one.
    pub(crate) async fn changed(&mut self) -> Result<bool> {
        if self.progress.changed().await.is_ok() {
            return Ok(true);
        }
        self.finish().await?;
        Ok(false)
    }

    async fn finish(&mut self) -> Result<()> {
        if let Some(task) = self.task.take() {
            let outcome = match task.await {
                Ok(outcome) => outcome,
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.outcome = Some(outcome);
        }
        match self.outcome.as_ref() {
            Some(Err(_)) => self.outcome.take().unwrap_or(Ok(())),
            _ => Ok(()),
        }
    }

    /// Stops after the batch in flight commits, leaves the groups and returns the
    /// projector's error if it had stopped on one.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finish().await
    }

    /// Waits until the projector stops by itself (it only does on an error).
    pub async fn join(mut self) -> Result<()> {
        self.finish().await
    }

    /// Stops at once, as a crash would: a batch in flight is rolled back.
    pub async fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}
