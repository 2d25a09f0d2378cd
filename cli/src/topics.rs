//! `annals topics`.

use annals_kafka_store::KafkaStoreOptions;
use annals_kafka_store::inspect::{list_topics, partition_ends};
use anyhow::Context as _;
use clap::Subcommand;

use crate::exit::{Code, Failure, OrExit as _};

/// Topic commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TopicsCommand {
    /// List the deployment's topics (those under the prefix) with their partitions and
    /// record counts.
    List {
        /// List every topic of the cluster, not only the prefix's.
        #[arg(long)]
        all: bool,
    },
}

pub(crate) async fn run(
    command: TopicsCommand,
    options: &KafkaStoreOptions,
) -> Result<(), Failure> {
    let TopicsCommand::List { all } = command;
    let options = options.clone();
    let prefix = format!("{}.", options.prefix());
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, u32, u64)>> {
        let topics = list_topics(&options).context("listing topics")?;
        let mut rows = Vec::new();
        for t in topics
            .into_iter()
            .filter(|t| all || t.name.starts_with(&prefix))
        {
            let ends = partition_ends(&options, &t.name, t.partitions)?;
            rows.push((t.name, t.partitions, ends.iter().sum()));
        }
        Ok(rows)
    })
    .await
    .or_exit(Code::Unavailable)?
    .or_exit(Code::Unavailable)?;
    if rows.is_empty() {
        return Err(Failure::new(
            Code::NotFound,
            anyhow::anyhow!(
                "no topics{}",
                if all {
                    ""
                } else {
                    " under the prefix (use --prefix or --all)"
                }
            ),
        ));
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5);
    println!(
        "{:<width$}  {:>10}  {:>12}  KIND",
        "TOPIC", "PARTITIONS", "OFFSETS"
    );
    for (name, partitions, end) in rows {
        let kind = name.rsplit('.').next().unwrap_or("");
        let kind = match kind {
            "events" | "commands" | "replies" | "snapshots" => kind,
            _ => "-",
        };
        println!("{name:<width$}  {partitions:>10}  {end:>12}  {kind}");
    }
    Ok(())
}
