//! Upcasters evolve stored event documents to the current schema on read.
//!
//! Stored events are never rewritten. When an event's schema changes, its version goes up
//! and an upcaster from the old version is registered; reads apply upcasters in a chain
//! (1 → 2 → 3) until the version the code knows.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

/// The result of one upcasting step.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcasted {
    /// The event type after the step (usually unchanged; a step may rename).
    pub event_type: String,
    /// The schema version after the step.
    pub schema_version: u32,
    /// The document after the step.
    pub document: Value,
}

/// One step that turns an `(event type, version)` document into a newer one.
pub trait Upcaster: Send + Sync + 'static {
    /// The event type this step reads.
    fn event_type(&self) -> &str;
    /// The schema version this step reads.
    fn source_version(&self) -> u32;
    /// Performs the step. An `Err` is reported with the event's location.
    fn upcast(&self, document: Value) -> Result<Upcasted, String>;
}

type StepFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

struct FnUpcaster {
    event_type: String,
    from_version: u32,
    step: Box<StepFn>,
}

impl Upcaster for FnUpcaster {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source_version(&self) -> u32 {
        self.from_version
    }
    fn upcast(&self, document: Value) -> Result<Upcasted, String> {
        Ok(Upcasted {
            event_type: self.event_type.clone(),
            schema_version: self.from_version + 1,
            document: (self.step)(document)?,
        })
    }
}

/// Why upcasting a document failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpcastFailure {
    /// No upcaster starts at this event type and version.
    Missing {
        /// The event type reached.
        event_type: String,
        /// The version reached.
        schema_version: u32,
    },
    /// An upcaster returned an error.
    Failed {
        /// The event type it read.
        event_type: String,
        /// The version it read.
        from_version: u32,
        /// What it said.
        reason: String,
    },
}

/// The registered upcasters, keyed by `(event type, version)`.
#[derive(Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Box<dyn Upcaster>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.steps.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a step.
    ///
    /// # Panics
    /// If a step for the same `(event type, version)` is already registered: that is a
    /// programming error found at start-up.
    #[track_caller]
    #[must_use]
    pub fn with(mut self, upcaster: impl Upcaster) -> Self {
        let key = (upcaster.event_type().to_owned(), upcaster.source_version());
        assert!(
            !self.steps.contains_key(&key),
            "two upcasters registered for event type `{}` version {}: keep one",
            key.0,
            key.1
        );
        self.steps.insert(key, Box::new(upcaster));
        self
    }

    /// Registers a step from `from_version` to `from_version + 1` of the same event type.
    #[track_caller]
    #[must_use]
    pub fn with_fn(
        self,
        event_type: &str,
        from_version: u32,
        step: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Self {
        self.with(FnUpcaster {
            event_type: event_type.to_owned(),
            from_version,
            step: Box::new(step),
        })
    }

    /// Applies steps until `is_current(event type, version)` holds.
    pub fn upcast(
        &self,
        mut event_type: String,
        mut schema_version: u32,
        mut document: Value,
        is_current: impl Fn(&str, u32) -> bool,
    ) -> Result<Upcasted, UpcastFailure> {
        // A chain can visit each registered step at most once; more means a cycle.
        for _ in 0..=self.steps.len() {
            if is_current(&event_type, schema_version) {
                return Ok(Upcasted {
                    event_type,
                    schema_version,
                    document,
                });
            }
            let Some(step) = self.steps.get(&(event_type.clone(), schema_version)) else {
                return Err(UpcastFailure::Missing {
                    event_type,
                    schema_version,
                });
            };
            let next = step
                .upcast(document)
                .map_err(|reason| UpcastFailure::Failed {
                    event_type: event_type.clone(),
                    from_version: schema_version,
                    reason,
                })?;
            event_type = next.event_type;
            schema_version = next.schema_version;
            document = next.document;
        }
        Err(UpcastFailure::Failed {
            event_type,
            from_version: schema_version,
            reason: "upcasters form a cycle".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current_is_v3(t: &str, v: u32) -> bool {
        t == "Deposited" && v == 3
    }

    #[test]
    fn chains_steps_in_order() {
        let ups = Upcasters::new()
            .with_fn("Deposited", 1, |mut d| {
                d["currency"] = json!("EUR");
                Ok(d)
            })
            .with_fn("Deposited", 2, |d| {
                Ok(json!({"amount_minor": d["amount"], "currency": d["currency"]}))
            });
        let out = ups
            .upcast("Deposited".into(), 1, json!({"amount": 5}), current_is_v3)
            .expect("upcasts");
        assert_eq!(out.schema_version, 3);
        assert_eq!(out.document, json!({"amount_minor": 5, "currency": "EUR"}));
    }

    #[test]
    fn a_missing_step_names_where_the_chain_stops() {
        let ups = Upcasters::new().with_fn("Deposited", 1, Ok);
        let err = ups
            .upcast("Deposited".into(), 1, json!({}), current_is_v3)
            .expect_err("no step from 2");
        assert_eq!(
            err,
            UpcastFailure::Missing {
                event_type: "Deposited".into(),
                schema_version: 2
            }
        );
    }
}
