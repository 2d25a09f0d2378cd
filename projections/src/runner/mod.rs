//! The projector: a consumer-group member per event topic that folds batches of events
//! into a read model in Postgres, advancing its offsets by compare-and-set in the same
//! transaction.

mod assignment;
mod handle;
mod options;
mod run;

use std::collections::HashMap;
use std::sync::Arc;

use annals_kafka_store::KafkaStoreOptions;
use annals_kafka_store::subscription::Subscription;
use tokio::sync::{oneshot, watch};

pub use handle::{PartitionProgress, Progress, ProjectorHandle};
pub use options::ProjectorOptions;

use crate::error::{ProjectionError, Result};
use crate::projection::Projection;
use crate::schema::Database;
use crate::store;
use assignment::{Listener, Shared};
use run::{Feed, Run};

///
/// Each instance joins a consumer group per topic; the group spreads partitions over
/// the instances. On assignment a partition starts at its stored offset. Batches are
/// applied in one transaction each, which also advances the offsets by compare-and-set:
/// an instance that lost a partition (or whose offsets an operator reset) updates zero
/// rows, rolls back, re-reads the stored offset and seeks there. A crash at any point
/// loses nothing and applies nothing twice.
///
/// Use a multi-threaded Tokio runtime: assignments read offsets from Postgres on the
/// subscription's thread.
#[derive(Debug, Clone)]
pub struct Projector {
    db: Database,
    kafka: KafkaStoreOptions,
    projection: Projection,
    options: ProjectorOptions,
}

/// Which version a run writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The live version, following it when a rebuild switches.
    Live,
    /// A version being rebuilt.
    Build(i32),
}

impl Projector {
    /// A projector of `projection`, reading the event topics `kafka` names.
    pub fn new(db: Database, kafka: KafkaStoreOptions, projection: Projection) -> Self {
        Self {
            db,
            kafka,
            projection,
            options: ProjectorOptions::new(),
        }
    }

    /// Sets the options.
    #[must_use]
    pub fn options(mut self, options: ProjectorOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers the projection (creating version 1 of its read model the first time)
    /// and starts folding the live version in the background.
    pub async fn start(self) -> Result<ProjectorHandle> {
        self.start_mode(Mode::Live).await
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        self.projection
            .aggregates()
            .iter()
            .map(|a| self.kafka.events_topic(a))
            .collect()
    }

    pub(crate) async fn start_mode(self, mode: Mode) -> Result<ProjectorHandle> {
        let name = self.projection.name();
        let topics = self.topics();
        let row = store::register(&self.db, &self.projection, &topics).await?;
        let version = match mode {
            Mode::Live => row.live_version,
            Mode::Build(v) => v,
        };
        let mut total = 0;
        for aggregate in self.projection.aggregates() {
            let topic = self.kafka.events_topic(aggregate);
            let partitions = annals_kafka_store::topics::ensure_topic(
                &self.kafka,
                &topic,
                annals_kafka_store::topics::TopicKind::Events,
            )
            .await
            .map_err(|source| ProjectionError::Kafka {
                context: format!("preparing topic `{topic}`"),
                source: Box::new(source),
            })?;
            total += partitions as usize;
        }
        let base = self
            .options
            .group
            .clone()
            .unwrap_or_else(|| format!("annals.projection.{name}"));
        let group = match mode {
            Mode::Live => base,
            Mode::Build(v) => format!("{base}.v{v}"),
        };
        let shared = Arc::new(Shared::new(version));
        let runtime = tokio::runtime::Handle::current();
        let mut feeds = Vec::new();
        for topic in topics {
            let listener = Arc::new(Listener {
                db: self.db.clone(),
                name,
                topic: topic.clone(),
                shared: Arc::clone(&shared),
                runtime: runtime.clone(),
            });
            let group = format!("{group}@{topic}");
            let subscription = Subscription::start(
                &self.kafka,
                &group,
                &topic,
                listener.clone(),
                self.options.batch_size,
            )
            .map_err(|source| ProjectionError::Kafka {
                context: format!("subscribing to `{topic}`"),
                source: Box::new(source),
            })?;
            feeds.push(Feed {
                topic,
                group,
                listener,
                subscription: Some(subscription),
                local: HashMap::new(),
                pending: Vec::new(),
                pending_since: None,
            });
        }
        let progress = Progress {
            version,
            total_partitions: total,
            ..Progress::default()
        };
        let (progress_tx, progress_rx) = watch::channel(progress);
        let (stop_tx, stop_rx) = oneshot::channel();
        let run = Run {
            db: self.db,
            kafka: self.kafka,
            projection: self.projection,
            settings: self.options.settings(),
            options: self.options,
            mode,
            shared,
            feeds,
            progress: progress_tx,
            batches_begun: 0,
        };
        let task = tokio::spawn(run.run(stop_rx));
        Ok(ProjectorHandle::new(stop_tx, task, progress_rx))
    }
}
