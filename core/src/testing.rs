//! Given/when/then tests for aggregates: given past events, when a command arrives, then
//! these events (or this rejection) follow. Expectations are typed values, compared with
//! `PartialEq`, never strings.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use crate::aggregate::{Aggregate, CommandContext};
use crate::ids::CommandId;
use crate::metadata::{Actor, Metadata};

/// A given/when/then test of one aggregate.
pub struct AggregateTest<A: Aggregate> {
    state: A,
    ctx: CommandContext,
}

impl<A: Aggregate> Default for AggregateTest<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> AggregateTest<A> {
    /// A test of a fresh aggregate, at 2026-01-01T00:00:00Z, acting as `test`.
    pub fn new() -> Self {
        let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let metadata = Metadata::new(
            Actor::new("test"),
            CommandId(uuid::Uuid::from_u128(
                0x0123_4567_89ab_7def_8123_4567_89ab_cdef,
            )),
        );
        Self {
            state: A::default(),
            ctx: CommandContext::new(now, metadata),
        }
    }

    /// The aggregate has already seen these events.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for e in events {
            self.state.apply(&e);
        }
        self
    }

    /// The command is handled at this time.
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.ctx.now = now;
        self
    }

    /// The command carries this metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.ctx.metadata = metadata;
        self
    }

    /// The command under test.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let mut state = self.state;
        let result = state.handle(&command, &self.ctx);
        if let Ok(events) = &result {
            for e in events {
                state.apply(e);
            }
        }
        Outcome { result, state }
    }
}

/// What a command did in an [`AggregateTest`].
pub struct Outcome<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Rejection>,
    state: A,
}

impl<A: Aggregate> Outcome<A> {
    /// Asserts the command produced exactly these events.
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>) -> Self
    where
        A::Event: PartialEq + Debug,
        A::Rejection: Debug,
    {
        match &self.result {
            Ok(events) => assert_eq!(events, &expected, "the command produced other events"),
            Err(rejection) => {
                panic!("expected events {expected:?}, but the command was rejected: {rejection:?}")
            }
        }
        self
    }

    /// Asserts the command was rejected with exactly this rejection.
    #[track_caller]
    pub fn then_expect_rejection(self, expected: A::Rejection) -> Self
    where
        A::Event: Debug,
        A::Rejection: PartialEq + Debug,
    {
        match &self.result {
            Err(rejection) => assert_eq!(rejection, &expected, "rejected for another reason"),
            Ok(events) => {
                panic!("expected rejection {expected:?}, but the command produced {events:?}")
            }
        }
        self
    }

    /// Checks the state after the produced events were applied.
    #[track_caller]
    pub fn then_state(self, check: impl FnOnce(&A)) -> Self {
        check(&self.state);
        self
    }

    /// The raw result, for checks the helpers do not cover.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Rejection> {
        &self.result
    }
}
