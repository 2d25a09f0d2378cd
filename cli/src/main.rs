//! `annals`: operate an annals deployment from the shell.
//!
//! Exit codes: 0 success; 1 the check failed (a broken hash chain, a stuck saga ...);
//! 2 bad usage; 3 a service (Kafka, Postgres) is unreachable; 4 not found.

mod audit;
mod exit;
mod sagas;
mod topics;

use std::process::ExitCode;
use std::time::Duration;

use annals_kafka_store::KafkaStoreOptions;
use clap::{Parser, Subcommand};

/// Operate an annals deployment: its event topics, projections, sagas and audit trail.
///
/// Services are found through KAFKA_BROKERS and DATABASE_URL (or the flags). Topic
/// names are `{prefix}.{aggregate}.events`; give the prefix your services use.
#[derive(Debug, Parser)]
#[command(name = "annals", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Kafka bootstrap servers, host:port[,host:port].
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
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 1 check failed (tampering found, saga \
stuck ...), 2 bad usage, 3 service unreachable, 4 not found.";

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
}

impl Cli {
    fn options(&self) -> KafkaStoreOptions {
        KafkaStoreOptions::new(&self.brokers)
            .topic_prefix(&self.prefix)
            .app_id(format!("{}-cli", self.prefix))
            .operation_timeout(Duration::from_secs(self.timeout))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = cli.options();
    let result = match cli.command {
        Command::Topics(c) => topics::run(c, &options).await,
        Command::Audit(c) => audit::run(c, &options).await,
        Command::Sagas(c) => sagas::run(c, &options).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code as u8)
        }
    }
}
