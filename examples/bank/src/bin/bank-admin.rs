//! `bank-admin`: the `annals` command line for the bank's deployment. It is the same
//! program as `annals` (`annals_cli::run_with`), built with the bank's projections, so
//! that besides what `annals` does it can rebuild them and retry their dead letters:
//! both run the projections' code.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/bank KAFKA_BROKERS=127.0.0.1:9092 \
//!     bank-admin --prefix bank projections rebuild account_balances
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    annals_cli::run_with(bank::read_models::registry())
}
