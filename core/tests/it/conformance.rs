//! The `EventStore` conformance suite on the in-memory store.

use annals_core::MemoryEventStore;

annals_core::event_store_conformance!(async { MemoryEventStore::new().with_partitions(3) });
