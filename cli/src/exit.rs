//! Failures with the exit code they map to.

/// What went wrong and which exit code says so.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) error: anyhow::Error,
}

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// A check found a problem.
    CheckFailed = 1,
    /// Kafka or Postgres cannot be reached.
    Unavailable = 3,
    /// The named thing does not exist.
    NotFound = 4,
}

impl Failure {
    pub(crate) fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }
}

/// Shorthands for mapping errors to codes.
pub(crate) trait OrExit<T> {
    fn or_exit(self, code: Code) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: Code) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, e))
    }
}
