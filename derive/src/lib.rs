//! Derive macros of **annals**: `#[derive(DomainEvent)]`, `#[derive(Command)]` and
//! `#[derive(Aggregate)]`.
//!
//! Use them through `annals-core`, which re-exports them under its default `derive`
//! feature; the generated code names everything by absolute paths into `::annals_core`.
//!
//! ```
//! use annals_core::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
//! #[event(handlers = ApplyCounterEvent)]
//! enum CounterEvent {
//!     #[event(name = "CounterIncremented", version = 1)]
//!     Incremented { by: u32 },
//!     #[event(name = "CounterReset", version = 1)]
//!     Reset,
//! }
//!
//! #[derive(Debug, Serialize, Deserialize, Command)]
//! enum CounterCommand {
//!     #[command(name = "Increment")]
//!     Increment {
//!         #[aggregate_id]
//!         id: String,
//!         by: u32,
//!     },
//!     Reset(#[aggregate_id] String),
//! }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
//! enum CounterRejection {
//!     #[error("cannot increment by zero")]
//!     Zero,
//! }
//!
//! #[derive(Debug, Default, Serialize, Deserialize, Aggregate)]
//! #[aggregate(
//!     name = "counter",
//!     command = CounterCommand,
//!     event = CounterEvent,
//!     rejection = CounterRejection,
//!     apply_with = ApplyCounterEvent,
//! )]
//! struct Counter {
//!     value: u64,
//! }
//!
//! impl Counter {
//!     fn handle(
//!         &self,
//!         cmd: &CounterCommand,
//!         _: &CommandContext,
//!     ) -> Result<Vec<CounterEvent>, CounterRejection> {
//!         match cmd {
//!             CounterCommand::Increment { by: 0, .. } => Err(CounterRejection::Zero),
//!             CounterCommand::Increment { by, .. } => Ok(vec![CounterEvent::Incremented { by: *by }]),
//!             CounterCommand::Reset(_) => Ok(vec![CounterEvent::Reset]),
//!         }
//!     }
//! }
//!
//! impl ApplyCounterEvent for Counter {
//!     fn incremented(&mut self, by: &u32) {
//!         self.value += u64::from(*by);
//!     }
//!
//!     fn reset(&mut self) {
//!         self.value = 0;
//!     }
//! }
//!
//! let event = CounterEvent::Incremented { by: 2 };
//! assert_eq!(event.event_type(), "CounterIncremented");
//! assert_eq!(event.to_document().unwrap(), serde_json::json!({ "by": 2 }));
//!
//! let mut counter = Counter::default();
//! counter.apply(&event);
//! assert_eq!(counter.value, 2);
//! ```
//!
//! The attributes each derive reads are described on the derive itself.

mod ast;
mod attr;
mod errors;
mod expand;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Implements `annals_core::DomainEvent` for an enum with one variant per event type, or
/// for a struct that is a single event type.
///
/// Every variant (or the struct) names its event type and current schema version:
/// `#[event(name = "AccountOpened", version = 1)]`. The name is what is stored, never the
/// Rust name, so it must be unique within the enum, non-empty and without whitespace; the
/// version starts at 1.
///
/// The payload of an event is its fields as a serde document, without the variant name.
/// The derive relies on the type's own `Serialize` and `Deserialize` with serde's default,
/// externally tagged enum representation, so it rejects serde attributes that change how
/// variants are named or tagged (`tag`, `content`, `untagged`, `rename_all` on the enum;
/// `rename`, `other`, `skip`… on a variant). Attributes on fields are fine.
///
/// On an enum, `#[event(handlers = ApplyAccountEvent)]` also generates a trait of that
/// name, with the enum's visibility: one required method per variant, named after the
/// variant in snake case (`account_opened` for `AccountOpened`), taking `&mut self` and the
/// variant's fields by reference (named fields by their names, tuple fields as `_0`,
/// `_1`…), plus a provided `apply_event(&mut self, event: &Enum)` that calls them. Leaving
/// out an event's method is then a compile error.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::domain_event(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `annals_core::Command` for an enum with one variant per command, or for a
/// struct that is a single command.
///
/// Each variant (or the struct) marks exactly one field with `#[aggregate_id]`: its
/// `Display` text becomes the `AggregateId`. `#[command(name = "Deposit")]` sets the
/// command type reported by `command_type()`; it defaults to the variant's (or struct's)
/// Rust name.
#[proc_macro_derive(Command, attributes(aggregate_id, command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::command(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `annals_core::Aggregate` by delegating to inherent methods.
///
/// ```text
/// #[aggregate(
///     name = "account",          // required: [a-z0-9_-]+, names the topic {prefix}.account.events
///     command = AccountCommand,  // required
///     event = AccountEvent,      // required
///     rejection = AccountError,  // required
///     handle = decide,           // optional, default `handle`
///     apply = evolve,            // optional, default `apply`
///     apply_with = ApplyAccountEvent, // optional, instead of `apply`
/// )]
/// ```
///
/// `Aggregate::handle` calls the inherent `fn handle(&self, &Command, &CommandContext) ->
/// Result<Vec<Event>, Rejection>` and `Aggregate::apply` the inherent
/// `fn apply(&mut self, &Event)`. With `apply_with`, `apply` calls the `apply_event` method
/// of the trait generated by `#[event(handlers = ...)]`. A missing inherent method is a
/// compile error, never a call of the trait method back into itself.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::aggregate(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
