//! The `EventStore` conformance suite, on Kafka, each case on its own topics.

use crate::support::fresh_store;

annals_core::event_store_conformance!(optional: fresh_store());
