//! The one error type of the crate, and how database errors are classified.

use annals_core::Position;

/// Everything that can go wrong running or operating projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// No projection of that name is registered (in this process's registry, or in the
    /// database's `annals_projections` table).
    #[error("unknown projection `{name}`")]
    UnknownProjection {
        /// The name asked for.
        name: String,
    },
    /// The database cannot be reached: it is down, refuses connections or the pool is
    /// exhausted.
    #[error("database unavailable while {context} ({hint})")]
    DatabaseUnavailable {
        /// What was being done.
        context: String,
        /// What to check.
        hint: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed.
    #[error("database error while {context}")]
    Database {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The stored offset of a partition is not the one this runner expected: another
    /// runner advanced it (this one is a zombie after a rebalance) or a replay reset it.
    /// Runners recover from it by themselves; operations report it.
    #[error(
        "offset conflict on {projection} v{version} {topic}/{partition}: expected {expected}, stored {stored:?}"
    )]
    OffsetConflict {
        /// The projection.
        projection: String,
        /// The version of its read model.
        version: i32,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset the writer expected.
        expected: u64,
        /// The offset stored (`None` when the version is no longer live or building).
        stored: Option<u64>,
    },
    /// A handler kept failing on an event and the policy is to halt. The event and every
    /// later one of its partition stay unapplied; the stored offset points at it.
    #[error(
        "projection {projection} halted on a poison event at {position} (key `{key}`, {attempts} attempts)"
    )]
    PoisonHalted {
        /// The projection.
        projection: String,
        /// Where the event is.
        position: Position,
        /// The document id or key of the event.
        key: String,
        /// How often the handler was tried.
        attempts: u32,
        /// The handler's last error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record of an event topic is not an annals event. The projection halts before it.
    #[error("projection {projection} halted on a malformed record")]
    Malformed {
        /// The projection.
        projection: String,
        /// The reader's error, which names the position.
        #[source]
        source: Box<annals_core::Error>,
    },
    /// A stored event does not decode to the projection's event type (unknown type, no
    /// upcaster, corrupt payload). The projection halts before it: without the event it
    /// cannot know which documents the event touches.
    #[error("projection {projection} cannot decode an event")]
    Decode {
        /// The projection.
        projection: String,
        /// The decoding error, which names the position.
        #[source]
        source: Box<annals_core::Error>,
    },
    /// Reading events failed (broker down, subscription failed, store error).
    #[error("reading events for {projection} failed")]
    Source {
        /// The projection.
        projection: String,
        /// What the event source said.
        #[source]
        source: Box<annals_core::Error>,
    },
    /// A Kafka administrative call failed (watermarks, offsets by time, topic metadata).
    #[error("kafka: {context}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: Box<annals_kafka_store::KafkaStoreError>,
    },
    /// The projection exists with another kind or other topics than the code says.
    #[error("projection {projection} is registered as {stored}, the code declares {declared}")]
    Mismatch {
        /// The projection.
        projection: String,
        /// What the database holds.
        stored: String,
        /// What the code declares.
        declared: String,
    },
    /// The rebuild of this version was aborted (or the version dropped) while running.
    #[error("rebuild of {projection} v{version} was aborted")]
    RebuildAborted {
        /// The projection.
        projection: String,
        /// The version that was being built.
        version: i32,
    },
    /// No rebuild is in progress.
    #[error("projection {projection} has no rebuild in progress")]
    NoRebuild {
        /// The projection.
        projection: String,
    },
    /// The version cannot be dropped or used that way (it is live, being built, or does
    /// not exist).
    #[error("projection {projection} v{version}: {reason}")]
    Version {
        /// The projection.
        projection: String,
        /// The version.
        version: i32,
        /// Why not.
        reason: &'static str,
    },
    /// No dead letter with that id exists for the projection.
    #[error("projection {projection} has no dead letter #{id}")]
    DeadLetterNotFound {
        /// The projection.
        projection: String,
        /// The id asked for.
        id: i64,
    },
    /// The dead letter was already retried or skipped.
    #[error("dead letter #{id} of {projection} is already {state}")]
    DeadLetterResolved {
        /// The projection.
        projection: String,
        /// The dead letter.
        id: i64,
        /// `retried` or `skipped`.
        state: String,
    },
    /// Retrying a parked event failed again; it stays parked with the new error.
    #[error("retrying dead letter #{id} of {projection} failed again")]
    RetryFailed {
        /// The projection.
        projection: String,
        /// The dead letter that failed.
        id: i64,
        /// The handler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A replay request is invalid (offset beyond a partition, time in the future ...).
    #[error("invalid replay of {projection}: {reason}")]
    InvalidReplay {
        /// The projection.
        projection: String,
        /// Why.
        reason: String,
    },
    /// Creating the tables of a new version of a read model failed.
    #[error("setting up the tables of {projection} v{version} failed")]
    Setup {
        /// The projection.
        projection: String,
        /// The version being created.
        version: i32,
        /// The projection's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A document could not be encoded to or decoded from JSON.
    #[error("document `{id}` of {projection} does not (de)serialize")]
    Document {
        /// The projection.
        projection: String,
        /// The document id.
        id: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
}

impl ProjectionError {
    /// Wraps a database error, telling an unreachable database from a failing statement
    /// through the driver's typed error variants.
    pub(crate) fn db(context: impl Into<String>, source: sqlx::Error) -> Self {
        let context = context.into();
        match &source {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => Self::DatabaseUnavailable {
                context,
                hint: "is Postgres running and DATABASE_URL right?",
                source,
            },
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
                Self::DatabaseUnavailable {
                    context,
                    hint: "the connection pool has no usable connection",
                    source,
                }
            }
            sqlx::Error::Configuration(_) => Self::DatabaseUnavailable {
                context,
                hint: "check DATABASE_URL",
                source,
            },
            _ => Self::Database { context, source },
        }
    }

    /// Whether trying the same work again may succeed (the database or broker was
    /// briefly unavailable, a transaction was chosen as a deadlock victim ...), as opposed
    /// to errors that need a person (poison events, malformed records, aborted rebuilds).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::DatabaseUnavailable { .. } | Self::OffsetConflict { .. } => true,
            // Deadlocks and serialization failures surface as database errors without a
            // typed kind in sqlx; constraint violations are never transient.
            Self::Database { source, .. } => match source.as_database_error() {
                Some(e) => matches!(e.kind(), sqlx::error::ErrorKind::Other),
                None => false,
            },
            _ => false,
        }
    }

    /// Whether the error is a unique violation reported by the database.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database { source, .. } => source
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()),
            _ => false,
        }
    }
}

/// Shorthand for the crate's results.
pub type Result<T, E = ProjectionError> = std::result::Result<T, E>;
