//! What every partition worker of a processor shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use annals_core::{Aggregate, Clock, Codec, Error, IdGenerator, Upcasters};

use super::reactions::Reactions;
use crate::options::KafkaStoreOptions;

/// The configuration and shared services of one command processor.
pub(crate) struct Runtime<A: Aggregate> {
    pub(crate) options: KafkaStoreOptions,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) upcasters: Arc<Upcasters>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGenerator>,
    pub(crate) dedupe_window: usize,
    pub(crate) events_topic: String,
    pub(crate) commands_topic: String,
    pub(crate) replies_topic: String,
    pub(crate) snapshots_topic: String,
    /// Writes replies, after the transactions that decided them have committed.
    pub(crate) replies: rdkafka::producer::FutureProducer,
    pub(crate) errors: Mutex<BTreeMap<u32, String>>,
    /// Set for aggregates that drive others (sagas).
    pub(crate) reactions: Option<Arc<dyn Reactions<A>>>,
    /// Command topics and partition counts of the aggregate types reactions send to.
    pub(crate) targets: HashMap<String, (String, u32)>,
    pub(crate) aggregate: std::marker::PhantomData<fn() -> A>,
}

impl<A: Aggregate> Runtime<A> {
    pub(crate) fn record_error(&self, partition: u32, error: &Error) {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(partition, format!("{error}"));
    }
}
