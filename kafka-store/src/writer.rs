//! The single writer of one event partition, behind the `EventStore` port.
//!
//! A writer runs on its own thread (librdkafka's transaction calls block). It opens a
//! transactional producer (fencing any earlier writer of the partition), restores every
//! aggregate's head (version and hash) by reading the partition to its end, and then
//! serves appends: requests that queue up while a transaction runs go into the next
//! transaction together. Heads change only after a commit succeeds; after any failure whose
//! outcome is unknown the writer reopens and restores again, so its view never drifts from
//! the log.

use std::collections::HashMap;
use std::ops::ControlFlow;

use annals_core::hash::{ChainVerifier, EventHash};
use annals_core::{
    AggregateId, AggregateRef, Error, ExpectedVersion, Offset, Partition, Position, RawEnvelope,
    UncommittedEvent, Version,
};
use tokio::sync::{mpsc, oneshot};

use crate::kafka::duplicate;
use crate::options::KafkaStoreOptions;
use crate::reader::read_to_stable_end;
use crate::txn::{TxnError, TxnProducer};
use crate::wire;

/// One append waiting for the writer.
pub(crate) struct AppendRequest {
    pub(crate) aggregate: AggregateRef,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<UncommittedEvent>,
    pub(crate) reply: oneshot::Sender<Result<Vec<RawEnvelope>, Error>>,
}

/// The handle to a running writer thread.
pub(crate) struct WriterHandle {
    tx: mpsc::UnboundedSender<AppendRequest>,
}

impl WriterHandle {
    /// Starts the writer of `topic`/`partition` for `aggregate_type`.
    pub(crate) fn spawn(
        options: KafkaStoreOptions,
        aggregate_type: String,
        topic: String,
        partition: u32,
    ) -> Result<Self, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("annals-writer-{topic}-{partition}"))
            .spawn(move || run(&options, &aggregate_type, &topic, partition, rx))
            .map_err(|e| Error::backend("starting a writer thread", e))?;
        Ok(Self { tx })
    }

    /// Whether the writer thread still runs.
    pub(crate) fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Queues an append; the request comes back if the writer has stopped.
    pub(crate) fn submit(&self, request: AppendRequest) -> Result<(), AppendRequest> {
        self.tx.send(request).map_err(|e| e.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Head {
    version: Version,
    hash: EventHash,
}

const NO_HEAD: Head = Head {
    version: Version::INITIAL,
    hash: EventHash::ZERO,
};

struct Session<'a> {
    topic: &'a str,
    partition: u32,
    producer: TxnProducer,
    heads: HashMap<AggregateId, Head>,
    max_record_bytes: usize,
}

impl<'a> Session<'a> {
    fn open(
        options: &'a KafkaStoreOptions,
        aggregate_type: &str,
        topic: &'a str,
        partition: u32,
    ) -> Result<Self, Error> {
        let producer = TxnProducer::open(
            options,
            &options.transactional_id(aggregate_type, partition),
        )?;
        let heads = restore_heads(options, topic, partition)?;
        Ok(Self {
            topic,
            partition,
            producer,
            heads,
            max_record_bytes: options.max_payload_bytes,
        })
    }

    /// Runs one transaction for a batch of appends. `Err` means the session is unusable.
    fn append_batch(&mut self, batch: Vec<AppendRequest>) -> Result<(), TxnError> {
        let mut tentative: HashMap<AggregateId, Head> = HashMap::new();
        let mut accepted = Vec::with_capacity(batch.len());
        for request in batch {
            let id = &request.aggregate.aggregate_id;
            let head = tentative
                .get(id)
                .or_else(|| self.heads.get(id))
                .copied()
                .unwrap_or(NO_HEAD);
            if !request.expected.admits(head.version) {
                let _ = request.reply.send(Err(Error::Conflict {
                    aggregate: request.aggregate,
                    expected: request.expected,
                    actual: head.version,
                }));
                continue;
            }
            let mut sealed = Vec::with_capacity(request.events.len());
            let (mut version, mut hash) = (head.version, head.hash);
            for event in request.events {
                version = version.next();
                let e = event.seal(&request.aggregate, version, hash);
                hash = e.hash;
                sealed.push(e);
            }
            // A record Kafka would refuse fails the whole transaction: refuse it alone.
            if let Some((big, size)) = sealed
                .iter()
                .map(|e| (e, wire::record_size(e)))
                .find(|(_, size)| *size > self.max_record_bytes)
            {
                let _ = request.reply.send(Err(Error::InvalidRequest {
                    reason: format!(
                        "event `{}` makes a record of {size} bytes, more than the limit of {}",
                        big.event_type, self.max_record_bytes
                    ),
                    aggregate: request.aggregate,
                }));
                continue;
            }
            tentative.insert(id.clone(), Head { version, hash });
            accepted.push((request.reply, sealed));
        }
        if accepted.is_empty() {
            return Ok(());
        }

        let outcome = self.transact(&mut accepted);
        match outcome {
            Ok(()) => {
                self.heads.extend(tentative);
                for (reply, sealed) in accepted {
                    let _ = reply.send(Ok(sealed));
                }
                Ok(())
            }
            Err(e) => {
                let fenced = matches!(e, TxnError::Fenced(_));
                for (reply, _) in accepted {
                    let error = match &e {
                        TxnError::Fenced(_) => Error::NotOwner {
                            topic: self.topic.to_owned(),
                            partition: self.partition,
                        },
                        TxnError::Failed(k) => Error::backend(
                            format!(
                                "appending to {}/{}; the append may or may not have been stored",
                                self.topic, self.partition
                            ),
                            k.clone(),
                        ),
                    };
                    let _ = reply.send(Err(error));
                }
                if !fenced {
                    self.producer.abort();
                }
                Err(e)
            }
        }
    }

    fn transact(&self, accepted: &mut [(ReplySender, Vec<RawEnvelope>)]) -> Result<(), TxnError> {
        self.producer.begin()?;
        let mut deliveries = Vec::new();
        for (_, sealed) in accepted.iter() {
            for event in sealed {
                deliveries.push(
                    self.producer
                        .send_event(self.topic, self.partition, event)?,
                );
            }
        }
        self.producer.commit()?;
        let mut offsets = deliveries.into_iter();
        for (_, sealed) in accepted.iter_mut() {
            for event in sealed {
                let offset = match offsets.next() {
                    Some(d) => self.producer.delivered_offset(d)?,
                    None => 0,
                };
                event.position = Some(Position {
                    topic: self.topic.to_owned(),
                    partition: Partition(self.partition),
                    offset: Offset(offset),
                });
            }
        }
        Ok(())
    }
}

type ReplySender = oneshot::Sender<Result<Vec<RawEnvelope>, Error>>;

/// Reads the partition to its end and returns every aggregate's head, verifying each
/// aggregate's sequence and hash chain on the way.
fn restore_heads(
    options: &KafkaStoreOptions,
    topic: &str,
    partition: u32,
) -> Result<HashMap<AggregateId, Head>, Error> {
    let mut verifiers: HashMap<AggregateId, ChainVerifier> = HashMap::new();
    read_to_stable_end(options, topic, partition, |message| {
        let event = wire::decode(message)?;
        verifiers
            .entry(event.aggregate_id.clone())
            .or_insert_with(ChainVerifier::from_start)
            .verify(&event)?;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(verifiers
        .into_iter()
        .filter_map(|(id, v)| v.last().map(|(version, hash)| (id, Head { version, hash })))
        .collect())
}

fn run(
    options: &KafkaStoreOptions,
    aggregate_type: &str,
    topic: &str,
    partition: u32,
    mut rx: mpsc::UnboundedReceiver<AppendRequest>,
) {
    let mut session: Option<Session<'_>> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let current = match session.take() {
            Some(s) => s,
            None => match Session::open(options, aggregate_type, topic, partition) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "writer cannot open");
                    // Typed, so that a corrupt log says where (`MalformedRecord`, ...).
                    for r in batch {
                        let _ = r.reply.send(Err(duplicate(&e)));
                    }
                    continue;
                }
            },
        };
        let mut current = current;
        match current.append_batch(batch) {
            Ok(()) => session = Some(current),
            Err(TxnError::Fenced(e)) => {
                tracing::warn!(topic, partition, error = %e, "writer fenced: another writer owns the partition");
                // The batch was answered `NotOwner`. The next append opens a new session,
                // which fences in turn and restores from the log. (Ending the thread here
                // instead would drop appends queued meanwhile without an answer.)
                session = None;
            }
            // Outcome unknown: reopen (fencing our own old producer) and restore.
            Err(TxnError::Failed(_)) => session = None,
        }
    }
}
