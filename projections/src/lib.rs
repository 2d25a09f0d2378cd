//! Projections of **annals**: read models folded from the event topics into Postgres with
//! an exactly-once effect, replayable, rebuildable blue-green without read downtime, with
//! poison events parked per key or halting the projection.
//!
//! Two kinds of projection: a [`DocumentProjection`] folds events into serde documents
//! keyed by id (stored as `jsonb`; the runner loads a batch's documents in one query and
//! writes them back in one statement), and runs on the in-memory store too
//! ([`MemoryProjector`]); an [`SqlProjection`] gets the Postgres transaction and writes
//! any SQL.
//!
//! ```no_run
//! use annals_core::Envelope;
//! use annals_kafka_store::KafkaStoreOptions;
//! use annals_projections::{Database, DocumentProjection, Projection, Projector};
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, annals_core::DomainEvent)]
//! # enum AccountEvent {
//! #     #[event(name = "Deposited", version = 1)]
//! #     Deposited { amount: i64 },
//! # }
//!
//! /// Balances by account: an exactly-once read model.
//! struct Balances;
//!
//! impl DocumentProjection for Balances {
//!     const NAME: &'static str = "balances";
//!     const AGGREGATES: &'static [&'static str] = &["account"];
//!     type Event = AccountEvent;
//!     type Document = i64;
//!     type Error = std::convert::Infallible;
//!
//!     fn document_id(&self, event: &Envelope<AccountEvent>) -> Option<String> {
//!         Some(event.aggregate_id.to_string())
//!     }
//!
//!     fn apply(&self, balance: &mut Option<i64>, event: &Envelope<AccountEvent>) -> Result<(), Self::Error> {
//!         let AccountEvent::Deposited { amount } = event.payload;
//!         *balance = Some(balance.unwrap_or(0) + amount);
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Database::connect("postgres://postgres@127.0.0.1:5432/bank").await?;
//! let kafka = KafkaStoreOptions::new("127.0.0.1:9092").topic_prefix("bank");
//! let projector = Projector::new(db.clone(), kafka, Projection::document(Balances))
//!     .start()
//!     .await?;
//! // Readers: `SELECT doc FROM balances.documents WHERE id = $1`, or
//! let balance = annals_projections::read::document::<Balances>(&db, "acc-1").await?;
//! # projector.stop().await?; Ok(()) }
//! ```
//!
//! # How it works
//!
//! **Tables** (created by [`Database::connect`], recorded in
//! `annals_schema_migrations`): `annals_projections` (name, kind, topics, the live
//! version and the one being built), `annals_projection_offsets` (`(projection, version,
//! topic, partition) → next_offset`, plus the high water mark and the last rate),
//! `annals_dead_letters` and `annals_rebuilds`.
//!
//! **Versions.** Version `N` of a read model lives in schema `{name}__v{N}` (a document
//! projection's table is `documents`; an SQL projection's `setup` creates its own, with
//! the schema first on the `search_path`). Readers query schema `{name}`, whose views
//! point at the live version's tables. Version 1 is created when a projection first
//! starts.
//!
//! **Exactly-once.** A [`Projector`] joins one consumer group per topic
//! ([`Subscription`](annals_kafka_store::subscription::Subscription)); an assigned
//! partition starts at its stored offset (0, the earliest, when there is none). Events
//! are batched by count and time; each batch is one transaction that applies the
//! events and advances every partition's offset by compare-and-set
//! (`UPDATE … SET next_offset = $new WHERE … AND next_offset = $expected`, only while
//! the version is live or being built). Zero rows mean the offset moved under the
//! runner — it lost the partition in a rebalance, or an operator replayed — so it rolls
//! back, re-reads the stored offset and seeks there. A crash before the commit loses
//! the batch's writes and its offsets together. Records still queued from before a seek
//! are recognised and dropped: after a backward seek, anything above the last record
//! seen is stale until the fresh stream comes back below it; when two repositionings of
//! a partition would overlap, the subscription is restarted instead.
//!
//! **Replay** ([`ops::replay`]) resets the live version's offsets to the earliest
//! record, an offset or a time; handlers see [`Context::is_replaying`] for events below
//! the partition's high water mark, so side effects can be suppressed.
//!
//! **Rebuild** ([`ops::rebuild`]) creates version `N+1` beside the live one, folds it
//! from the earliest events in a consumer group of its own (everything is a replay for
//! it), and once every partition reported its end (the end-of-partition event, not
//! watermarks), points the reader views at it in one transaction. Live projectors
//! notice the switch through their compare-and-set (or their idle refresh) and carry on
//! with the new version. The old version stays until [`ops::drop_version`]; a rebuild
//! can be aborted ([`ops::abort_rebuild`]) and resumes where it stopped when started
//! again.
//!
//! **Poison events.** A failing SQL handler is retried in a savepoint with backoff; a
//! failing document `apply` (a pure function) fails at once. Then, by
//! [`PoisonPolicy`], the event is parked in `annals_dead_letters` in the transaction
//! that moves the offset past it, with every later event of the same key parked behind
//! it (other keys go on), or the projection halts with
//! [`ProjectionError::PoisonHalted`], its offset at the event. Nothing is skipped
//! silently: [`dead_letters::retry_dead_letter`] applies parked events exactly once
//! after a fix, [`dead_letters::skip_dead_letter`] skips one deliberately. A record that
//! is not an annals event, or an event that does not decode, halts the projection with
//! [`ProjectionError::Malformed`] or [`ProjectionError::Decode`], naming the position.
//!
//! **Status** ([`ops::status`]): per partition the stored offset, the head (the
//! broker's high watermark: approximate on brokers that miscount it, such as Tansu after
//! multi-record batches), the lag, events per second and the last error.
//!
//! A projector is an ordinary async task: a test binary, a child process or a service
//! starts it with [`Projector::start`] and stops it with [`ProjectorHandle::stop`]
//! (or [`ProjectorHandle::abort`], as a crash would).

mod cursor;
pub mod dead_letters;
mod erased;
mod error;
mod fold;
mod memory;
pub mod ops;
mod projection;
pub mod read;
mod runner;
mod schema;
mod store;

pub use error::{ProjectionError, Result};
pub use fold::PoisonPolicy;
pub use memory::{MemoryDocumentStore, MemoryProjector, ParkedInMemory};
pub use projection::{
    Context, DocumentProjection, Projection, ProjectionKind, Projections, SqlProjection,
};
pub use runner::{PartitionProgress, Progress, Projector, ProjectorHandle, ProjectorOptions};
pub use schema::Database;
