//! `annals`: operate an annals deployment from the shell (see the `annals_cli` library).
//!
//! Exit codes: 0 success; 1 the check failed (a broken hash chain, a stuck saga ...);
//! 2 bad usage; 3 a service (Kafka, Postgres) is unreachable; 4 not found.

use std::process::ExitCode;

/// The generic binary knows no application's projections: `projections rebuild` and
/// dead-letter `retry` need an application's admin binary built with
/// [`annals_cli::run_with`].
fn main() -> ExitCode {
    annals_cli::run_with(annals_projections::Projections::new())
}
