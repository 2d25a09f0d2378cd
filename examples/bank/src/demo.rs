//! The demo: every part of annals at work on a small bank, printed as it happens.

use std::sync::Arc;

use annals_core::{
    Actor, AggregateId, AggregateRepository, CommandError, CommandGateway, CommandId, Error,
    EventStore, MemoryEventStore, Metadata, Version,
};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore, KafkaStoreOptions};
use anyhow::Context as _;
use std::time::Duration;

use annals_core::Aggregate as _;
use annals_saga::{Outgoing, Participant, Saga as _, SagaRunner, StepOutcome};

use crate::domain::{
    Account, AccountCommand, AccountError, Currency, Money, Transfer, TransferRequest,
};
use crate::http;
use crate::service::{Bank, InProcessTransfers, Transfers as _};

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
    run_transfers_in_memory(&store, &accounts).await?;
    show_http_api(&store, &accounts).await?;
    show_tamper_detection(&memory, &accounts).await?;
    Ok(())
}

/// Serves the HTTP API on a free local port and calls it over a real socket.
async fn show_http_api(
    store: &Arc<dyn EventStore>,
    accounts: &AggregateRepository<Account>,
) -> anyhow::Result<()> {
    println!("\n== the HTTP API ==");
    let runner = SagaRunner::<Transfer>::new(AggregateRepository::new(store.clone()))
        .with_participant(Account::TYPE, Arc::new(accounts.clone()));
    let bank = Bank::new(
        Arc::new(accounts.clone()),
        accounts.clone(),
        Arc::new(InProcessTransfers { runner }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a local port")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, http::router(bank)).await });
    println!("serving on http://{addr}");
    let calls: [(&str, &str, Option<serde_json::Value>); 3] = [
        (
            "POST",
            "/transfers",
            Some(serde_json::json!({
                "id": "t-4", "from": "carol", "to": "alice",
                "amount": { "minor": 500, "currency": "EUR" }
            })),
        ),
        ("GET", "/accounts/carol", None),
        (
            "POST",
            "/accounts/carol/withdrawals",
            Some(serde_json::json!({ "amount": { "minor": 1_000_000, "currency": "EUR" } })),
        ),
    ];
    for (method, path, body) in calls {
        let (status, json) = http::client::request(addr, method, path, body.as_ref()).await?;
        let shown = match json.get("trail") {
            Some(_) => format!("status {}", json["status"]),
            None => json.to_string(),
        };
        println!("{method:>4} {path:<28} -> {status} {shown}");
    }
    server.abort();
    Ok(())
}

/// A participant that lets the demo act as a second user: just before the credit of a
/// chosen transfer reaches its target, compliance freezes that target.
struct FreezeBeforeCredit {
    accounts: AggregateRepository<Account>,
    target: String,
}

#[async_trait::async_trait]
impl Participant for FreezeBeforeCredit {
    async fn handle(&self, command: &Outgoing, metadata: Metadata) -> Option<StepOutcome> {
        let is_credit =
            command.aggregate_id.as_str() == self.target && command.command_type == "Deposit";
        if is_credit {
            let frozen = self
                .accounts
                .execute(
                    AccountCommand::Freeze {
                        account: self.target.clone(),
                        reason: "compliance review".into(),
                    },
                    meta("user:compliance"),
                )
                .await;
            if frozen.is_ok() {
                println!("  (meanwhile compliance freezes {})", self.target);
            }
        }
        self.accounts.handle(command, metadata).await
    }
}

async fn run_transfers_in_memory(
    store: &Arc<dyn EventStore>,
    accounts: &AggregateRepository<Account>,
) -> anyhow::Result<()> {
    println!("\n== transfers: sagas with compensation ==");
    for (id, owner) in [("carol", "Carol"), ("dave", "Dave")] {
        accounts
            .execute(
                AccountCommand::Open {
                    account: id.into(),
                    owner: owner.into(),
                    currency: Currency::EUR,
                },
                meta("user:teller"),
            )
            .await
            .with_context(|| format!("opening {id}"))?;
    }
    let participant = Arc::new(FreezeBeforeCredit {
        accounts: accounts.clone(),
        target: "dave".into(),
    });
    let transfers = SagaRunner::<Transfer>::new(AggregateRepository::new(store.clone()))
        .with_participant(Account::TYPE, participant);
    let requests = [
        ("t-1", "alice", "carol", 2_500),
        ("t-2", "alice", "dave", 1_000),
    ];
    for (id, from, to, minor) in requests {
        let request = TransferRequest {
            from: from.into(),
            to: to.into(),
            amount: eur(minor),
        };
        println!("transfer {id}: {from} -> {to} {}", request.amount);
        let saga = transfers
            .start(AggregateId::new(id), request, meta("user:alice"))
            .await
            .with_context(|| format!("transfer {id}"))?;
        let events = transfers.sagas().events(&AggregateId::new(id)).await?;
        let trail: Vec<String> = events
            .iter()
            .map(|e| e.payload.describe(Transfer::steps()))
            .collect();
        println!("  {:?}: {}", saga.status, trail.join(" > "));
    }
    let refused = transfers
        .start(
            AggregateId::new("t-3"),
            TransferRequest {
                from: "alice".into(),
                to: "alice".into(),
                amount: eur(100),
            },
            meta("user:alice"),
        )
        .await;
    match refused {
        Err(CommandError::Rejected(reason)) => {
            println!("transfer t-3: alice -> alice: rejected before anything moved: {reason:#}");
        }
        other => anyhow::bail!("a transfer to oneself must be refused, got {other:?}"),
    }
    let mut total = 0;
    print!("balances:");
    for id in ["alice", "bob", "carol", "dave"] {
        let balance = accounts.load(&AggregateId::new(id)).await?.state.balance();
        total += balance;
        print!(" {id} {}", eur(balance));
    }
    println!();
    anyhow::ensure!(
        total == 7_000,
        "money must be conserved: 70.00 EUR deposited net, found {}",
        eur(total)
    );
    println!("money conserved: the balances add up to the 70.00 EUR deposited net");
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
    crate::services::wait_live(&processor, "account").await?;
    println!(
        "account processor owns partitions {:?}",
        processor.live_partitions()
    );
    let bus = CommandBus::<Account>::connect(options.clone())
        .await
        .context("connecting the command bus")?;
    run_accounts(&bus).await?;
    run_transfers_on_kafka(&options, &bus).await?;
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => show_read_models(&options, &url).await?,
        _ => println!("\n(set DATABASE_URL to see the read models in Postgres)"),
    }

    println!("\n== audit: every stream verifies ==");
    let store: Arc<dyn EventStore> = Arc::new(
        KafkaEventStore::connect(options)
            .await
            .context("connecting the event store")?,
    );
    let accounts = AggregateRepository::<Account>::new(store);
    for id in ["alice", "bob", "carol"] {
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

/// Runs the transfer service in this process and two transfers through it: one
/// completes, one is refused by the frozen target and compensated before money moves.
async fn run_transfers_on_kafka(
    options: &KafkaStoreOptions,
    accounts: &dyn CommandGateway<Account>,
) -> anyhow::Result<()> {
    println!("\n== transfers: sagas on Kafka ==");
    let service = crate::services::transfers(options).await?;
    crate::services::wait_live(&service, "transfer").await?;
    accounts
        .send(
            AccountCommand::Open {
                account: "carol".into(),
                owner: "Carol".into(),
                currency: Currency::EUR,
            },
            meta("user:teller"),
        )
        .await
        .context("opening carol")?;
    let transfers = crate::services::KafkaTransfers::connect(options).await?;
    for (id, to) in [("t-1", "carol"), ("t-2", "bob")] {
        let request = TransferRequest {
            from: "alice".into(),
            to: to.into(),
            amount: eur(2_500),
        };
        println!("transfer {id}: alice -> {to} {}", request.amount);
        transfers
            .start(AggregateId::new(id), request, meta("user:alice"))
            .await
            .with_context(|| format!("starting {id}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let view = loop {
            match transfers.get(&AggregateId::new(id)).await? {
                Some(view) if view.status.is_final() => break view,
                _ if tokio::time::Instant::now() > deadline => {
                    anyhow::bail!("transfer {id} did not finish within a minute")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        println!("  {:?}: {}", view.status, view.trail.join(" > "));
    }
    service.shutdown().await;
    Ok(())
}

/// Creates a database of its own for this run on the server of `url` and returns its
/// URL, so the demo's read models start empty.
async fn fresh_database(url: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to Postgres at {url}"))?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Ok(format!("{server}/{name}{query}"))
}

/// Projects the run's events into Postgres and reads the models back: balances
/// (document projection), the transaction history (SQL projection) and the transfer
/// sagas' states, each exactly once however often the projectors restart.
async fn show_read_models(options: &KafkaStoreOptions, url: &str) -> anyhow::Result<()> {
    use crate::read_models;
    use crate::transfer_read_model::TransferSagas;
    println!("\n== read models in Postgres ==");
    let name = options.prefix().replace('-', "_");
    let db_url = fresh_database(url, &name).await?;
    let db = annals_projections::Database::connect(&db_url).await?;
    let mut projectors = read_models::start(&db, options).await?;
    projectors.push(
        annals_projections::Projector::new(
            db.clone(),
            options.clone(),
            annals_projections::Projection::document(TransferSagas),
        )
        .start()
        .await?,
    );
    println!("projecting into database {name}");
    // The read models follow the events: wait until they have caught up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let alice = read_models::balance(&db, "alice").await?;
        let sagas = annals_projections::read::documents::<TransferSagas>(&db).await?;
        let settled = sagas.len() == 2 && sagas.values().all(|t| t.status.is_final());
        if alice.as_ref().is_some_and(|a| a.balance == 4_500) && settled {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the read models did not catch up within a minute"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in ["alice", "bob", "carol"] {
        if let Some(a) = read_models::balance(&db, id).await? {
            println!(
                "{id:>5}: {} ({:?}, version {})",
                eur(a.balance),
                a.status,
                a.version
            );
        }
    }
    let history = read_models::history(&db, "alice", 10).await?;
    println!("alice's history: {} movements, newest first", history.len());
    for m in history {
        println!(
            "  #{} {:?} {} -> balance {}",
            m.sequence,
            m.kind,
            m.amount,
            eur(m.balance_after)
        );
    }
    for (id, t) in annals_projections::read::documents::<TransferSagas>(&db).await? {
        println!("transfer {id}: {:?} ({})", t.status, t.last_step);
    }
    println!(
        "totals by currency: {:?}",
        read_models::total_balance(&db).await?
    );
    for p in projectors {
        p.stop().await?;
    }
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
