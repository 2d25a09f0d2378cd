//! The run loop: deliveries in, batches committed with their offsets, conflicts
//! resolved by seeking.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{Offset, RawEnvelope};
use annals_kafka_store::KafkaStoreOptions;
use annals_kafka_store::subscription::{Delivery, Subscription, TopicPartition};
use tokio::sync::{oneshot, watch};

use super::assignment::{Assignment, Listener, Local, Shared};
use super::handle::{PartitionProgress, Progress};
use super::{Mode, ProjectorOptions};
use crate::cursor::Verdict;
use crate::error::{ProjectionError, Result};
use crate::fold::{Item, Settings};
use crate::projection::Projection;
use crate::schema::{Database, use_schema, version_schema};
use crate::store::{self, Advance};

/// One topic's subscription and the events waiting to be applied.
pub(super) struct Feed {
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) listener: Arc<Listener>,
    pub(super) subscription: Option<Subscription>,
    pub(super) local: HashMap<u32, Local>,
    pub(super) pending: Vec<Item>,
    pub(super) pending_since: Option<Instant>,
}

pub(super) struct Run {
    pub(super) db: Database,
    pub(super) kafka: KafkaStoreOptions,
    pub(super) projection: Projection,
    pub(super) settings: Settings,
    pub(super) options: ProjectorOptions,
    pub(super) mode: Mode,
    pub(super) shared: Arc<Shared>,
    pub(super) feeds: Vec<Feed>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) batches_begun: u64,
}

/// What the loop waits for.
pub(super) enum Wake {
    Stop,
    Delivery(usize, Option<Delivery>),
    Deadline,
    Refresh,
}

impl Run {
    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<()> {
        let outcome = self.run_loop(&mut stop).await;
        for feed in &mut self.feeds {
            if let Some(subscription) = feed.subscription.take() {
                subscription.stop().await;
            }
        }
        if let Err(e) = &outcome {
            store::record_error(&self.db, self.projection.name(), e).await;
        }
        outcome
    }

    pub(super) fn version(&self) -> i32 {
        self.shared.lock().version
    }

    pub(super) async fn run_loop(&mut self, stop: &mut oneshot::Receiver<()>) -> Result<()> {
        let mut refresh = tokio::time::interval(self.options.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let deadline = self
                .feeds
                .iter()
                .filter_map(|f| f.pending_since)
                .min()
                .map(|since| since + self.options.batch_window);
            let wake = {
                let next = futures::future::select_all(self.feeds.iter_mut().map(|f| {
                    Box::pin(async move {
                        match f.subscription.as_mut() {
                            Some(s) => s.next().await,
                            None => std::future::pending().await,
                        }
                    })
                }));
                tokio::select! {
                    _ = &mut *stop => Wake::Stop,
                    (delivery, index, _) = next => Wake::Delivery(index, delivery),
                    () = sleep_until(deadline) => Wake::Deadline,
                    _ = refresh.tick() => Wake::Refresh,
                }
            };
            match wake {
                Wake::Stop => {
                    for i in 0..self.feeds.len() {
                        self.flush(i).await?;
                    }
                    return Ok(());
                }
                Wake::Deadline => {
                    let now = Instant::now();
                    for i in 0..self.feeds.len() {
                        if self.feeds[i]
                            .pending_since
                            .is_some_and(|s| s + self.options.batch_window <= now)
                        {
                            self.flush(i).await?;
                        }
                    }
                }
                Wake::Refresh => self.refresh().await?,
                Wake::Delivery(i, None) => {
                    return Err(ProjectionError::Source {
                        projection: self.projection.name().to_owned(),
                        source: Box::new(annals_core::Error::backend(
                            format!("subscription to `{}`", self.feeds[i].topic),
                            "the subscription ended",
                        )),
                    });
                }
                Wake::Delivery(i, Some(delivery)) => self.on_delivery(i, delivery).await?,
            }
        }
    }

    pub(super) async fn on_delivery(&mut self, i: usize, delivery: Delivery) -> Result<()> {
        match delivery {
            Delivery::Events(events) => {
                let restart = self.accept(i, events);
                if restart {
                    self.restart(i).await?;
                } else if self.feeds[i].pending.len() >= self.options.batch_size {
                    self.flush(i).await?;
                }
            }
            Delivery::CaughtUp(tp) => {
                self.flush(i).await?;
                let shared = self
                    .shared
                    .lock()
                    .partitions
                    .get(&(tp.topic.clone(), tp.partition))
                    .copied();
                let Some(assignment) = shared else {
                    return Ok(());
                };
                let feed = &mut self.feeds[i];
                let local = feed
                    .local
                    .entry(tp.partition)
                    .or_insert_with(|| Local::new(assignment));
                if !local.sync(assignment, &mut feed.pending, tp.partition) {
                    return self.restart(i).await;
                }
                if local.assigned && !local.cursor.is_rewinding() {
                    local.caught_up = true;
                }
                self.publish();
            }
            Delivery::Malformed(source) => {
                self.flush(i).await?;
                return Err(ProjectionError::Malformed {
                    projection: self.projection.name().to_owned(),
                    source: Box::new(source),
                });
            }
            Delivery::Failed(source) => {
                return Err(ProjectionError::Source {
                    projection: self.projection.name().to_owned(),
                    source: Box::new(source),
                });
            }
        }
        Ok(())
    }

    /// Sorts delivered events into the pending batch. Returns whether the subscription
    /// must be restarted (a partition was repositioned while a seek was in flight).
    pub(super) fn accept(&mut self, i: usize, events: Vec<RawEnvelope>) -> bool {
        let build = matches!(self.mode, Mode::Build(_));
        let shared: HashMap<u32, Assignment> = {
            let state = self.shared.lock();
            let topic = &self.feeds[i].topic;
            state
                .partitions
                .iter()
                .filter(|((t, _), _)| t == topic)
                .map(|((_, p), a)| (*p, *a))
                .collect()
        };
        let feed = &mut self.feeds[i];
        let mut restart = false;
        let mut behind = false;
        for raw in events {
            let Some(position) = raw.position.clone() else {
                continue;
            };
            let p = position.partition.0;
            let offset = position.offset.0;
            let Some(assignment) = shared.get(&p).copied() else {
                continue;
            };
            let local = feed
                .local
                .entry(p)
                .or_insert_with(|| Local::new(assignment));
            if !local.sync(assignment, &mut feed.pending, p) {
                restart = true;
                continue;
            }
            let verdict = local.cursor.deliver(offset);
            if !local.assigned || verdict != Verdict::Apply {
                continue;
            }
            if local.caught_up {
                local.caught_up = false;
                behind = true;
            }
            let replaying = build || offset < local.high_water;
            feed.pending.push(Item { raw, replaying });
            feed.pending_since.get_or_insert_with(Instant::now);
        }
        if behind {
            self.publish();
        }
        restart
    }

    /// Replaces a feed's subscription with a new one: nothing delivered by the old one
    /// can arrive any more, so every partition starts clean at its stored offset.
    pub(super) async fn restart(&mut self, i: usize) -> Result<()> {
        tracing::info!(
            projection = self.projection.name(),
            topic = self.feeds[i].topic,
            "restarting the subscription after overlapping repositioning"
        );
        let feed = &mut self.feeds[i];
        if let Some(old) = feed.subscription.take() {
            old.stop().await;
        }
        feed.local.clear();
        feed.pending.clear();
        feed.pending_since = None;
        let subscription = Subscription::start(
            &self.kafka,
            &feed.group,
            &feed.topic,
            feed.listener.clone(),
            self.options.batch_size,
        )
        .map_err(|source| ProjectionError::Kafka {
            context: format!("subscribing to `{}`", feed.topic),
            source: Box::new(source),
        })?;
        feed.subscription = Some(subscription);
        self.publish();
        Ok(())
    }

    /// Applies a feed's pending batch: one transaction for the read model's writes and
    /// the offsets' compare-and-set. Partitions in conflict are dropped from the batch
    /// and repositioned; the rest is applied again.
    pub(super) async fn flush(&mut self, i: usize) -> Result<()> {
        let mut items = std::mem::take(&mut self.feeds[i].pending);
        self.feeds[i].pending_since = None;
        let mut failures = 0u32;
        loop {
            let local = &self.feeds[i].local;
            items.retain(|item| {
                item.raw
                    .position
                    .as_ref()
                    .and_then(|p| local.get(&p.partition.0))
                    .is_some_and(|l| l.assigned)
            });
            if items.is_empty() {
                break;
            }
            match self.try_commit(i, &items).await {
                Ok(Committed::Done(halt)) => {
                    self.publish();
                    return match halt {
                        Some(e) => Err(e),
                        None => Ok(()),
                    };
                }
                Ok(Committed::Conflicts(partitions)) => {
                    items.retain(|item| {
                        item.raw
                            .position
                            .as_ref()
                            .is_some_and(|p| !partitions.contains(&p.partition.0))
                    });
                    if self.resolve_conflicts(i, &partitions).await? {
                        // The version changed: nothing pending belongs to it.
                        items.clear();
                    }
                }
                Err(e) if e.is_transient() && failures < 5 => {
                    failures += 1;
                    tracing::warn!(projection = self.projection.name(), error = %e, attempt = failures, "batch failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100) * failures).await;
                }
                Err(e) => return Err(e),
            }
        }
        self.publish();
        Ok(())
    }

    pub(super) async fn try_commit(&mut self, i: usize, items: &[Item]) -> Result<Committed> {
        let name = self.projection.name();
        let version = self.version();
        let topic = self.feeds[i].topic.clone();
        let mut tx = self.db.begin("applying a batch").await?;
        use_schema(&mut tx, &version_schema(name, version)).await?;
        let applied = self
            .projection
            .erased
            .apply(
                &mut tx,
                version,
                items,
                &self.projection.decoding,
                &self.settings,
            )
            .await?;
        let consumed = &items[..applied.consumed.min(items.len())];
        // The new offset of each partition: past its last consumed event, or at the
        // event the projection halted on.
        let mut new_offsets: BTreeMap<u32, u64> = BTreeMap::new();
        for item in consumed {
            if let Some(p) = &item.raw.position {
                new_offsets.insert(p.partition.0, p.offset.0 + 1);
            }
        }
        if applied.halt.is_some()
            && let Some(p) = items
                .get(applied.consumed)
                .and_then(|item| item.raw.position.as_ref())
        {
            // The stored offset points exactly at the event the projection halts on.
            new_offsets.insert(p.partition.0, p.offset.0);
        }
        let feed = &mut self.feeds[i];
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for item in consumed {
            if let Some(p) = &item.raw.position {
                *counts.entry(p.partition.0).or_default() += 1;
            }
        }
        let advances: Vec<Advance> = new_offsets
            .iter()
            .filter_map(|(p, new)| {
                let local = feed.local.get_mut(p)?;
                let rate = local.rate.add(counts.get(p).copied().unwrap_or(0));
                Some(Advance {
                    partition: *p,
                    expected: local.committed,
                    new: *new,
                    events_per_sec: rate,
                })
            })
            .collect();
        if advances.len() < new_offsets.len() {
            // A partition without a position here must not be written unadvanced.
            let missing: Vec<u32> = new_offsets
                .keys()
                .filter(|p| !advances.iter().any(|a| a.partition == **p))
                .copied()
                .collect();
            tx.rollback()
                .await
                .map_err(|e| ProjectionError::db("rolling back a batch", e))?;
            return Ok(Committed::Conflicts(missing));
        }
        let advanced = store::advance(&mut tx, name, version, &topic, &advances).await?;
        if advanced.len() < advances.len() {
            let done: Vec<u32> = advanced.iter().map(|(p, _)| *p).collect();
            let conflicts: Vec<u32> = advances
                .iter()
                .map(|a| a.partition)
                .filter(|p| !done.contains(p))
                .collect();
            tx.rollback()
                .await
                .map_err(|e| ProjectionError::db("rolling back a conflicting batch", e))?;
            return Ok(Committed::Conflicts(conflicts));
        }
        self.batches_begun += 1;
        if let Some(n) = self.options.fail_before_commit_every
            && self.batches_begun.is_multiple_of(n)
        {
            tx.rollback()
                .await
                .map_err(|e| ProjectionError::db("rolling back an injected failure", e))?;
            return Err(ProjectionError::DatabaseUnavailable {
                context: "committing a batch (injected failure)".to_owned(),
                hint: "fault injection",
                source: sqlx::Error::PoolTimedOut,
            });
        }
        tx.commit()
            .await
            .map_err(|e| ProjectionError::db(format!("committing a batch of {name}"), e))?;
        let feed = &mut self.feeds[i];
        for (p, high_water) in advanced {
            if let Some(local) = feed.local.get_mut(&p) {
                local.committed = new_offsets.get(&p).copied().unwrap_or(local.committed);
                local.high_water = local.high_water.max(high_water);
            }
        }
        let parked = applied.parked.len() as u64;
        self.progress.send_modify(|progress| {
            progress.applied += consumed.len() as u64 - parked.min(consumed.len() as u64);
            progress.parked += parked;
            progress.batches += 1;
        });
        Ok(Committed::Done(applied.halt))
    }

    /// Re-reads the stored offsets of conflicting partitions and seeks there. Returns
    /// whether the version changed (every partition was repositioned).
    pub(super) async fn resolve_conflicts(&mut self, i: usize, partitions: &[u32]) -> Result<bool> {
        let name = self.projection.name();
        let row = store::require_row(self.db.pool(), name).await?;
        let version = self.version();
        match self.mode {
            Mode::Build(v) if row.building_version != Some(v) => {
                return Err(ProjectionError::RebuildAborted {
                    projection: name.to_owned(),
                    version: v,
                });
            }
            Mode::Live if row.live_version != version => {
                tracing::info!(
                    projection = name,
                    from = version,
                    to = row.live_version,
                    "following the switch to a new live version"
                );
                self.shared.lock().version = row.live_version;
                for f in 0..self.feeds.len() {
                    let assigned: Vec<u32> = self.feeds[f]
                        .local
                        .iter()
                        .filter(|(_, l)| l.assigned)
                        .map(|(p, _)| *p)
                        .collect();
                    self.reposition(f, &assigned, true).await?;
                }
                return Ok(true);
            }
            _ => {}
        }
        self.reposition(i, partitions, false).await?;
        Ok(false)
    }

    /// Seeks partitions to their stored offsets (creating rows for a new version).
    pub(super) async fn reposition(
        &mut self,
        i: usize,
        partitions: &[u32],
        create: bool,
    ) -> Result<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let name = self.projection.name();
        let version = self.version();
        let topic = self.feeds[i].topic.clone();
        let stored = if create {
            store::ensure_offsets(&self.db, name, version, &topic, partitions).await?
        } else {
            store::read_offsets(&self.db, name, version, &topic, partitions).await?
        };
        let mut restart = false;
        let feed = &mut self.feeds[i];
        feed.pending.retain(|item| {
            item.raw
                .position
                .as_ref()
                .is_some_and(|p| !partitions.contains(&p.partition.0))
        });
        for s in stored {
            let Some(local) = feed.local.get_mut(&s.partition) else {
                continue;
            };
            if local.cursor.is_rewinding() {
                restart = true;
                continue;
            }
            local.cursor.seek(s.next_offset);
            local.committed = s.next_offset;
            local.high_water = s.high_water;
            local.caught_up = false;
            if let Some(subscription) = &feed.subscription {
                subscription.seek(
                    TopicPartition {
                        topic: topic.clone(),
                        partition: s.partition,
                    },
                    Offset(s.next_offset),
                );
            }
        }
        if restart {
            self.restart(i).await?;
        }
        self.publish();
        Ok(())
    }

    /// Checks, while idle, whether an operator moved the stored offsets or the live
    /// version; repositions if so.
    pub(super) async fn refresh(&mut self) -> Result<()> {
        let name = self.projection.name();
        let row = store::require_row(self.db.pool(), name).await?;
        let version = self.version();
        match self.mode {
            Mode::Build(v) if row.building_version != Some(v) => {
                return Err(ProjectionError::RebuildAborted {
                    projection: name.to_owned(),
                    version: v,
                });
            }
            Mode::Live if row.live_version != version => {
                self.resolve_conflicts(0, &[]).await?;
                return Ok(());
            }
            _ => {}
        }
        for i in 0..self.feeds.len() {
            if !self.feeds[i].pending.is_empty() {
                continue;
            }
            let topic = self.feeds[i].topic.clone();
            let assigned: Vec<u32> = self.feeds[i]
                .local
                .iter()
                .filter(|(_, l)| l.assigned)
                .map(|(p, _)| *p)
                .collect();
            if assigned.is_empty() {
                continue;
            }
            let stored = store::read_offsets(&self.db, name, version, &topic, &assigned).await?;
            let moved: Vec<u32> = stored
                .iter()
                .filter(|s| {
                    self.feeds[i]
                        .local
                        .get(&s.partition)
                        .is_some_and(|l| l.committed != s.next_offset)
                })
                .map(|s| s.partition)
                .collect();
            if !moved.is_empty() {
                tracing::info!(projection = name, topic, partitions = ?moved, "stored offsets moved, seeking");
                self.reposition(i, &moved, false).await?;
            }
        }
        Ok(())
    }

    /// Publishes the progress. Partitions count as the listener assigns them now; one
    /// whose assignment changed since the run last saw it is not caught up, whatever it
    /// was before.
    pub(super) fn publish(&self) {
        let version = self.version();
        let mut partitions = BTreeMap::new();
        {
            let state = self.shared.lock();
            for feed in &self.feeds {
                for ((topic, p), a) in &state.partitions {
                    if topic != &feed.topic || !a.assigned {
                        continue;
                    }
                    let local = feed.local.get(p).filter(|l| l.epoch == a.epoch);
                    partitions.insert(
                        (topic.clone(), *p),
                        PartitionProgress {
                            next_offset: local.map_or(a.stored, |l| l.committed),
                            caught_up: local.is_some_and(|l| l.assigned && l.caught_up),
                        },
                    );
                }
            }
        }
        self.progress.send_modify(|progress| {
            progress.version = version;
            progress.partitions = partitions;
        });
    }
}

pub(super) enum Committed {
    /// Committed; the error that halts the projection after it, if any.
    Done(Option<ProjectionError>),
    /// Nothing committed: these partitions' stored offsets were not the expected ones.
    Conflicts(Vec<u32>),
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
