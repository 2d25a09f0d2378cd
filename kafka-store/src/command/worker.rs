//! The processor of one command partition: restores the partition's aggregates, then turns
//! commands into events, snapshots and the consumed offset, all in one Kafka transaction
//! per batch, and answers each command once that transaction has committed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals_core::hash::{ChainVerifier, EventHash};
use annals_core::partition::partition_for;
use annals_core::repository::{decode_event, encode_event};
use annals_core::{
    Actor, Aggregate, AggregateId, AggregateRef, CausationId, Command, CommandContext, CommandId,
    CorrelationId, Envelope, Error, EventId, Metadata, Offset, Partition, Position, RawEnvelope,
    Version,
};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset as KOffset, TopicPartitionList};

use super::protocol::{
    CommandRecord, Outcome, PROTOCOL_VERSION, REPLY_CORRELATION_HEADER, REPLY_KEY_HEADER,
    REPLY_TOPIC_HEADER, ReplyRecord, SnapshotRecord,
};
use super::reactions::{Outbound, answer_command_id};
use super::runtime::Runtime;
use crate::reader::{partition_i32, read_to_end, read_to_stable_end};
use crate::txn::{TxnError, TxnProducer};
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

/// Where a command's answer goes: the sender's reply partition, on the aggregate type's
/// reply topic keyed by command id unless the command's headers name another topic
/// and key (a saga has its answers delivered to its own command topic).
#[derive(Debug, Clone)]
struct ReplyRoute {
    topic: Option<String>,
    partition: u32,
    key: Option<String>,
    correlation: Option<CorrelationId>,
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
            if let Some(current) = live.as_mut() {
                let ticks = self.due_ticks(current);
                if !ticks.is_empty() {
                    match self.process(current, &[], ticks) {
                        Ok(()) => {}
                        Err(TxnError::Fenced(e)) => {
                            tracing::warn!(partition = p, error = %e, "fenced: another processor owns the partition");
                            self.set_live(false);
                            return;
                        }
                        Err(TxnError::Failed(e)) => {
                            tracing::warn!(partition = p, error = %e, "transaction failed; restoring");
                            current.producer.abort();
                            live = None;
                            self.set_live(false);
                            continue;
                        }
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
            match self.process(current, &pending, Vec::new()) {
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
        read_to_stable_end(&rt.options, &rt.events_topic, p, |m| {
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
    fn process(
        &self,
        live: &mut Live<A>,
        batch: &[OwnedMessage],
        ticks: Vec<CommandRecord<A::Command>>,
    ) -> Result<(), TxnError> {
        let rt = &self.runtime;
        let mut sealed: Vec<RawEnvelope> = Vec::new();
        let mut outbound: Vec<(AggregateId, Outbound)> = Vec::new();
        let mut replies: Vec<(ReplyRoute, CommandId, Reply)> = Vec::new();
        let mut touched: Vec<AggregateId> = Vec::new();
        let mut in_batch: HashMap<CommandId, (std::ops::Range<usize>, Version)> = HashMap::new();
        let mut last_offset = None;

        let inputs = batch
            .iter()
            .map(|m| (Some(m), None))
            .chain(ticks.into_iter().map(|t| (None, Some(t))));
        for (message, tick) in inputs {
            let (record, reply_to) = match (message, tick) {
                (Some(message), _) => {
                    last_offset = Some(message.offset());
                    match self.parse(message, &mut replies) {
                        Some(parsed) => parsed,
                        None => continue,
                    }
                }
                (None, Some(tick)) => (tick, None),
                (None, None) => continue,
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
            let outcome = self.decide(live, record, &mut sealed, &mut touched, &mut outbound);
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
        // Each delivery resolves when the broker has the record: that gives its offset.
        for (event, delivery) in sealed.iter_mut().zip(deliveries) {
            event.position = Some(Position {
                topic: rt.events_topic.clone(),
                partition: Partition(self.partition),
                offset: Offset(live.producer.delivered_offset(delivery)?),
            });
        }
        for (source, out) in &outbound {
            self.send_outbound(live, source, out)?;
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
        // Replies are written after the commit, outside the transaction: see `send_replies`.
        let mut answers = Vec::with_capacity(replies.len());
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
                answers.push((reply_to, command_id, bytes));
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
        self.send_replies(answers);
        Ok(())
    }

    /// Sends the outcomes of committed commands to their callers.
    ///
    /// Replies are notifications, not state, so they are written after the commit by a
    /// plain idempotent producer rather than inside the transaction. A reply lost in a
    /// crash after the commit is a timeout for its caller, whose resend with the same
    /// command id is answered with the first outcome. Keeping replies out of the
    /// transaction also means the transactions of different partitions share no
    /// partition (every caller's reply partition would otherwise be written by every
    /// worker): fewer partitions per transaction on Apache Kafka, and on Tansu it avoids
    /// transactions that never complete (docs/kafka-brokers.md).
    fn send_replies(&self, answers: Vec<(ReplyRoute, CommandId, Vec<u8>)>) {
        let rt = &self.runtime;
        for (route, command_id, bytes) in answers {
            let key = route.key.unwrap_or_else(|| command_id.to_string());
            let topic = route.topic.as_deref().unwrap_or(&rt.replies_topic);
            let correlation = route.correlation.map(|c| c.to_string());
            let mut headers = OwnedHeaders::new();
            if let Some(c) = &correlation {
                headers = headers.insert(Header {
                    key: REPLY_CORRELATION_HEADER,
                    value: Some(c.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .partition(partition_i32(route.partition))
                .key(key.as_bytes())
                .payload(&bytes)
                .headers(headers);
            // The delivery is not awaited: the caller's timeout covers a lost reply.
            if let Err((e, _)) = rt.replies.send_result(record) {
                tracing::warn!(partition = self.partition, %command_id, error = %e, "reply not sent");
            }
        }
    }

    /// Reads a command record; a malformed one is answered (when possible) and skipped.
    fn parse(
        &self,
        message: &OwnedMessage,
        replies: &mut Vec<(ReplyRoute, CommandId, Reply)>,
    ) -> Option<(CommandRecord<A::Command>, Option<ReplyRoute>)> {
        let payload = message.payload().unwrap_or_default();
        let route = |partition: Option<u32>, correlation: Option<CorrelationId>| {
            partition.map(|partition| ReplyRoute {
                topic: header(message, REPLY_TOPIC_HEADER),
                partition,
                key: header(message, REPLY_KEY_HEADER),
                correlation,
            })
        };
        if let Some(answer) = self.answer_as_command(message, payload) {
            return Some((answer, None));
        }
        match serde_json::from_slice::<CommandRecord<A::Command>>(payload) {
            Ok(record) if record.v == PROTOCOL_VERSION => {
                let reply_to = route(record.reply_to, Some(record.metadata.correlation_id));
                Some((record, reply_to))
            }
            Ok(record) => {
                if let Some(r) = route(record.reply_to, Some(record.metadata.correlation_id)) {
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
                    && let Some(r) = route(env.reply_to, Some(env.metadata.correlation_id))
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
        outbound: &mut Vec<(AggregateId, Outbound)>,
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
        if let Some(deadline) = record.metadata.deadline()
            && now > deadline
        {
            return Reply::Now(Outcome::Failed {
                reason: format!(
                    "deadline {deadline} passed before the command was handled; it took no effect"
                ),
            });
        }
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
                Ok(e) => encoded.push(e),
                Err(e) => {
                    return Reply::Now(Outcome::Failed {
                        reason: e.to_string(),
                    });
                }
            }
        }
        // Sealed first and checked whole: a record Kafka would refuse fails every
        // transaction it is in, so it must be refused here, before the state changes.
        let (mut version, mut hash) = (entry.version, entry.hash);
        let mut staged = Vec::with_capacity(encoded.len());
        for uncommitted in encoded {
            let next = uncommitted.seal(&aggregate, version.next(), hash);
            let size = wire::record_size(&next);
            if size > rt.options.max_payload_bytes {
                return Reply::Now(Outcome::Failed {
                    reason: format!(
                        "event `{}` makes a record of {size} bytes, more than the limit of {}",
                        next.event_type, rt.options.max_payload_bytes
                    ),
                });
            }
            (version, hash) = (next.sequence, next.hash);
            staged.push(next);
        }
        let any = !events.is_empty();
        for (event, next) in events.into_iter().zip(staged) {
            entry.version = next.sequence;
            entry.hash = next.hash;
            if let Some(reactions) = &rt.reactions {
                let typed: Envelope<A::Event> = next.clone().map(|_| event);
                outbound.extend(
                    reactions
                        .outbox(&typed)
                        .into_iter()
                        .map(|o| (id.clone(), o)),
                );
                entry.state.apply(&typed.payload);
            } else {
                entry.state.apply(&event);
            }
            sealed.push(next);
        }
        if any {
            touched.push(id);
        }
        Reply::Events {
            range: start..sealed.len(),
            version: entry.version,
        }
    }
}

impl<A: Aggregate> Worker<A> {
    /// The ticks due now: aggregates whose reactions asked to be woken by this time.
    fn due_ticks(&self, live: &Live<A>) -> Vec<CommandRecord<A::Command>> {
        let Some(reactions) = &self.runtime.reactions else {
            return Vec::new();
        };
        let now = self.runtime.clock.now();
        live.aggregates
            .iter()
            .filter_map(|(id, entry)| {
                let at = reactions.wake_at(&entry.state).filter(|at| *at <= now)?;
                // The same wake-up always has the same id, so a tick decided twice (after
                // a restore) is deduplicated like any command.
                let seed = annals_core::clock::derived_id(uuid::Uuid::nil(), id.as_str());
                let command_id = CommandId(annals_core::clock::derived_id(
                    seed,
                    &format!("annals.tick@{}", at.timestamp_micros()),
                ));
                Some(CommandRecord {
                    v: PROTOCOL_VERSION,
                    metadata: Metadata::new(Actor::new(format!("timer:{}", A::TYPE)), command_id),
                    expected: None,
                    reply_to: None,
                    command: reactions.tick(id),
                })
            })
            .collect()
    }

    /// A participant's answer to a command this aggregate sent, as a command for it.
    fn answer_as_command(
        &self,
        message: &OwnedMessage,
        payload: &[u8],
    ) -> Option<CommandRecord<A::Command>> {
        let reactions = self.runtime.reactions.as_ref()?;
        let reply: ReplyRecord = serde_json::from_slice(payload).ok()?;
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok())?;
        let command =
            reactions.on_reply(&AggregateId::new(key), reply.command_id, &reply.outcome)?;
        // Recorded as the aggregate's own reaction to the answer, in the correlation of
        // the command it answers.
        let mut metadata = Metadata::new(
            Actor::new(format!("reaction:{}", A::TYPE)),
            answer_command_id(reply.command_id),
        );
        metadata.causation_id = CausationId(reply.command_id.0);
        if let Some(c) =
            header(message, REPLY_CORRELATION_HEADER).and_then(|c| uuid::Uuid::parse_str(&c).ok())
        {
            metadata.correlation_id = CorrelationId(c);
        }
        Some(CommandRecord {
            v: PROTOCOL_VERSION,
            metadata,
            expected: None,
            reply_to: None,
            command,
        })
    }

    /// Queues a command to another aggregate in the open transaction; its answer comes
    /// back to `source` on this partition of this aggregate type's command topic.
    fn send_outbound(
        &self,
        live: &Live<A>,
        source: &AggregateId,
        out: &Outbound,
    ) -> Result<(), TxnError> {
        let rt = &self.runtime;
        let Some((topic, partitions)) = rt.targets.get(&out.aggregate_type) else {
            tracing::error!(
                target_type = out.aggregate_type,
                "a reaction sent a command to an aggregate type it did not declare; it stays unsent"
            );
            return Ok(());
        };
        let record = CommandRecord {
            v: PROTOCOL_VERSION,
            metadata: out.metadata.clone(),
            expected: None,
            reply_to: Some(self.partition),
            command: &out.command,
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return Ok(());
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: REPLY_TOPIC_HEADER,
                value: Some(rt.commands_topic.as_bytes()),
            })
            .insert(Header {
                key: REPLY_KEY_HEADER,
                value: Some(source.as_bytes()),
            });
        let partition = partition_for(out.aggregate_id.as_bytes(), *partitions);
        live.producer
            .send(
                topic,
                partition,
                out.aggregate_id.as_bytes(),
                &bytes,
                headers,
                None,
            )
            .map(|_| ())
    }
}

/// A header's value as text.
fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    })
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
