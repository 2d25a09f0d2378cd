//! `annals`: operate an annals deployment from the shell. This library is the whole
//! command line; the `annals` binary runs it with no projections of its own, and an
//! application builds its admin binary by calling [`run_with`] with its projections, so
//! that `projections rebuild` and `dead-letters retry`, which run a projection's code,
//! work too:
//!
//! ```no_run
//! // src/bin/bank-admin.rs
//! fn main() -> std::process::ExitCode {
//!     annals_cli::run_with(annals_projections::Projections::new() /* .with(...) */)
//! }
//! ```
//!
//! Exit codes: 0 success; 1 the check failed (a broken hash chain, a stuck saga ...);
//! 2 bad usage; 3 a service (Kafka, Postgres) is unreachable; 4 not found.

mod audit;
mod exit;
mod projections;
mod sagas;
mod topics;

use std::process::ExitCode;
use std::time::Duration;

use annals_kafka_store::KafkaStoreOptions;
use annals_projections::Projections;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

/// Operate an annals deployment: its event topics, projections, sagas and audit trail.
///
/// Services are found through KAFKA_BROKERS and DATABASE_URL (or the flags). Topic
/// names are `{prefix}.{aggregate}.events`; give the prefix your services use.
#[derive(Debug, Parser)]
#[command(name = "annals", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(
        long,
        env = "KAFKA_BROKERS",
        global = true,
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Topic prefix of the deployment.
    #[arg(long, env = "ANNALS_PREFIX", global = true, default_value = "annals")]
    prefix: String,
    /// Seconds to wait for a broker before giving up.
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// Postgres holding the read models and the projections' offsets
    /// (`postgres://user[:password]@host:port/database`).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 check failed or operation refused \
(tampering found, saga stuck, poison event retried in vain ...), 2 bad usage, 3 service \
unreachable, 4 not found.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Kafka topics of the deployment.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// Verify and export the audit trail (hash chains, metadata).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Inspect and operate sagas.
    #[command(subcommand)]
    Sagas(sagas::SagasCommand),
    /// Read models in Postgres: list, status and lag, replay, blue-green rebuild, dead
    /// letters. Needs DATABASE_URL (or --database-url).
    #[command(subcommand, after_help = projections::AFTER_HELP)]
    Projections(projections::ProjectionsCommand),
}

impl Cli {
    fn options(&self) -> KafkaStoreOptions {
        KafkaStoreOptions::new(&self.brokers)
            .topic_prefix(&self.prefix)
            .app_id(format!("{}-cli", self.prefix))
            .operation_timeout(Duration::from_secs(self.timeout))
    }
}

/// Runs the command line with `registry`: the projections whose code this binary has
/// (for `projections rebuild` and `projections dead-letters NAME retry`). Parses the
/// process's arguments, runs the command on a multi-threaded Tokio runtime, prints
/// errors as `error: ...` with their causes, and returns the documented exit code.
pub fn run_with(registry: Projections) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(registry))
}

async fn run(registry: Projections) -> ExitCode {
    // Usage lines name the binary that runs (`annals`, or an application's admin tool).
    let bin = std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "annals".to_owned());
    let mut command = Cli::command().bin_name(bin);
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let options = cli.options();
    let result = match cli.command {
        Command::Topics(c) => topics::run(c, &options).await,
        Command::Audit(c) => audit::run(c, &options).await,
        Command::Sagas(c) => sagas::run(c, &options).await,
        Command::Projections(c) => {
            let Some(url) = cli.database_url.as_deref() else {
                command
                    .error(
                        clap::error::ErrorKind::MissingRequiredArgument,
                        "projections need a database: set DATABASE_URL or pass --database-url",
                    )
                    .exit()
            };
            projections::run(c, &options, url, &registry).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code as u8)
        }
    }
}
