//! The demo: every part of annals at work on a small bank, printed as it happens.

use std::sync::Arc;

use annals_core::{
    Actor, AggregateId, AggregateRepository, CommandError, CommandGateway, CommandId, Error,
    EventStore, MemoryEventStore, Metadata, Version,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions};
use anyhow::Context as _;
use std::time::Duration;

use crate::domain::{Account, AccountCommand, AccountError, Currency, Money};

fn meta(actor: &str) -> Metadata {
    Metadata::new(Actor::new(actor), CommandId(uuid::Uuid::now_v7()))
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// Runs the demo: on Kafka when `KAFKA_BROKERS` is set, on the embedded in-memory
/// store otherwise.
pub async fn run() -> anyhow::Result<()> {
    match KafkaStoreOptions::from_env() {
        Some(options) => run_on_kafka(options).await?,
        None => run_in_memory().await?,
    }
    println!("\ndemo finished: every step above behaved as expected");
    Ok(())
}

async fn run_in_memory() -> anyhow::Result<()> {
    let memory = Arc::new(MemoryEventStore::new().with_prefix("bank"));
    let store: Arc<dyn EventStore> = memory.clone();
    println!("annals bank demo — store: in-memory (set KAFKA_BROKERS to run it on Kafka)\n");
    let accounts = AggregateRepository::<Account>::new(store.clone());
    run_accounts(&accounts).await?;
    show_tamper_detection(&memory, &accounts).await?;
    Ok(())
}

async fn run_on_kafka(options: KafkaStoreOptions) -> anyhow::Result<()> {
    // A fresh prefix per run, so the demo's accounts start new every time.
    let run = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("bank-demo-{}", &run[20..]);
    let options = options
        .topic_prefix(prefix.clone())
        .app_id(prefix.clone())
        .partitions(4)
        .session_timeout(Duration::from_secs(6));
    println!(
        "annals bank demo — store: Kafka at {} (topics {prefix}.*)\n",
        std::env::var("KAFKA_BROKERS").unwrap_or_default(),
    );
    let processor = CommandProcessor::<Account>::new(options.clone())
        .start()
        .await
        .context("starting the account processor")?;
    let ready = processor
        .wait_for(Duration::from_secs(60), |live| live.len() == 4)
        .await;
    anyhow::ensure!(
        ready,
        "the account processor did not take its partitions: {:?}",
        processor.partition_errors()
    );
    println!(
        "account processor owns partitions {:?}",
        processor.live_partitions()
    );
    let bus = CommandBus::<Account>::connect(options.clone())
        .await
        .context("connecting the command bus")?;
    run_accounts(&bus).await?;

    println!("\n== audit: every stream verifies ==");
    let store: Arc<dyn EventStore> = Arc::new(
        KafkaEventStore::connect(options)
            .await
            .context("connecting the event store")?,
    );
    let accounts = AggregateRepository::<Account>::new(store);
    for id in ["alice", "bob"] {
        let events = accounts.events(&AggregateId::new(id)).await?;
        let last = events.last().context("the account has events")?;
        println!(
            "{id:>5}: {} events, sequences gapless, hash chain verified, head {}",
            events.len(),
            &last.hash.to_hex()[..16]
        );
    }
    processor.shutdown().await;
    Ok(())
}

/// Opens accounts, moves money and shows the domain refusing bad commands.
pub async fn run_accounts(accounts: &dyn CommandGateway<Account>) -> anyhow::Result<()> {
    println!("== accounts ==");
    for (id, owner) in [("alice", "Alice"), ("bob", "Bob")] {
        let done = accounts
            .send(
                AccountCommand::Open {
                    account: id.into(),
                    owner: owner.into(),
                    currency: Currency::EUR,
                },
                meta("user:teller"),
            )
            .await
            .with_context(|| format!("opening {id}"))?;
        println!("opened {id:>5} for {owner} (version {})", done.version);
    }
    let done = accounts
        .send(
            AccountCommand::Deposit {
                account: "alice".into(),
                amount: eur(10_000),
            },
            meta("user:alice"),
        )
        .await
        .context("depositing")?;
    println!("alice deposits {} -> version {}", eur(10_000), done.version);
    let done = accounts
        .send(
            AccountCommand::Withdraw {
                account: "alice".into(),
                amount: eur(3_000),
            },
            meta("user:alice"),
        )
        .await
        .context("withdrawing")?;
    println!("alice withdraws {} -> version {}", eur(3_000), done.version);

    println!("\n== the domain refuses bad commands ==");
    let refusals = [
        (
            "overdraft",
            AccountCommand::Withdraw {
                account: "bob".into(),
                amount: eur(1),
            },
        ),
        (
            "zero amount",
            AccountCommand::Deposit {
                account: "alice".into(),
                amount: eur(0),
            },
        ),
        (
            "wrong currency",
            AccountCommand::Deposit {
                account: "alice".into(),
                amount: Money::new(500, Currency::USD),
            },
        ),
        (
            "unknown account",
            AccountCommand::Deposit {
                account: "carol".into(),
                amount: eur(500),
            },
        ),
    ];
    for (what, command) in refusals {
        match accounts.send(command, meta("user:mallory")).await {
            Err(CommandError::Rejected(reason)) => println!("{what:>16}: rejected: {reason}"),
            other => anyhow::bail!("{what} should have been rejected, got {other:?}"),
        }
    }
    accounts
        .send(
            AccountCommand::Freeze {
                account: "bob".into(),
                reason: "identity check".into(),
            },
            meta("user:compliance"),
        )
        .await
        .context("freezing")?;
    match accounts
        .send(
            AccountCommand::Deposit {
                account: "bob".into(),
                amount: eur(500),
            },
            meta("user:bob"),
        )
        .await
    {
        Err(CommandError::Rejected(AccountError::Frozen)) => {
            println!("    frozen bob: deposit rejected: account is frozen");
        }
        other => anyhow::bail!("a frozen account must refuse deposits, got {other:?}"),
    }
    Ok(())
}

/// Rewrites a stored event behind the store's back and shows the read catching it.
async fn show_tamper_detection(
    memory: &MemoryEventStore,
    accounts: &AggregateRepository<Account>,
) -> anyhow::Result<()> {
    println!("\n== audit: the hash chain reveals tampering ==");
    let alice = AggregateId::new("alice");
    let loaded = accounts.load(&alice).await?;
    println!(
        "alice's balance from her {} events: {}",
        loaded.version,
        eur(loaded.state.balance())
    );
    let events = accounts.events(&alice).await?;
    let deposit = events
        .iter()
        .find(|e| e.sequence == Version(2))
        .and_then(|e| e.position.clone())
        .context("alice's deposit has a position")?;
    memory.tamper_with("account", (deposit.partition, deposit.offset), |event| {
        event.payload.bytes =
            br#"{"amount":{"minor":1000000,"currency":"EUR"},"balance_after":1000000}"#.to_vec();
    });
    println!("an intruder rewrites the deposit at {deposit} to 10,000.00 EUR");
    match accounts.load(&alice).await {
        Err(Error::HashChain { at, kind }) => {
            println!("load refused: hash chain broken at {at}: {kind}")
        }
        other => anyhow::bail!("tampering went unnoticed: {other:?}"),
    }
    Ok(())
}
