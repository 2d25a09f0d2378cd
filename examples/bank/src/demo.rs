//! The demo: every part of annals at work on a small bank, printed as it happens.

use std::sync::Arc;

use annals_core::{
    Actor, AggregateId, AggregateRepository, CommandError, CommandGateway, CommandId, Error,
    EventStore, MemoryEventStore, Metadata, Version,
};
use anyhow::Context as _;

use crate::domain::{Account, AccountCommand, AccountError, Currency, Money};

fn meta(actor: &str) -> Metadata {
    Metadata::new(Actor::new(actor), CommandId(uuid::Uuid::now_v7()))
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// Runs the demo on the in-memory store.
pub async fn run() -> anyhow::Result<()> {
    let memory = Arc::new(MemoryEventStore::new().with_prefix("bank"));
    let store: Arc<dyn EventStore> = memory.clone();
    println!("annals bank demo — store: in-memory (set KAFKA_BROKERS for Kafka)\n");
    let accounts = AggregateRepository::<Account>::new(store.clone());
    run_accounts(&accounts).await?;
    show_tamper_detection(&memory, &accounts).await?;
    println!("\ndemo finished: every step above behaved as expected");
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
