//! The typed write path: load an aggregate by replaying its events, decide on a command,
//! append the result with an optimistic version check.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;

use crate::aggregate::{Aggregate, Command, CommandContext};
use crate::clock::{Clock, IdGenerator, SystemClock, UuidV7};
use crate::codec::{Codec, CodecError, JsonCodec};
use crate::envelope::{Envelope, RawEnvelope, RawPayload, UncommittedEvent};
use crate::error::{CommandError, Error, Location};
use crate::event::DomainEvent;
use crate::ids::{AggregateId, AggregateRef, EventId, Version};
use crate::metadata::Metadata;
use crate::store::{EventStore, ExpectedVersion};
use crate::upcast::{UpcastFailure, Upcasters};

/// An aggregate's state as loaded, with the version it was loaded at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state after every stored event.
    pub state: A,
    /// The number of events applied.
    pub version: Version,
}

/// The events one command stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<E> {
    /// The stored events, in order (empty when the command decided nothing happens).
    pub events: Vec<Envelope<E>>,
    /// The aggregate's version after them.
    pub version: Version,
}

/// Sends commands to aggregates of type `A` and returns what they stored.
///
/// The service code of an application talks to this trait, so the same code runs on the
/// in-memory store ([`AggregateRepository`]) and on the Kafka command bus.
#[async_trait]
pub trait CommandGateway<A: Aggregate>: Send + Sync {
    /// Executes one command.
    async fn send(
        &self,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>>;
}

/// Encodes a typed event for storage.
pub fn encode_event<E: DomainEvent>(
    event: &E,
    aggregate: &AggregateRef,
    codec: &dyn Codec,
    event_id: EventId,
    occurred_at: chrono::DateTime<chrono::Utc>,
    metadata: &Metadata,
) -> Result<UncommittedEvent, Error> {
    let encode_err = |message: String| Error::Encode {
        aggregate: aggregate.clone(),
        event_type: event.event_type().to_owned(),
        source: CodecError {
            content_type: codec.content_type().to_owned(),
            message,
        },
    };
    let document = event.to_document().map_err(|e| encode_err(e.to_string()))?;
    let bytes = codec.encode(&document).map_err(|e| Error::Encode {
        aggregate: aggregate.clone(),
        event_type: event.event_type().to_owned(),
        source: e,
    })?;
    Ok(UncommittedEvent {
        event_id,
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        occurred_at,
        metadata: metadata.clone(),
        payload: RawPayload {
            content_type: codec.content_type().to_owned(),
            bytes,
        },
    })
}

/// Decodes a stored event: codec, then upcasters up to the current schema, then the typed
/// event. Every failure names the aggregate, sequence and position.
pub fn decode_event<E: DomainEvent>(
    raw: RawEnvelope,
    codec: &dyn Codec,
    upcasters: &Upcasters,
) -> Result<Envelope<E>, Error> {
    let at = Location::of(&raw);
    if raw.payload.content_type != codec.content_type() {
        return Err(Error::CorruptPayload {
            at,
            event_type: raw.event_type.clone(),
            source: CodecError {
                content_type: raw.payload.content_type.clone(),
                message: format!(
                    "no codec for it (this reader uses {})",
                    codec.content_type()
                ),
            },
        });
    }
    let document = codec
        .decode(&raw.payload.bytes)
        .map_err(|source| Error::CorruptPayload {
            at: at.clone(),
            event_type: raw.event_type.clone(),
            source,
        })?;
    let upcasted = upcasters
        .upcast(
            raw.event_type.clone(),
            raw.schema_version,
            document,
            |t, v| E::current_version(t) == Some(v),
        )
        .map_err(|failure| match failure {
            UpcastFailure::Missing { .. } => Error::UnknownEventType {
                at: at.clone(),
                event_type: raw.event_type.clone(),
                schema_version: raw.schema_version,
            },
            UpcastFailure::Failed {
                event_type,
                from_version,
                reason,
            } => Error::Upcast {
                at: at.clone(),
                event_type,
                from_version,
                reason,
            },
        })?;
    let event = match E::from_document(&upcasted.event_type, upcasted.document) {
        None => {
            return Err(Error::UnknownEventType {
                at,
                event_type: upcasted.event_type,
                schema_version: upcasted.schema_version,
            });
        }
        Some(Err(e)) => {
            return Err(Error::CorruptPayload {
                at,
                event_type: upcasted.event_type,
                source: CodecError {
                    content_type: codec.content_type().to_owned(),
                    message: e.to_string(),
                },
            });
        }
        Some(Ok(event)) => event,
    };
    let schema_version = upcasted.schema_version;
    let event_type = upcasted.event_type;
    let mut envelope = raw.map(|_| event);
    envelope.event_type = event_type;
    envelope.schema_version = schema_version;
    Ok(envelope)
}

/// Loads and commands aggregates of type `A` on any [`EventStore`].
///
/// Commands run optimistically: load, decide, append expecting the loaded version. When
/// another writer got there first the command is decided again on the fresh state, up to
/// a bounded number of times.
pub struct AggregateRepository<A> {
    store: Arc<dyn EventStore>,
    codec: Arc<dyn Codec>,
    upcasters: Arc<Upcasters>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    conflict_retries: u32,
    aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for AggregateRepository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            codec: Arc::clone(&self.codec),
            upcasters: Arc::clone(&self.upcasters),
            clock: Arc::clone(&self.clock),
            ids: Arc::clone(&self.ids),
            conflict_retries: self.conflict_retries,
            aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> AggregateRepository<A> {
    /// A repository on `store` with the JSON codec, no upcasters, the system clock and
    /// UUID v7 event ids.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            codec: Arc::new(JsonCodec),
            upcasters: Arc::new(Upcasters::new()),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7),
            conflict_retries: 3,
            aggregate: PhantomData,
        }
    }

    /// Uses another codec.
    #[must_use]
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.codec = codec;
        self
    }

    /// Applies these upcasters on read.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Reads time from this clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Takes event ids from this generator.
    #[must_use]
    pub fn with_ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.ids = ids;
        self
    }

    /// How often a command is decided again after a version conflict (default 3).
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads an aggregate by replaying its whole, verified stream.
    pub async fn load(&self, id: &AggregateId) -> Result<Loaded<A>, Error> {
        let mut state = A::default();
        let mut version = Version::INITIAL;
        let mut stream = self.store.read_aggregate(A::TYPE, id, Version(1));
        while let Some(raw) = stream.try_next().await? {
            version = raw.sequence;
            let event = decode_event::<A::Event>(raw, self.codec.as_ref(), &self.upcasters)?;
            state.apply(&event.payload);
        }
        Ok(Loaded { state, version })
    }

    /// The decoded events of one aggregate.
    pub async fn events(&self, id: &AggregateId) -> Result<Vec<Envelope<A::Event>>, Error> {
        let raws: Vec<RawEnvelope> = self
            .store
            .read_aggregate(A::TYPE, id, Version(1))
            .try_collect()
            .await?;
        raws.into_iter()
            .map(|raw| decode_event(raw, self.codec.as_ref(), &self.upcasters))
            .collect()
    }

    /// Executes a command, deciding again on fresh state after a conflict.
    pub async fn execute(
        &self,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        let mut attempt = 0;
        loop {
            match self.try_execute(&command, None, &metadata).await {
                Err(CommandError::Store(Error::Conflict { .. }))
                    if attempt < self.conflict_retries =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Executes a command only if the aggregate is at `expected`; no retry.
    pub async fn execute_expecting(
        &self,
        command: A::Command,
        expected: ExpectedVersion,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        self.try_execute(&command, Some(expected), &metadata).await
    }

    async fn try_execute(
        &self,
        command: &A::Command,
        expected: Option<ExpectedVersion>,
        metadata: &Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        let id = command.aggregate_id();
        let loaded = self.load(&id).await?;
        let aggregate = AggregateRef::new(A::TYPE, id.clone());
        if let Some(expected) = expected
            && !expected.admits(loaded.version)
        {
            return Err(CommandError::Store(Error::Conflict {
                aggregate,
                expected,
                actual: loaded.version,
            }));
        }
        let now = self.clock.now();
        if let Some(deadline) = metadata.deadline()
            && now > deadline
        {
            return Err(CommandError::Store(Error::DeadlinePassed {
                aggregate,
                deadline,
            }));
        }
        let ctx = CommandContext::new(now, metadata.clone());
        let events = loaded
            .state
            .handle(command, &ctx)
            .map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok(Committed {
                events: Vec::new(),
                version: loaded.version,
            });
        }
        let uncommitted = events
            .iter()
            .map(|e| {
                encode_event(
                    e,
                    &aggregate,
                    self.codec.as_ref(),
                    EventId(self.ids.new_id()),
                    now,
                    metadata,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let stored = self
            .store
            .append(
                A::TYPE,
                &id,
                ExpectedVersion::Exact(loaded.version),
                uncommitted,
            )
            .await?;
        let version = stored.last().map_or(loaded.version, |e| e.sequence);
        let events = stored
            .into_iter()
            .zip(events)
            .map(|(raw, event)| raw.map(|_| event))
            .collect();
        Ok(Committed { events, version })
    }
}

#[async_trait]
impl<A: Aggregate> CommandGateway<A> for AggregateRepository<A> {
    async fn send(
        &self,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Committed<A::Event>, CommandError<A::Rejection>> {
        self.execute(command, metadata).await
    }
}
