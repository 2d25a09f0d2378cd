//! Document projections without a database: documents and offsets in memory, events read
//! from any [`EventStore`] by polling its partitions. For unit tests and the zero-setup
//! demo; the fold is the one the Postgres runner uses, so both give the same documents.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use annals_core::{Codec, EventStore, Offset, Partition, Position, RawEnvelope, Upcasters};
use futures::TryStreamExt;

use crate::error::{ProjectionError, Result};
use crate::fold::{Item, PoisonPolicy, Slot, decode_batch, fold_documents, position_of};
use crate::projection::{Decoding, DocumentProjection};

/// Documents, offsets and parked events of document projections, in memory. Cheap to
/// clone; clones share the same contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryDocumentStore {
    inner: Arc<Mutex<HashMap<&'static str, Contents>>>,
}

#[derive(Debug, Default)]
struct Contents {
    documents: BTreeMap<String, (serde_json::Value, i64)>,
    offsets: BTreeMap<(String, u32), u64>,
    parked: Vec<ParkedInMemory>,
}

/// An event parked by a memory projector.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParkedInMemory {
    /// Where the event is stored.
    pub position: Position,
    /// The document id it is parked under.
    pub key: String,
    /// The handler's error, or why it is parked behind another.
    pub error: String,
    /// Parked only because an earlier event of the same key is.
    pub behind: bool,
}

impl MemoryDocumentStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<&'static str, Contents>> {
        // Folds complete before they write, so a panic elsewhere leaves no half batch.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Document `id` of projection `P`.
    pub fn document<P: DocumentProjection>(&self, id: &str) -> Result<Option<P::Document>> {
        let guard = self.lock();
        let Some((value, _)) = guard.get(P::NAME).and_then(|c| c.documents.get(id)) else {
            return Ok(None);
        };
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|source| ProjectionError::Document {
                projection: P::NAME.to_owned(),
                id: id.to_owned(),
                source,
            })
    }

    /// Every document of projection `P`, by id.
    pub fn documents<P: DocumentProjection>(&self) -> Result<BTreeMap<String, P::Document>> {
        self.json_documents(P::NAME)
            .into_iter()
            .map(|(id, value)| match serde_json::from_value(value) {
                Ok(doc) => Ok((id, doc)),
                Err(source) => Err(ProjectionError::Document {
                    projection: P::NAME.to_owned(),
                    id,
                    source,
                }),
            })
            .collect()
    }

    /// Every document of the projection named `projection`, as JSON, by id.
    pub fn json_documents(&self, projection: &str) -> BTreeMap<String, serde_json::Value> {
        self.lock()
            .get(projection)
            .map(|c| {
                c.documents
                    .iter()
                    .map(|(id, (doc, _))| (id.clone(), doc.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next offset the projection will read from a partition.
    pub fn offset(&self, projection: &str, topic: &str, partition: u32) -> u64 {
        self.lock()
            .get(projection)
            .and_then(|c| c.offsets.get(&(topic.to_owned(), partition)).copied())
            .unwrap_or(0)
    }

    /// The events the projection parked, in order.
    pub fn parked(&self, projection: &str) -> Vec<ParkedInMemory> {
        self.lock()
            .get(projection)
            .map(|c| c.parked.clone())
            .unwrap_or_default()
    }
}

/// Runs a document projection on a [`MemoryDocumentStore`], reading any
/// [`EventStore`] from the offsets it keeps there.
///
/// ```
/// # use std::sync::Arc;
/// # use annals_core::{Envelope, EventStore, MemoryEventStore};
/// # use annals_projections::{DocumentProjection, MemoryDocumentStore, MemoryProjector};
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, annals_core::DomainEvent)]
/// # enum E { #[event(name = "Happened", version = 1)] Happened }
/// # struct Count;
/// # impl DocumentProjection for Count {
/// #     const NAME: &'static str = "counts";
/// #     const AGGREGATES: &'static [&'static str] = &["thing"];
/// #     type Event = E;
/// #     type Document = u64;
/// #     type Error = std::convert::Infallible;
/// #     fn document_id(&self, e: &Envelope<E>) -> Option<String> { Some(e.aggregate_id.to_string()) }
/// #     fn apply(&self, d: &mut Option<u64>, _: &Envelope<E>) -> Result<(), Self::Error> {
/// #         *d = Some(d.unwrap_or(0) + 1); Ok(())
/// #     }
/// # }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let events: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
/// let documents = MemoryDocumentStore::new();
/// let projector = MemoryProjector::new(events, documents.clone(), Count);
/// projector.catch_up().await?;
/// let count: Option<u64> = documents.document::<Count>("thing-1")?;
/// # Ok(()) }
/// ```
pub struct MemoryProjector<P: DocumentProjection> {
    store: Arc<dyn EventStore>,
    documents: MemoryDocumentStore,
    projection: P,
    decoding: Decoding,
    batch_size: usize,
    policy: PoisonPolicy,
    running: tokio::sync::Mutex<()>,
}

impl<P: DocumentProjection> std::fmt::Debug for MemoryProjector<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProjector")
            .field("projection", &P::NAME)
            .finish_non_exhaustive()
    }
}

impl<P: DocumentProjection> MemoryProjector<P> {
    /// A projector of `projection` over `store`, keeping documents in `documents`.
    ///
    /// # Panics
    /// If `P::NAME` is invalid (see [`Projection::document`](crate::Projection::document)).
    #[track_caller]
    pub fn new(store: Arc<dyn EventStore>, documents: MemoryDocumentStore, projection: P) -> Self {
        if let Err(reason) = crate::schema::validate_name(P::NAME) {
            panic!("projection name `{}` is invalid: {reason}", P::NAME);
        }
        Self {
            store,
            documents,
            projection,
            decoding: Decoding::default(),
            batch_size: 500,
            policy: PoisonPolicy::Halt,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Decodes payloads with another codec.
    #[must_use]
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.decoding.codec = codec;
        self
    }

    /// Applies these upcasters on read.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Self {
        self.decoding.upcasters = upcasters;
        self
    }

    /// Most events folded at once.
    #[must_use]
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// What happens to poison events (halt by default).
    #[must_use]
    pub fn poison_policy(mut self, policy: PoisonPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reads every partition of the projection's aggregates from its stored offset to
    /// the end and folds what it finds. Returns how many events it read.
    pub async fn catch_up(&self) -> Result<u64> {
        let _one_at_a_time = self.running.lock().await;
        let mut read = 0;
        for aggregate in P::AGGREGATES {
            let topic = self.store.topic_for(aggregate);
            let partitions = self
                .store
                .partition_count(aggregate)
                .await
                .map_err(|source| self.source_error(source))?;
            for p in 0..partitions {
                let from = self.documents.offset(P::NAME, &topic, p);
                let mut stream = self
                    .store
                    .read_partition(aggregate, Partition(p), Offset(from));
                let mut batch = Vec::with_capacity(self.batch_size);
                while let Some(raw) = stream
                    .try_next()
                    .await
                    .map_err(|source| self.source_error(source))?
                {
                    batch.push(raw);
                    if batch.len() >= self.batch_size {
                        read += self.fold(&topic, p, std::mem::take(&mut batch))?;
                    }
                }
                if !batch.is_empty() {
                    read += self.fold(&topic, p, batch)?;
                }
            }
        }
        Ok(read)
    }

    fn source_error(&self, source: annals_core::Error) -> ProjectionError {
        ProjectionError::Source {
            projection: P::NAME.to_owned(),
            source: Box::new(source),
        }
    }

    /// Folds one batch of one partition and stores documents, parked events and the
    /// offset together.
    fn fold(&self, topic: &str, partition: u32, batch: Vec<RawEnvelope>) -> Result<u64> {
        let items: Vec<Item> = batch
            .into_iter()
            .map(|raw| Item {
                raw,
                replaying: false,
            })
            .collect();
        let (events, decode_halt) = decode_batch::<P::Event>(P::NAME, &items, &self.decoding);
        let ids: Vec<Option<String>> = events
            .iter()
            .map(|e| self.projection.document_id(e))
            .collect();
        let mut guard = self.documents.lock();
        let contents = guard.entry(P::NAME).or_default();
        let mut blocked: HashSet<String> = contents.parked.iter().map(|p| p.key.clone()).collect();
        let mut slots: HashMap<String, Slot<P::Document>> = HashMap::new();
        for id in ids.iter().flatten() {
            if slots.contains_key(id) {
                continue;
            }
            let slot = match contents.documents.get(id) {
                Some((value, revision)) => {
                    let doc = serde_json::from_value(value.clone()).map_err(|source| {
                        ProjectionError::Document {
                            projection: P::NAME.to_owned(),
                            id: id.clone(),
                            source,
                        }
                    })?;
                    Slot::loaded(Some(doc), *revision)
                }
                None => Slot::loaded(None, 0),
            };
            slots.insert(id.clone(), slot);
        }
        let mut applied = fold_documents(
            &self.projection,
            &items,
            &events,
            &ids,
            &mut slots,
            &mut blocked,
            self.policy,
        );
        if applied.halt.is_none() {
            applied.consumed = events.len();
            applied.halt = decode_halt;
        }
        // Serialise everything before writing anything, so a failure writes nothing.
        let mut writes = Vec::new();
        for (id, slot) in slots {
            if !slot.changed {
                continue;
            }
            let value =
                match &slot.doc {
                    Some(doc) => Some(serde_json::to_value(doc).map_err(|source| {
                        ProjectionError::Document {
                            projection: P::NAME.to_owned(),
                            id: id.clone(),
                            source,
                        }
                    })?),
                    None => None,
                };
            writes.push((id, value, slot.revision));
        }
        for (id, value, revision) in writes {
            match value {
                Some(value) => {
                    contents.documents.insert(id, (value, revision));
                }
                None => {
                    contents.documents.remove(&id);
                }
            }
        }
        for parked in &applied.parked {
            contents.parked.push(ParkedInMemory {
                position: position_of(&parked.raw),
                key: parked.key.clone(),
                error: parked.error.clone(),
                behind: parked.behind,
            });
        }
        let next = match (&applied.halt, items.get(applied.consumed)) {
            // A halted projection's offset points at the event it halted on.
            (Some(_), Some(halted)) => Some(position_of(&halted.raw).offset.0),
            _ => items[..applied.consumed.min(items.len())]
                .last()
                .map(|last| position_of(&last.raw).offset.0 + 1),
        };
        if let Some(next) = next {
            contents.offsets.insert((topic.to_owned(), partition), next);
        }
        match applied.halt {
            Some(e) => Err(e),
            None => Ok(applied.consumed as u64),
        }
    }
}
