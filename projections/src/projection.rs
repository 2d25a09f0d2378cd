//! The two kinds of projection users write, and the context a handler sees.

use std::sync::Arc;

use annals_core::{Codec, DomainEvent, Envelope, JsonCodec, Upcasters};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Postgres, Transaction};

use crate::erased::{DocumentErased, Erased, SqlErased};

/// A projection that folds events into serde documents keyed by id: the common case.
///
/// The runner loads every document a batch touches in one query, applies the batch's
/// events in memory and writes every changed document back in one statement (`jsonb` in
/// Postgres). The same projection runs on the in-memory store
/// ([`MemoryProjector`](crate::MemoryProjector)) for tests and demos.
///
/// `apply` is a pure fold: no I/O, no clock. It is not retried on error, since running a
/// deterministic function again gives the same error; an error makes the event a
/// poison event at once (parked or halting, by [`PoisonPolicy`](crate::PoisonPolicy)).
pub trait DocumentProjection: Send + Sync + 'static {
    /// The projection's stable name: `[a-z][a-z0-9_]*`, at most 40 bytes, no `__`. It
    /// names the read model's schema in Postgres (`"{NAME}".documents`).
    const NAME: &'static str;
    /// The aggregate types whose event topics it reads.
    const AGGREGATES: &'static [&'static str];
    /// The events it reads: one `DomainEvent` type that knows every event type of those
    /// aggregates (an enum over several aggregates' events when it reads several).
    type Event: DomainEvent;
    /// The read-model document.
    type Document: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Why an event cannot be applied.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The id of the document an event changes, or `None` when the event does not
    /// concern this projection (its offset still advances).
    fn document_id(&self, event: &Envelope<Self::Event>) -> Option<String>;

    /// Applies one event to its document: `None` when the document does not exist yet;
    /// setting it to `None` deletes the document. On error the document stays as it was.
    fn apply(
        &self,
        document: &mut Option<Self::Document>,
        event: &Envelope<Self::Event>,
    ) -> Result<(), Self::Error>;
}

/// A projection with full control: its handler gets the Postgres transaction that also
/// advances the projection's offsets, and writes any SQL.
///
/// Each version of the read model lives in its own schema (`{NAME}__v{N}`), which is
/// first on the `search_path` while `setup` and `handle` run: use unqualified names for
/// the projection's own tables. Readers query the views the framework keeps in schema
/// `{NAME}`, which point at the live version.
///
/// The handler may run more than once for an event (a batch is rolled back after an
/// offset conflict or a failing handler and applied again); only its database writes are
/// exactly-once. Side effects outside the database are at-least-once at best: skip them
/// when [`Context::is_replaying`] says so, or write an outbox row in the transaction.
#[async_trait]
pub trait SqlProjection: Send + Sync + 'static {
    /// The projection's stable name (same rules as [`DocumentProjection::NAME`]).
    const NAME: &'static str;
    /// The aggregate types whose event topics it reads.
    const AGGREGATES: &'static [&'static str];
    /// The events it reads.
    type Event: DomainEvent;
    /// Why an event cannot be handled.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates the tables of one version of the read model (in the version's schema,
    /// which is first on the search path). Runs once per version, when it is created.
    async fn setup(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), Self::Error>;

    /// Handles one event inside the batch's transaction.
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Envelope<Self::Event>,
        ctx: &Context,
    ) -> Result<(), Self::Error>;

    /// The key that orders events for parking: when an event is parked as poison, later
    /// events with the same key are parked behind it. The aggregate id by default.
    fn key(&self, event: &Envelope<Self::Event>) -> String {
        event.aggregate_id.to_string()
    }
}

/// What a handler knows besides the event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The event was seen before by this projection (a replay, or a rebuild of a new
    /// version): suppress side effects.
    pub replaying: bool,
    /// The version of the read model being written.
    pub version: i32,
}

impl Context {
    /// A context, for tests of handlers.
    pub fn new(replaying: bool, version: i32) -> Self {
        Self { replaying, version }
    }

    /// Whether side effects must be suppressed.
    pub fn is_replaying(&self) -> bool {
        self.replaying
    }
}

/// The kind of a projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionKind {
    /// A [`DocumentProjection`].
    Document,
    /// A [`SqlProjection`].
    Sql,
}

impl ProjectionKind {
    /// The name stored in `annals_projections.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectionKind::Document => "document",
            ProjectionKind::Sql => "sql",
        }
    }
}

impl std::fmt::Display for ProjectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How stored events are turned back into typed ones: the codec and the upcasters.
#[derive(Clone)]
pub(crate) struct Decoding {
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) upcasters: Arc<Upcasters>,
}

impl std::fmt::Debug for Decoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoding")
            .field("content_type", &self.codec.content_type())
            .finish_non_exhaustive()
    }
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            codec: Arc::new(JsonCodec),
            upcasters: Arc::new(Upcasters::new()),
        }
    }
}

/// A projection ready to run: the user's document or SQL projection, type-erased, with
/// the codec and upcasters that decode its events. Cheap to clone.
///
/// ```
/// # use annals_projections::{DocumentProjection, Projection};
/// # use annals_core::{Envelope, DomainEvent};
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
/// let projection = Projection::document(Count);
/// assert_eq!(projection.name(), "counts");
/// ```
#[derive(Clone)]
pub struct Projection {
    pub(crate) erased: Arc<dyn Erased>,
    pub(crate) decoding: Decoding,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("name", &self.name())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Projection {
    /// A document projection.
    ///
    /// # Panics
    /// If `P::NAME` is not a valid projection name or `P::AGGREGATES` is empty: both are
    /// constants, so this is a programming error found at startup.
    #[track_caller]
    pub fn document<P: DocumentProjection>(projection: P) -> Self {
        check_declaration(P::NAME, P::AGGREGATES);
        Self {
            erased: Arc::new(DocumentErased::new(projection)),
            decoding: Decoding::default(),
        }
    }

    /// An SQL projection.
    ///
    /// # Panics
    /// As [`Projection::document`].
    #[track_caller]
    pub fn sql<P: SqlProjection>(projection: P) -> Self {
        check_declaration(P::NAME, P::AGGREGATES);
        Self {
            erased: Arc::new(SqlErased::new(projection)),
            decoding: Decoding::default(),
        }
    }

    /// Decodes payloads with another codec (JSON by default).
    #[must_use]
    pub fn with_codec(mut self, codec: Arc<dyn Codec>) -> Self {
        self.decoding.codec = codec;
        self
    }

    /// Brings old schema versions up to date with these upcasters.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<Upcasters>) -> Self {
        self.decoding.upcasters = upcasters;
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.erased.name()
    }

    /// Its kind.
    pub fn kind(&self) -> ProjectionKind {
        self.erased.kind()
    }

    /// The aggregate types it reads.
    pub fn aggregates(&self) -> &'static [&'static str] {
        self.erased.aggregates()
    }
}

#[track_caller]
fn check_declaration(name: &'static str, aggregates: &'static [&'static str]) {
    if let Err(reason) = crate::schema::validate_name(name) {
        panic!("projection name `{name}` is invalid: {reason}; choose another NAME constant");
    }
    assert!(
        !aggregates.is_empty(),
        "projection `{name}` reads no aggregate: list at least one in AGGREGATES"
    );
}

/// A set of projections, looked up by name: what an operator tool (the `annals` CLI)
/// needs to rebuild a projection or retry its dead letters, which run the projection's
/// code.
#[derive(Debug, Clone, Default)]
pub struct Projections {
    all: Vec<Projection>,
}

impl Projections {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a projection.
    ///
    /// # Panics
    /// If a projection of the same name is already in the set.
    #[track_caller]
    #[must_use]
    pub fn with(mut self, projection: Projection) -> Self {
        assert!(
            self.get(projection.name()).is_none(),
            "projection `{}` is registered twice",
            projection.name()
        );
        self.all.push(projection);
        self
    }

    /// The projection named `name`.
    pub fn get(&self, name: &str) -> Option<&Projection> {
        self.all.iter().find(|p| p.name() == name)
    }

    /// The projection named `name`, or [`ProjectionError::UnknownProjection`].
    ///
    /// [`ProjectionError::UnknownProjection`]: crate::ProjectionError::UnknownProjection
    pub fn require(&self, name: &str) -> crate::Result<&Projection> {
        self.get(name)
            .ok_or_else(|| crate::ProjectionError::UnknownProjection {
                name: name.to_owned(),
            })
    }

    /// Every projection, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Projection> {
        self.all.iter()
    }
}
