//! An in-memory event store with the same semantics as the Kafka store: topics of
//! partitions with offsets, murmur2 placement, one authoritative writer, atomic
//! multi-event appends and verified reads. For unit tests and the zero-setup demo; it
//! keeps nothing when the process ends.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use futures::stream;

use crate::envelope::{RawEnvelope, UncommittedEvent};
use crate::error::Error;
use crate::hash::{ChainVerifier, EventHash};
use crate::ids::{AggregateId, AggregateRef, Offset, Partition, Position, Version};
use crate::partition::partition_for;
use crate::store::{EventStore, EventStream, ExpectedVersion};

/// The in-memory event store. Cheap to create; share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryEventStore {
    prefix: String,
    partitions: u32,
    max_payload_bytes: usize,
    topics: Mutex<HashMap<String, Topic>>,
}

#[derive(Debug)]
struct Topic {
    name: String,
    partitions: Vec<Vec<RawEnvelope>>,
    heads: HashMap<AggregateId, Head>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    version: Version,
    hash: EventHash,
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// A store with topic prefix `annals` and 4 partitions per topic.
    pub fn new() -> Self {
        Self {
            prefix: "annals".to_owned(),
            partitions: 4,
            max_payload_bytes: 1024 * 1024,
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the topic prefix (`{prefix}.{aggregate}.events`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the number of partitions of every topic.
    ///
    /// # Panics
    /// If `partitions` is 0.
    #[track_caller]
    #[must_use]
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        assert!(partitions > 0, "a topic needs at least one partition");
        self.partitions = partitions;
        self
    }

    /// Sets the largest payload accepted (default 1 MiB, like Kafka's default record
    /// limit).
    #[must_use]
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Rewrites a stored event in place, bypassing every check.
    ///
    /// This exists to demonstrate that tampering is detected: reads after it fail with
    /// [`Error::HashChain`] or [`Error::SequenceGap`]. Never call it outside tests and
    /// demos. Returns whether the event existed.
    pub fn tamper_with(
        &self,
        aggregate_type: &str,
        position: (Partition, Offset),
        edit: impl FnOnce(&mut RawEnvelope),
    ) -> bool {
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(aggregate_type) else {
            return false;
        };
        let event = usize::try_from(position.0.0)
            .ok()
            .and_then(|p| topic.partitions.get_mut(p))
            .and_then(|log| log.get_mut(usize::try_from(position.1.0).ok()?));
        match event {
            Some(event) => {
                edit(event);
                true
            }
            None => false,
        }
    }

    /// Removes a stored event, bypassing every check (see [`Self::tamper_with`]).
    pub fn tamper_remove(&self, aggregate_type: &str, position: (Partition, Offset)) -> bool {
        let mut topics = self.lock();
        let Some(log) = topics
            .get_mut(aggregate_type)
            .and_then(|t| t.partitions.get_mut(position.0.0 as usize))
        else {
            return false;
        };
        let Ok(index) = usize::try_from(position.1.0) else {
            return false;
        };
        if index >= log.len() {
            return false;
        }
        log.remove(index);
        true
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // A panic while holding the lock cannot leave a half-applied append: appends
        // validate everything before they push.
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn topic_name(&self, aggregate_type: &str) -> String {
        format!("{}.{}.events", self.prefix, aggregate_type)
    }

    fn snapshot_partition(&self, aggregate_type: &str, partition: Partition) -> Vec<RawEnvelope> {
        self.lock()
            .get(aggregate_type)
            .and_then(|t| t.partitions.get(partition.0 as usize))
            .cloned()
            .unwrap_or_default()
    }
}

fn validate_aggregate_type(aggregate: &AggregateRef) -> Result<(), Error> {
    AggregateRef::validate_type(&aggregate.aggregate_type).map_err(|reason| Error::InvalidRequest {
        aggregate: aggregate.clone(),
        reason,
    })
}

/// Verifies events in order, stopping at the first failure.
fn verified(
    events: Vec<RawEnvelope>,
    mut verifier_for: impl FnMut(&AggregateId) -> ChainVerifier,
) -> Vec<Result<RawEnvelope, Error>> {
    let mut verifiers: HashMap<AggregateId, ChainVerifier> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let v = verifiers
            .entry(event.aggregate_id.clone())
            .or_insert_with(|| verifier_for(&event.aggregate_id));
        match v.verify(&event) {
            Ok(()) => out.push(Ok(event)),
            Err(e) => {
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn append(
        &self,
        aggregate_type: &str,
        aggregate_id: &AggregateId,
        expected: ExpectedVersion,
        events: Vec<UncommittedEvent>,
    ) -> Result<Vec<RawEnvelope>, Error> {
        let aggregate = AggregateRef::new(aggregate_type, aggregate_id.clone());
        validate_aggregate_type(&aggregate)?;
        if let Err(reason) = aggregate_id.validate() {
            return Err(Error::InvalidRequest {
                aggregate,
                reason: reason.to_owned(),
            });
        }
        if events.is_empty() {
            return Err(Error::InvalidRequest {
                aggregate,
                reason: "append of no events".to_owned(),
            });
        }
        if let Some(big) = events
            .iter()
            .find(|e| e.payload.bytes.len() > self.max_payload_bytes)
        {
            return Err(Error::InvalidRequest {
                aggregate,
                reason: format!(
                    "payload of `{}` is {} bytes, more than the limit of {}",
                    big.event_type,
                    big.payload.bytes.len(),
                    self.max_payload_bytes
                ),
            });
        }

        let topic_name = self.topic_name(aggregate_type);
        let partition = partition_for(aggregate_id.as_bytes(), self.partitions);
        let mut topics = self.lock();
        let topic = topics
            .entry(aggregate_type.to_owned())
            .or_insert_with(|| Topic {
                name: topic_name,
                partitions: vec![Vec::new(); self.partitions as usize],
                heads: HashMap::new(),
            });
        let head = topic.heads.get(aggregate_id).copied().unwrap_or(Head {
            version: Version::INITIAL,
            hash: EventHash::ZERO,
        });
        if !expected.admits(head.version) {
            return Err(Error::Conflict {
                aggregate,
                expected,
                actual: head.version,
            });
        }

        let log = &mut topic.partitions[partition as usize];
        let mut stored = Vec::with_capacity(events.len());
        let (mut version, mut hash) = (head.version, head.hash);
        for event in events {
            version = version.next();
            let mut sealed = event.seal(&aggregate, version, hash);
            hash = sealed.hash;
            sealed.position = Some(Position {
                topic: topic.name.clone(),
                partition: Partition(partition),
                offset: Offset((log.len() + stored.len()) as u64),
            });
            stored.push(sealed);
        }
        log.extend(stored.iter().cloned());
        topic
            .heads
            .insert(aggregate_id.clone(), Head { version, hash });
        Ok(stored)
    }

    fn read_aggregate<'a>(
        &'a self,
        aggregate_type: &'a str,
        aggregate_id: &'a AggregateId,
        from: Version,
    ) -> EventStream<'a> {
        let events: Vec<RawEnvelope> = {
            let topics = self.lock();
            match topics.get(aggregate_type) {
                None => Vec::new(),
                Some(topic) => {
                    let p = partition_for(aggregate_id.as_bytes(), self.partitions) as usize;
                    topic.partitions[p]
                        .iter()
                        .filter(|e| &e.aggregate_id == aggregate_id)
                        .cloned()
                        .collect()
                }
            }
        };
        let results = verified(events, |_| ChainVerifier::from_start())
            .into_iter()
            .filter(move |r| r.as_ref().map_or(true, |e| e.sequence >= from));
        Box::pin(stream::iter(results))
    }

    fn read_partition<'a>(
        &'a self,
        aggregate_type: &'a str,
        partition: Partition,
        from: Offset,
    ) -> EventStream<'a> {
        let all = self.snapshot_partition(aggregate_type, partition);
        let start = usize::try_from(from.0).unwrap_or(usize::MAX).min(all.len());
        let events = all[start..].to_vec();
        let results = verified(events, |_| {
            if start == 0 {
                ChainVerifier::from_start()
            } else {
                ChainVerifier::anchored_at_first_seen()
            }
        });
        Box::pin(stream::iter(results))
    }

    async fn partition_count(&self, _aggregate_type: &str) -> Result<u32, Error> {
        Ok(self.partitions)
    }

    fn topic_for(&self, aggregate_type: &str) -> String {
        self.topic_name(aggregate_type)
    }
}
