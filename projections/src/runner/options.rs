//! The options of a projector.

use std::time::Duration;

use crate::fold::{PoisonPolicy, Settings};

/// How a projector batches, retries and treats poison events.
///
/// ```
/// use std::time::Duration;
/// use annals_projections::{PoisonPolicy, ProjectorOptions};
/// let options = ProjectorOptions::new()
///     .batch_size(1000)
///     .batch_window(Duration::from_millis(50))
///     .retries(3)
///     .poison_policy(PoisonPolicy::Park);
/// ```
#[derive(Debug, Clone)]
pub struct ProjectorOptions {
    pub(crate) batch_size: usize,
    pub(crate) batch_window: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) policy: PoisonPolicy,
    pub(crate) group: Option<String>,
    pub(crate) refresh_interval: Duration,
    pub(crate) fail_before_commit_every: Option<u64>,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ProjectorOptions {
    /// Batches of at most 500 events or 100 ms, 3 retries of failing SQL handlers 50 ms
    /// apart (growing), poison events halt, offsets re-checked every 2 s when idle.
    pub fn new() -> Self {
        Self {
            batch_size: 500,
            batch_window: Duration::from_millis(100),
            retries: 3,
            backoff: Duration::from_millis(50),
            policy: PoisonPolicy::Halt,
            group: None,
            refresh_interval: Duration::from_secs(2),
            fail_before_commit_every: None,
        }
    }

    /// Most events in one transaction.
    #[must_use]
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// Longest time the first event of a batch waits for more before the batch is
    /// applied.
    #[must_use]
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.batch_window = window;
        self
    }

    /// How often a failing SQL handler is tried again before its event is poison.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The pause before the first retry; the n-th retry waits n times as long.
    #[must_use]
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// What happens to poison events.
    #[must_use]
    pub fn poison_policy(mut self, policy: PoisonPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The consumer group (one per topic is derived from it: `{group}@{topic}`).
    /// Default: `annals.projection.{name}`, which includes no topic prefix: set one per
    /// application when several share a cluster.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How often an idle projector checks whether its stored offsets or live version
    /// were changed by an operator (replay, rebuild switch). Busy projectors find out on
    /// their next batch through the compare-and-set.
    #[must_use]
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Fault injection for tests: every `n`-th batch transaction is rolled back after
    /// its writes, just before it would commit, as a crash there would. The batch is then
    /// applied again.
    #[doc(hidden)]
    #[must_use]
    pub fn fail_before_commit_every(mut self, n: u64) -> Self {
        self.fail_before_commit_every = Some(n.max(1));
        self
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            retries: self.retries,
            backoff: self.backoff,
            policy: self.policy,
        }
    }
}
