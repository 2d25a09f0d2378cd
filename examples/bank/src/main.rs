//! `cargo run -p bank`: the whole demo. It runs on the embedded in-memory store when
//! `KAFKA_BROKERS` is unset and on Kafka when it is set.
//!
//! The services of a real deployment run as separate processes that talk only through
//! Kafka: `bank accounts`, `bank transfers` and `bank api --listen 127.0.0.1:8080`.

use std::net::SocketAddr;

use annals_kafka_store::KafkaStoreOptions;
use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// The annals showcase bank.
#[derive(Debug, Parser)]
#[command(name = "bank")]
struct Cli {
    /// Topic prefix shared by the services.
    #[arg(long, env = "ANNALS_PREFIX", default_value = "bank", global = true)]
    prefix: String,
    #[command(subcommand)]
    command: Option<Service>,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// The demo (the default): every part of annals at work.
    Demo,
    /// The account service: owns the account partitions and decides account commands.
    Accounts,
    /// The transfer service: runs the transfer sagas.
    Transfers,
    /// The HTTP API, in front of the two services.
    Api {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Kafka options from the environment: `KAFKA_BROKERS`, and optionally
/// `ANNALS_PARTITIONS` (partitions of new topics, default 8) and
/// `ANNALS_SESSION_TIMEOUT_MS` (how fast a vanished service's partitions move, default
/// 45000).
fn kafka(prefix: &str) -> anyhow::Result<KafkaStoreOptions> {
    let options = KafkaStoreOptions::from_env().context(
        "KAFKA_BROKERS is not set: the services run on Kafka (the demo does not need it)",
    )?;
    let mut options = options.topic_prefix(prefix).app_id(prefix);
    if let Ok(p) = std::env::var("ANNALS_PARTITIONS") {
        let p: u32 = p
            .parse()
            .with_context(|| format!("ANNALS_PARTITIONS=`{p}` is not a number"))?;
        options = options.partitions(p);
    }
    if let Ok(ms) = std::env::var("ANNALS_SESSION_TIMEOUT_MS") {
        let ms: u64 = ms
            .parse()
            .with_context(|| format!("ANNALS_SESSION_TIMEOUT_MS=`{ms}` is not a number"))?;
        options = options.session_timeout(std::time::Duration::from_millis(ms));
    }
    Ok(options)
}

/// Runs a processor until Ctrl-C, printing `live` once it owns its partitions.
async fn serve_processor(
    handle: annals_kafka_store::ProcessorHandle,
    what: &str,
) -> anyhow::Result<()> {
    println!("{what} service started; Ctrl-C stops it");
    bank::services::wait_live(&handle, what).await?;
    println!(
        "{what} service live on partitions {:?}",
        handle.live_partitions()
    );
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Service::Demo) {
        Service::Demo => bank::demo::run().await,
        Service::Accounts => {
            let options = kafka(&cli.prefix)?;
            let handle = bank::services::accounts(&options).await?;
            serve_processor(handle, "account").await
        }
        Service::Transfers => {
            let options = kafka(&cli.prefix)?;
            let handle = bank::services::transfers(&options).await?;
            serve_processor(handle, "transfer").await
        }
        Service::Api { listen } => {
            let bank = bank::services::bank_on_kafka(&kafka(&cli.prefix)?).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            println!("bank API on http://{listen}");
            axum::serve(listener, bank::http::router(bank)).await?;
            Ok(())
        }
    }
}
