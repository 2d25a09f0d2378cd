//! Domain events: what happened, named by a stable event type and schema version.

use serde_json::Value;

/// An event type this Rust type can represent, with the schema version it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventTypeInfo {
    /// The stable name stored with every event (`AccountOpened`). Never derived from Rust
    /// names, so renaming a type or variant does not change stored data.
    pub name: &'static str,
    /// The schema version written today. Older versions are upcast on read.
    pub version: u32,
}

/// A domain event, usually an enum with one variant per event type.
///
/// Derive it: `#[derive(DomainEvent)]` with `#[event(name = "...", version = N)]` on each
/// variant (or on a struct). The payload of a variant is its fields, as a serde document;
/// the event type travels beside it, not inside.
pub trait DomainEvent: Sized + Send + Sync + 'static {
    /// Every event type of this Rust type with its current schema version.
    const EVENT_TYPES: &'static [EventTypeInfo];

    /// This event's type name.
    fn event_type(&self) -> &'static str;

    /// This event's current schema version.
    fn schema_version(&self) -> u32;

    /// The payload as a document, without the event type.
    fn to_document(&self) -> Result<Value, serde_json::Error>;

    /// Rebuilds an event from its type name and a payload at the current schema version.
    /// `None` when `event_type` is not one of [`Self::EVENT_TYPES`].
    fn from_document(event_type: &str, document: Value) -> Option<Result<Self, serde_json::Error>>;

    /// The current schema version of `event_type`, if this type knows it.
    fn current_version(event_type: &str) -> Option<u32> {
        Self::EVENT_TYPES
            .iter()
            .find(|info| info.name == event_type)
            .map(|info| info.version)
    }
}
