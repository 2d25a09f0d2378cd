//! The processor of one command partition: restores the partition's aggregates, then turns
//! commands into events, snapshots, replies and the consumed offset, all in one Kafka
//! transaction per batch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_core::hash::{ChainVerifier, EventHash};
use annals_core::repository::{decode_event, encode_event};
use annals_core::{
    Aggregate, AggregateId, AggregateRef, Command, CommandContext, CommandId, Error, EventId,
    Offset, Partition, Position, RawEnvelope, Version,
};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset as KOffset, TopicPartitionList};

use super::protocol::{CommandRecord, Outcome, PROTOCOL_VERSION, ReplyRecord, SnapshotRecord};
use super::runtime::Runtime;
use crate::reader::{partition_i32, read_to_end};
use crate::txn::{TxnError, TxnProducer, delivered_offset};
use crate::wire;

/// What the consumer thread sends a worker.
pub(crate) enum WorkerMsg {
    /// A command record of the worker's partition.
    Command(OwnedMessage),
    /// The partition is revoked: stop before writing anything more.
    Stop,
}

/// One aggregate's authoritative state on this partition.
struct Entry<A> {
    state: A,
    version: Version,
    hash: EventHash,
}

impl<A: Default> Default for Entry<A> {
    fn default() -> Self {
        Self {
            state: A::default(),
            version: Version::INITIAL,
            hash: EventHash::ZERO,
        }
    }
}

/// Outcomes of recent commands, so a retried command gets its first outcome back.
struct Recent {
    capacity: usize,
    order: VecDeque<CommandId>,
    outcomes: HashMap<CommandId, (Vec<RawEnvelope>, Version)>,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            outcomes: HashMap::new(),
        }
    }

    fn record(&mut self, event: &RawEnvelope) {
        let id = event.metadata.command_id;
        match self.outcomes.get_mut(&id) {
            Some((events, version)) => {
                events.push(event.clone());
                *version = event.sequence;
            }
            None => {
                self.outcomes
                    .insert(id, (vec![event.clone()], event.sequence));
                self.order.push_back(id);
                while self.order.len() > self.capacity {
                    if let Some(old) = self.order.pop_front() {
                        self.outcomes.remove(&old);
                    }
                }
            }
        }
    }

    fn get(&self, id: &CommandId) -> Option<&(Vec<RawEnvelope>, Version)> {
        self.outcomes.get(id)
    }
}

/// A live partition: the fenced producer and the restored aggregates.
struct Live<A> {
    producer: TxnProducer,
    aggregates: HashMap<AggregateId, Entry<A>>,
    recent: Recent,
}

/// The worker's fixed context.
pub(crate) struct Worker<A: Aggregate> {
    pub(crate) runtime: Arc<Runtime<A>>,
    pub(crate) partition: u32,
    pub(crate) group: ConsumerGroupMetadata,
    pub(crate) live_partitions: Arc<Mutex<std::collections::BTreeSet<u32>>>,
}

enum Reply {
    Now(Outcome),
    Events {
        range: std::ops::Range<usize>,
        version: Version,
    },
}

impl<A: Aggregate> Worker<A> {
    /// The worker's thread body.
    pub(crate) fn run(self, rx: Receiver<WorkerMsg>) {
        let p = self.partition;
        let mut live: Option<Live<A>> = None;
        let mut pending: Vec<OwnedMessage> = Vec::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            if live.is_none() {
                match self.restore() {
                    Ok(l) => {
                        live = Some(l);
                        backoff = Duration::from_millis(100);
                        self.set_live(true);
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "cannot restore partition; retrying");
                        self.runtime.record_error(p, &e);
                        if self.wait_or_stop(&rx, &mut pending, backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            if pending.is_empty() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(WorkerMsg::Command(m)) => pending.push(m),
                    Ok(WorkerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => continue,
                }
            }
            while pending.len() < self.runtime.options.max_batch {
                match rx.try_recv() {
                    Ok(WorkerMsg::Command(m)) => pending.push(m),
                    // Revoked: write nothing more; the new owner re-reads these commands.
                    Ok(WorkerMsg::Stop) => return,
                    Err(_) => break,
                }
            }
            let Some(current) = live.as_mut() else {
                continue;
            };
            match self.process(current, &pending) {
                Ok(()) => pending.clear(),
                Err(TxnError::Fenced(e)) => {
                    tracing::warn!(partition = p, error = %e, "fenced: another processor owns the partition");
                    self.set_live(false);
                    return;
                }
                Err(TxnError::Failed(e)) => {
                    // Unknown outcome: restore from the log, then decide the same commands
                    // again; those that did commit are answered from the restored outcomes.
                    tracing::warn!(partition = p, error = %e, "transaction failed; restoring");
                    current.producer.abort();
                    live = None;
                    self.set_live(false);
                }
            }
        }
    }

    /// Waits for `delay` while queueing commands; true when told to stop.
    fn wait_or_stop(
        &self,
        rx: &Receiver<WorkerMsg>,
        pending: &mut Vec<OwnedMessage>,
        delay: Duration,
    ) -> bool {
        let deadline = std::time::Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match rx.recv_timeout(left) {
                Ok(WorkerMsg::Command(m)) => pending.push(m),
                Ok(WorkerMsg::Stop) | Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    fn set_live(&self, live: bool) {
        let mut set = self
            .live_partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live {
            set.insert(self.partition);
        } else {
            set.remove(&self.partition);
        }
    }

    /// Fences earlier writers, then rebuilds every aggregate of the partition from its
    /// snapshot and the log.
    fn restore(&self) -> Result<Live<A>, Error> {
        let rt = &self.runtime;
        let p = self.partition;
        let producer = TxnProducer::open(&rt.options, &rt.options.transactional_id(A::TYPE, p))?;

        let mut snapshots: HashMap<AggregateId, SnapshotRecord<A>> = HashMap::new();
        read_to_end(&rt.options, &rt.snapshots_topic, p, Offset(0), |m| {
            let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                return Ok(ControlFlow::Continue(()));
            };
            let id = AggregateId::new(key);
            match m.payload().map(serde_json::from_slice::<SnapshotRecord<A>>) {
                Some(Ok(s)) if s.v == PROTOCOL_VERSION => {
                    snapshots.insert(id, s);
                }
                other => {
                    // Unreadable (older state schema) or deleted: replay instead.
                    if let Some(Err(e)) = other {
                        tracing::info!(aggregate = %id, error = %e, "snapshot unreadable; replaying events");
                    }
                    snapshots.remove(&id);
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;

        let mut aggregates: HashMap<AggregateId, Entry<A>> = HashMap::new();
        let mut verifiers: HashMap<AggregateId, ChainVerifier> = HashMap::new();
        let mut recent = Recent::new(rt.dedupe_window);
        let mut replay_fully: HashSet<AggregateId> = HashSet::new();
        read_to_end(&rt.options, &rt.events_topic, p, Offset(0), |m| {
            let raw = wire::decode(m)?;
            verifiers
                .entry(raw.aggregate_id.clone())
                .or_insert_with(ChainVerifier::from_start)
                .verify(&raw)?;
            recent.record(&raw);
            let entry = aggregates.entry(raw.aggregate_id.clone()).or_default();
            entry.version = raw.sequence;
            entry.hash = raw.hash;
            if replay_fully.contains(&raw.aggregate_id) {
                return rt.apply(entry, raw).map(|()| ControlFlow::Continue(()));
            }
            match snapshots
                .get(&raw.aggregate_id)
                .map(|s| (s.version, s.hash))
            {
                Some((v, _)) if raw.sequence < v => {}
                Some((v, h)) if raw.sequence == v => {
                    let snapshot = snapshots.remove(&raw.aggregate_id);
                    match snapshot {
                        Some(s) if h == raw.hash => entry.state = s.state,
                        _ => {
                            replay_fully.insert(raw.aggregate_id.clone());
                        }
                    }
                }
                _ => rt.apply(entry, raw)?,
            }
            Ok(ControlFlow::Continue(()))
        })?;
        // Snapshots the log never reached, and snapshots that did not match the log:
        // rebuild those aggregates from their events alone.
        replay_fully.extend(snapshots.into_keys());
        if !replay_fully.is_empty() {
            for id in &replay_fully {
                aggregates.insert(id.clone(), Entry::default());
            }
            read_to_end(&rt.options, &rt.events_topic, p, Offset(0), |m| {
                let raw = wire::decode(m)?;
                if let Some(entry) = replay_fully
                    .contains(&raw.aggregate_id)
                    .then(|| aggregates.get_mut(&raw.aggregate_id))
                    .flatten()
                {
                    entry.version = raw.sequence;
                    entry.hash = raw.hash;
                    rt.apply(entry, raw)?;
                }
                Ok(ControlFlow::Continue(()))
            })?;
        }
        tracing::debug!(
            partition = p,
            aggregates = aggregates.len(),
            "partition restored"
        );
        Ok(Live {
            producer,
            aggregates,
            recent,
        })
    }

    /// Decides a batch of commands and commits everything it produced in one transaction.
    fn process(&self, live: &mut Live<A>, batch: &[OwnedMessage]) -> Result<(), TxnError> {
        let rt = &self.runtime;
        let mut sealed: Vec<RawEnvelope> = Vec::new();
        let mut replies: Vec<(u32, CommandId, Reply)> = Vec::new();
        let mut touched: Vec<AggregateId> = Vec::new();
        let mut in_batch: HashMap<CommandId, (std::ops::Range<usize>, Version)> = HashMap::new();
        let mut last_offset = None;

        for message in batch {
            last_offset = Some(message.offset());
            let Some((record, reply_to)) = self.parse(message, &mut replies) else {
                continue;
            };
            let command_id = record.metadata.command_id;
            if let Some((events, version)) = live.recent.get(&command_id) {
                if let Some(r) = reply_to {
                    replies.push((
                        r,
                        command_id,
                        Reply::Now(Outcome::Committed {
                            events: events.clone(),
                            version: *version,
                            duplicate: true,
                        }),
                    ));
                }
                continue;
            }
            if let Some((range, version)) = in_batch.get(&command_id) {
                if let Some(r) = reply_to {
                    replies.push((
                        r,
                        command_id,
                        Reply::Events {
                            range: range.clone(),
                            version: *version,
                        },
                    ));
                }
                continue;
            }
            let outcome = self.decide(live, record, &mut sealed, &mut touched);
            if let Reply::Events { range, version } = &outcome {
                in_batch.insert(command_id, (range.clone(), *version));
            }
            if let Some(r) = reply_to {
                replies.push((r, command_id, outcome));
            }
        }

        live.producer.begin()?;
        let mut deliveries = Vec::with_capacity(sealed.len());
        for event in &sealed {
            deliveries.push(
                live.producer
                    .send_event(&rt.events_topic, self.partition, event)?,
            );
        }
        if !deliveries.is_empty() {
            live.producer.flush()?;
        }
        for (event, delivery) in sealed.iter_mut().zip(deliveries) {
            event.position = Some(Position {
                topic: rt.events_topic.clone(),
                partition: Partition(self.partition),
                offset: Offset(delivered_offset(delivery)?),
            });
        }
        for id in dedup(&touched) {
            if let Some(entry) = live.aggregates.get(id) {
                let snapshot = SnapshotRecord {
                    v: PROTOCOL_VERSION,
                    version: entry.version,
                    hash: entry.hash,
                    state: &entry.state,
                };
                if let Ok(bytes) = serde_json::to_vec(&snapshot) {
                    live.producer.send(
                        &rt.snapshots_topic,
                        self.partition,
                        id.as_bytes(),
                        &bytes,
                        OwnedHeaders::new(),
                        None,
                    )?;
                }
            }
        }
        for (reply_to, command_id, reply) in replies {
            let outcome = match reply {
                Reply::Now(o) => o,
                Reply::Events { range, version } => Outcome::Committed {
                    events: sealed[range].to_vec(),
                    version,
                    duplicate: false,
                },
            };
            let record = ReplyRecord {
                v: PROTOCOL_VERSION,
                command_id,
                outcome,
            };
            if let Ok(bytes) = serde_json::to_vec(&record) {
                live.producer.send(
                    &rt.replies_topic,
                    reply_to,
                    command_id.to_string().as_bytes(),
                    &bytes,
                    OwnedHeaders::new(),
                    None,
                )?;
            }
        }
        if let Some(offset) = last_offset {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &rt.commands_topic,
                partition_i32(self.partition),
                KOffset::Offset(offset + 1),
            )
            .map_err(TxnError::Failed)?;
            live.producer.send_offsets(&tpl, &self.group)?;
        }
        live.producer.commit()?;
        for event in &sealed {
            live.recent.record(event);
        }
        Ok(())
    }

    /// Reads a command record; a malformed one is answered (when possible) and skipped.
    fn parse(
        &self,
        message: &OwnedMessage,
        replies: &mut Vec<(u32, CommandId, Reply)>,
    ) -> Option<(CommandRecord<A::Command>, Option<u32>)> {
        let payload = message.payload().unwrap_or_default();
        match serde_json::from_slice::<CommandRecord<A::Command>>(payload) {
            Ok(record) if record.v == PROTOCOL_VERSION => {
                let reply_to = record.reply_to;
                Some((record, reply_to))
            }
            Ok(record) => {
                if let Some(r) = record.reply_to {
                    replies.push((
                        r,
                        record.metadata.command_id,
                        Reply::Now(Outcome::Failed {
                            reason: format!(
                                "command protocol version {} is not supported (this processor speaks {PROTOCOL_VERSION})",
                                record.v
                            ),
                        }),
                    ));
                }
                None
            }
            Err(e) => {
                // Answer if the envelope is readable enough to say where.
                let envelope: Option<CommandRecord<serde_json::Value>> =
                    serde_json::from_slice(payload).ok();
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    "malformed command skipped"
                );
                if let Some(env) = envelope
                    && let Some(r) = env.reply_to
                {
                    replies.push((
                        r,
                        env.metadata.command_id,
                        Reply::Now(Outcome::Failed {
                            reason: format!(
                                "malformed {} command at {}/{}@{}: {e}",
                                A::TYPE,
                                message.topic(),
                                message.partition(),
                                message.offset()
                            ),
                        }),
                    ));
                }
                None
            }
        }
    }

    /// Decides one command against the live state; appends its sealed events to `sealed`.
    fn decide(
        &self,
        live: &mut Live<A>,
        record: CommandRecord<A::Command>,
        sealed: &mut Vec<RawEnvelope>,
        touched: &mut Vec<AggregateId>,
    ) -> Reply {
        let rt = &self.runtime;
        let id = record.command.aggregate_id();
        if let Err(reason) = id.validate() {
            return Reply::Now(Outcome::Failed {
                reason: reason.to_owned(),
            });
        }
        let entry = live.aggregates.entry(id.clone()).or_default();
        if let Some(expected) = record.expected
            && !expected.admits(entry.version)
        {
            return Reply::Now(Outcome::Conflict {
                expected,
                actual: entry.version,
            });
        }
        let now = rt.clock.now();
        let ctx = CommandContext::new(now, record.metadata.clone());
        let events = match entry.state.handle(&record.command, &ctx) {
            Ok(events) => events,
            Err(rejection) => {
                return Reply::Now(match serde_json::to_value(&rejection) {
                    Ok(rejection) => Outcome::Rejected { rejection },
                    Err(e) => Outcome::Failed {
                        reason: format!("rejection does not serialize: {e}"),
                    },
                });
            }
        };
        let aggregate = AggregateRef::new(A::TYPE, id.clone());
        let start = sealed.len();
        let mut encoded = Vec::with_capacity(events.len());
        for event in &events {
            match encode_event(
                event,
                &aggregate,
                rt.codec.as_ref(),
                EventId(rt.ids.new_id()),
                now,
                &record.metadata,
            ) {
                Ok(e) if e.payload.bytes.len() <= rt.options.max_payload_bytes => encoded.push(e),
                Ok(e) => {
                    return Reply::Now(Outcome::Failed {
                        reason: format!(
                            "event `{}` is {} bytes, more than the limit of {}",
                            e.event_type,
                            e.payload.bytes.len(),
                            rt.options.max_payload_bytes
                        ),
                    });
                }
                Err(e) => {
                    return Reply::Now(Outcome::Failed {
                        reason: e.to_string(),
                    });
                }
            }
        }
        for (event, uncommitted) in events.iter().zip(encoded) {
            let next = uncommitted.seal(&aggregate, entry.version.next(), entry.hash);
            entry.version = next.sequence;
            entry.hash = next.hash;
            entry.state.apply(event);
            sealed.push(next);
        }
        if !events.is_empty() {
            touched.push(id);
        }
        Reply::Events {
            range: start..sealed.len(),
            version: entry.version,
        }
    }
}

fn dedup(ids: &[AggregateId]) -> Vec<&AggregateId> {
    let mut seen = HashSet::new();
    ids.iter().filter(|id| seen.insert(*id)).collect()
}

impl<A: Aggregate> Runtime<A> {
    /// Decodes a stored event and applies it.
    fn apply(&self, entry: &mut Entry<A>, raw: RawEnvelope) -> Result<(), Error> {
        let event = decode_event::<A::Event>(raw, self.codec.as_ref(), &self.upcasters)?;
        entry.state.apply(&event.payload);
        Ok(())
    }
}
