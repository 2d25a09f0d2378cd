//! The bank's read models on Kafka + Postgres, and the admin CLI over them.
//!
//! Account commands go through the command bus to a running account processor; the
//! projectors fold the stored events into `account_balances` and `transaction_history`.
//! Each test has a database (created on `ANNALS_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432`) and topics of its own.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use annals_core::repository::encode_event;
use annals_core::{
    Actor, AggregateId, AggregateRef, AggregateRepository, CommandGateway, CommandId, Envelope,
    EventId, EventStore, ExpectedVersion, JsonCodec, Metadata,
};
use annals_kafka_store::{CommandBus, KafkaEventStore, KafkaStoreOptions, ProcessorHandle};
use annals_projections::ops;
use annals_projections::{
    Database, DocumentProjection, PoisonPolicy, Projection, Projector, ProjectorHandle,
    ProjectorOptions,
};
use bank::domain::{Account, AccountCommand, AccountEvent, Currency, Money, Status};
use bank::read_models::{
    ACCOUNT_BALANCES, AccountBalance, AccountBalances, InMemoryBalances, Movement, MovementKind,
    TRANSACTION_HISTORY,
};
use sqlx::{Connection, Row};

use crate::support::{brokers, eventually, options, unique_prefix};

// ---------------------------------------------------------------------------------------
// Services

fn server_url() -> String {
    std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database of the test's own, dropped with the value (even after a panic).
pub(crate) struct TestDb {
    pub(crate) db: Database,
    name: String,
    url: String,
}

impl TestDb {
    pub(crate) async fn create() -> Option<Self> {
        let server = server_url();
        let mut admin = match sqlx::PgConnection::connect(&format!("{server}/postgres")).await {
            Ok(c) => c,
            Err(e)
                if std::env::var("ANNALS_SKIP_SERVICES").as_deref() == Ok("1")
                    && std::env::var("CI").is_err() =>
            {
                eprintln!("SKIPPED: Postgres at {server} is not reachable: {e}");
                return None;
            }
            Err(e) => panic!(
                "Postgres at {server} is not reachable ({e}): start it (`pg_ctlcluster 15 main \
                 start`, or `docker compose up -d postgres`) or point ANNALS_TEST_POSTGRES at \
                 a server that trusts user postgres"
            ),
        };
        let name = format!("bank_t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        let _ = admin.close().await;
        let url = format!("{server}/{name}");
        let db = Database::connect(&url)
            .await
            .expect("connecting to the test database");
        Some(Self { db, name, url })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, server) = (self.name.clone(), server_url());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) =
                    sqlx::PgConnection::connect(&format!("{server}/postgres")).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A bank on fresh topics and a fresh database, with its account processor running.
struct Deployment {
    test_db: TestDb,
    prefix: String,
    kafka: KafkaStoreOptions,
    accounts: CommandBus<Account>,
    processor: ProcessorHandle,
}

impl Deployment {
    async fn start() -> Option<Self> {
        let brokers = brokers()?;
        let test_db = TestDb::create().await?;
        let prefix = unique_prefix();
        let kafka = options(&brokers, &prefix);
        let processor = bank::services::accounts(&kafka).await.expect("processor");
        bank::services::wait_live(&processor, "account")
            .await
            .expect("live");
        let accounts = CommandBus::connect(kafka.clone()).await.expect("bus");
        Some(Self {
            test_db,
            prefix,
            kafka,
            accounts,
            processor,
        })
    }

    fn db(&self) -> &Database {
        &self.test_db.db
    }

    /// Sends a command as a teller; `false` when the account refused it.
    async fn send(&self, command: AccountCommand) -> bool {
        let metadata = Metadata::new(Actor::new("user:teller"), CommandId(uuid::Uuid::now_v7()));
        match self.accounts.send(command, metadata).await {
            Ok(_) => true,
            Err(annals_core::CommandError::Rejected(_)) => false,
            Err(e) => panic!("the command bus failed: {e:#?}"),
        }
    }

    /// Runs the scenario: accounts in two currencies opened, money moved, refused
    /// commands, a freeze and a close. Returns every account id.
    async fn run_scenario(&self, movers: usize) -> Vec<String> {
        let eur = |minor| Money::new(minor, Currency::EUR);
        let open = |id: &str, currency| AccountCommand::Open {
            account: id.into(),
            owner: format!("owner of {id}"),
            currency,
        };
        let deposit = |id: &str, minor| AccountCommand::Deposit {
            account: id.into(),
            amount: eur(minor),
        };
        let withdraw = |id: &str, minor| AccountCommand::Withdraw {
            account: id.into(),
            amount: eur(minor),
        };
        let alice = async {
            assert!(self.send(open("alice", Currency::EUR)).await);
            assert!(self.send(deposit("alice", 10_000)).await);
            assert!(self.send(withdraw("alice", 2_500)).await);
            assert!(!self.send(withdraw("alice", 99_999)).await, "no overdraft");
            assert!(
                self.send(AccountCommand::Freeze {
                    account: "alice".into(),
                    reason: "audit".into(),
                })
                .await
            );
            assert!(!self.send(deposit("alice", 5)).await, "frozen");
            assert!(
                self.send(AccountCommand::Unfreeze {
                    account: "alice".into()
                })
                .await
            );
            assert!(self.send(withdraw("alice", 734)).await);
        };
        let bob = async {
            assert!(self.send(open("bob", Currency::EUR)).await);
            assert!(self.send(deposit("bob", 500)).await);
            assert!(self.send(withdraw("bob", 500)).await);
            assert!(
                self.send(AccountCommand::Close {
                    account: "bob".into()
                })
                .await
            );
        };
        let carol = async {
            assert!(self.send(open("carol", Currency::USD)).await);
            assert!(
                self.send(AccountCommand::Deposit {
                    account: "carol".into(),
                    amount: Money::new(7_000, Currency::USD),
                })
                .await
            );
        };
        let movers_ids: Vec<String> = (0..movers).map(|i| format!("acc-{i}")).collect();
        let moves = movers_ids.iter().map(|id| async move {
            assert!(self.send(open(id, Currency::EUR)).await);
            for k in 0..8i64 {
                if k % 3 == 2 {
                    assert!(self.send(withdraw(id, 10 + k)).await);
                } else {
                    assert!(self.send(deposit(id, 100 * (k + 1))).await);
                }
            }
        });
        futures::join!(alice, bob, carol, futures::future::join_all(moves));
        let mut ids = vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()];
        ids.extend(movers_ids);
        ids
    }

    /// Every stored event of these accounts, read back from Kafka: the truth the read
    /// models must equal.
    async fn stored_events(&self, ids: &[String]) -> BTreeMap<String, Vec<Envelope<AccountEvent>>> {
        let store: Arc<dyn EventStore> = Arc::new(
            KafkaEventStore::connect(self.kafka.clone())
                .await
                .expect("store"),
        );
        let repository = AggregateRepository::<Account>::new(store);
        let mut all = BTreeMap::new();
        for id in ids {
            let events = repository
                .events(&AggregateId::new(id.as_str()))
                .await
                .expect("reads the account's events");
            all.insert(id.clone(), events);
        }
        all
    }
}

// ---------------------------------------------------------------------------------------
// What the events say, folded here independently of the projections

fn expected_balances(
    events: &BTreeMap<String, Vec<Envelope<AccountEvent>>>,
) -> BTreeMap<String, AccountBalance> {
    let mut out = BTreeMap::new();
    for (id, stream) in events {
        let mut doc: Option<AccountBalance> = None;
        for e in stream {
            match &e.payload {
                AccountEvent::Opened { owner, currency } => {
                    doc = Some(AccountBalance {
                        owner: owner.clone(),
                        currency: *currency,
                        balance: 0,
                        status: Status::Open,
                        version: 0,
                        updated_at: e.occurred_at,
                    });
                }
                other => {
                    let d = doc.as_mut().expect("opened first");
                    match other {
                        AccountEvent::Deposited { amount, .. } => d.balance += amount.minor,
                        AccountEvent::Withdrawn { amount, .. } => d.balance -= amount.minor,
                        AccountEvent::Frozen { .. } => d.status = Status::Frozen,
                        AccountEvent::Unfrozen => d.status = Status::Open,
                        AccountEvent::Closed => d.status = Status::Closed,
                        AccountEvent::Opened { .. } => {}
                    }
                }
            }
            if let Some(d) = doc.as_mut() {
                d.version = e.sequence.0;
                d.updated_at = e.occurred_at;
            }
        }
        if let Some(d) = doc {
            out.insert(id.clone(), d);
        }
    }
    out
}

/// The movements of one account, newest first (as `history` returns them).
fn expected_history(stream: &[Envelope<AccountEvent>]) -> Vec<Movement> {
    let mut movements: Vec<Movement> = stream
        .iter()
        .filter_map(|e| {
            let (kind, amount, balance_after) = match &e.payload {
                AccountEvent::Deposited {
                    amount,
                    balance_after,
                } => (MovementKind::Deposit, *amount, *balance_after),
                AccountEvent::Withdrawn {
                    amount,
                    balance_after,
                } => (MovementKind::Withdrawal, *amount, *balance_after),
                _ => return None,
            };
            Some(Movement {
                account: e.aggregate_id.to_string(),
                sequence: e.sequence.0,
                kind,
                amount,
                balance_after,
                occurred_at: e.occurred_at,
                actor: e.metadata.actor.to_string(),
                correlation_id: e.metadata.correlation_id.0,
            })
        })
        .collect();
    movements.reverse();
    movements
}

fn expected_totals(balances: &BTreeMap<String, AccountBalance>) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for b in balances.values() {
        *totals.entry(b.currency.to_string()).or_insert(0) += b.balance;
    }
    totals
}

/// The sum over partitions of the offset after the last of these events: where the
/// stored offsets of a caught-up projection add up to.
fn ends(events: &BTreeMap<String, Vec<Envelope<AccountEvent>>>) -> i64 {
    let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
    for e in events.values().flatten() {
        let p = e.position.as_ref().expect("stored events have positions");
        let end = ends.entry(p.partition.0).or_default();
        *end = (*end).max(p.offset.0 + 1);
    }
    ends.values()
        .map(|e| i64::try_from(*e).expect("small"))
        .sum()
}

/// Waits until the stored offsets of `projections` add up to `sum`.
async fn wait_for_offsets(db: &Database, projections: &[&str], sum: i64) {
    let names: Vec<String> = projections.iter().map(|p| (*p).to_owned()).collect();
    eventually(
        Duration::from_secs(90),
        &format!("the offsets of {names:?} to reach {sum}"),
        || async {
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT sum(o.next_offset)::int8 FROM annals_projection_offsets o
                 JOIN annals_projections p
                   ON p.projection = o.projection AND p.live_version = o.version
                 WHERE o.projection = ANY($1)",
            )
            .bind(&names)
            .fetch_one(db.pool())
            .await
            .ok()?;
            (stored == Some(sum)).then_some(())
        },
    )
    .await;
}

/// Waits until both read models have applied every one of `events`.
async fn wait_until_projected(
    db: &Database,
    events: &BTreeMap<String, Vec<Envelope<AccountEvent>>>,
) {
    wait_for_offsets(
        db,
        &[ACCOUNT_BALANCES, TRANSACTION_HISTORY],
        2 * ends(events),
    )
    .await;
}

async fn stop_all(handles: Vec<ProjectorHandle>) {
    for h in handles {
        h.stop().await.expect("the projector stops cleanly");
    }
}

// ---------------------------------------------------------------------------------------
// The read models

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balances_and_history_equal_what_the_events_say_in_postgres_and_in_memory() {
    let Some(bank) = Deployment::start().await else {
        return;
    };
    let projectors = bank::read_models::start(bank.db(), &bank.kafka)
        .await
        .expect("projectors start");
    let ids = bank.run_scenario(5).await;
    let events = bank.stored_events(&ids).await;
    let expected = expected_balances(&events);
    assert_eq!(expected["alice"].balance, 10_000 - 2_500 - 734);
    assert_eq!(expected["bob"].status, Status::Closed);

    wait_until_projected(bank.db(), &events).await;
    let balances = annals_projections::read::documents::<AccountBalances>(bank.db())
        .await
        .expect("reads balances");
    assert_eq!(
        balances, expected,
        "every balance document equals the events"
    );
    for (id, stream) in &events {
        assert_eq!(
            bank::read_models::balance(bank.db(), id)
                .await
                .expect("reads"),
            expected.get(id).cloned()
        );
        let history = bank::read_models::history(bank.db(), id, 1_000)
            .await
            .expect("reads history");
        assert_eq!(history, expected_history(stream), "history of {id}");
    }
    let limited = bank::read_models::history(bank.db(), "alice", 2)
        .await
        .expect("reads history");
    assert_eq!(
        limited.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        vec![6, 3],
        "the latest two movements, newest first"
    );
    assert_eq!(
        bank::read_models::total_balance(bank.db())
            .await
            .expect("sums"),
        expected_totals(&expected)
    );
    assert_eq!(
        bank::read_models::balance(bank.db(), "nobody")
            .await
            .expect("reads"),
        None
    );
    stop_all(projectors).await;

    // The same projection in memory over the same events gives the same documents.
    let store: Arc<dyn EventStore> = Arc::new(
        KafkaEventStore::connect(bank.kafka.clone())
            .await
            .expect("store"),
    );
    let memory = InMemoryBalances::new(store);
    let read = memory.catch_up().await.expect("folds in memory");
    assert_eq!(read as usize, events.values().map(Vec::len).sum::<usize>());
    assert_eq!(memory.balances().expect("reads"), expected);
    assert_eq!(
        memory.total_balance().expect("sums"),
        expected_totals(&expected)
    );
    assert_eq!(memory.catch_up().await.expect("nothing new"), 0);
    bank.processor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_an_empty_or_half_built_model_while_both_are_rebuilt() {
    let Some(bank) = Deployment::start().await else {
        return;
    };
    let projectors = bank::read_models::start(bank.db(), &bank.kafka)
        .await
        .expect("projectors start");
    let ids = bank.run_scenario(12).await;
    let events = bank.stored_events(&ids).await;
    let expected = expected_balances(&events);
    wait_until_projected(bank.db(), &events).await;
    let movements: i64 = events
        .values()
        .map(|s| expected_history(s).len() as i64)
        .sum();
    let complete = (expected.len() as i64, expected_totals(&expected), movements);

    // A reader queries both models through their reader views for the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let db = bank.db().clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let accounts: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM account_balances.documents")
                        .fetch_one(db.pool())
                        .await
                        .expect("readers can always query the balances");
                let totals = bank::read_models::total_balance(&db)
                    .await
                    .expect("readers can always sum the balances");
                let moves: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM transaction_history.movements")
                        .fetch_one(db.pool())
                        .await
                        .expect("readers can always query the history");
                let state = (accounts, totals, moves);
                if seen.last() != Some(&state) {
                    seen.push(state);
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            (seen, reads)
        })
    };

    for projection in bank::read_models::registry().iter() {
        let report = ops::rebuild(
            bank.db(),
            &bank.kafka,
            projection,
            ProjectorOptions::new().batch_size(20),
            |_| {},
        )
        .await
        .expect("rebuilds");
        assert_eq!((report.version, report.previous), (2, 1));
        assert_eq!(
            report.applied as usize,
            events.values().map(Vec::len).sum::<usize>()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (seen, reads) = reader.await.expect("the reader");
    assert!(reads > 10, "the reader kept reading ({reads} reads)");
    assert_eq!(
        seen,
        vec![complete],
        "every read, before, during and after the switches, saw the complete model"
    );
    let listed = ops::list(bank.db()).await.expect("lists");
    for p in &listed {
        assert_eq!(
            (p.live_version, p.building_version, p.versions.clone()),
            (2, None, vec![1, 2]),
            "{} switched to v2 and keeps v1",
            p.name
        );
    }
    assert_eq!(
        annals_projections::read::documents::<AccountBalances>(bank.db())
            .await
            .expect("reads"),
        expected
    );
    stop_all(projectors).await;
    bank.processor.shutdown().await;
}

/// Parking by key: a contradicting event written straight to an account's stream (no
/// processor owns the topic in this test) is parked with the events behind it; other
/// accounts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_contradicting_event_is_parked_and_the_cli_retries_in_vain_then_skips_it() {
    let Some(brokers) = brokers() else { return };
    let Some(test_db) = TestDb::create().await else {
        return;
    };
    let prefix = unique_prefix();
    let kafka = options(&brokers, &prefix);
    let store = KafkaEventStore::connect(kafka.clone())
        .await
        .expect("store");
    let append = |id: &'static str, events: Vec<AccountEvent>| {
        let store = &store;
        async move {
            let aggregate = AggregateRef::new("account", AggregateId::new(id));
            let metadata =
                Metadata::new(Actor::new("user:import"), CommandId(uuid::Uuid::now_v7()));
            let encoded = events
                .iter()
                .map(|e| {
                    encode_event(
                        e,
                        &aggregate,
                        &JsonCodec,
                        EventId(uuid::Uuid::now_v7()),
                        chrono::Utc::now(),
                        &metadata,
                    )
                    .expect("encodes")
                })
                .collect();
            store
                .append(
                    "account",
                    &AggregateId::new(id),
                    ExpectedVersion::Any,
                    encoded,
                )
                .await
                .expect("appends")
        }
    };
    let eur = |minor| Money::new(minor, Currency::EUR);
    let opened = AccountEvent::Opened {
        owner: "Mallory".into(),
        currency: Currency::EUR,
    };
    append(
        "mallory",
        vec![
            opened.clone(),
            AccountEvent::Deposited {
                amount: eur(500),
                balance_after: 500,
            },
            // Contradicts the balance before it: poison.
            AccountEvent::Deposited {
                amount: eur(100),
                balance_after: 999,
            },
            AccountEvent::Deposited {
                amount: eur(1),
                balance_after: 1_000,
            },
        ],
    )
    .await;
    append(
        "trent",
        vec![
            opened,
            AccountEvent::Deposited {
                amount: eur(42),
                balance_after: 42,
            },
        ],
    )
    .await;

    let mut projector = Projector::new(
        test_db.db.clone(),
        kafka.clone(),
        Projection::document(AccountBalances),
    )
    .options(ProjectorOptions::new().poison_policy(PoisonPolicy::Park))
    .start()
    .await
    .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up() && p.parked == 2)
            .await
            .expect("runs"),
        "caught up with two parked: {:?}",
        projector.progress()
    );
    projector.stop().await.expect("stops");
    let balance = |id: &'static str| {
        let db = test_db.db.clone();
        async move {
            bank::read_models::balance(&db, id)
                .await
                .expect("reads")
                .map(|b| (b.balance, b.version))
        }
    };
    assert_eq!(
        balance("mallory").await,
        Some((500, 2)),
        "stops before poison"
    );
    assert_eq!(balance("trent").await, Some((42, 2)), "other keys go on");

    let cli = Cli::new(&test_db.url, &brokers, &prefix);
    let listed = cli
        .admin(&["projections", "dead-letters", ACCOUNT_BALANCES])
        .await;
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let out = text(&listed.stdout);
    let ids: Vec<i64> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(ids.len(), 2, "two parked: {out}");
    assert!(out.contains("parked") && out.contains("behind"), "{out}");
    assert!(
        out.contains("records balance 999"),
        "the error is shown: {out}"
    );

    // Nothing was fixed, so the retry fails again and changes nothing.
    let retried = cli
        .admin(&[
            "projections",
            "dead-letters",
            ACCOUNT_BALANCES,
            "retry",
            &ids[0].to_string(),
        ])
        .await;
    assert_eq!(retried.status.code(), Some(1), "{}", text(&retried.stderr));
    assert!(
        text(&retried.stderr).contains("failed again"),
        "{}",
        text(&retried.stderr)
    );
    assert_eq!(balance("mallory").await, Some((500, 2)));

    let skipped = cli
        .admin(&[
            "projections",
            "dead-letters",
            ACCOUNT_BALANCES,
            "skip",
            &ids[0].to_string(),
        ])
        .await;
    assert_eq!(skipped.status.code(), Some(0), "{}", text(&skipped.stderr));
    let again = cli
        .admin(&[
            "projections",
            "dead-letters",
            ACCOUNT_BALANCES,
            "skip",
            &ids[0].to_string(),
        ])
        .await;
    assert_eq!(again.status.code(), Some(1), "a skipped letter is resolved");
    assert!(text(&again.stderr).contains("already skipped"));
    let missing = cli
        .admin(&[
            "projections",
            "dead-letters",
            ACCOUNT_BALANCES,
            "skip",
            "999999",
        ])
        .await;
    assert_eq!(missing.status.code(), Some(4));

    // With the poison skipped, the event behind it no longer follows the last event
    // folded in (3 was never applied): retrying it fails too, and it stays parked.
    let behind = cli
        .admin(&[
            "projections",
            "dead-letters",
            ACCOUNT_BALANCES,
            "retry",
            &ids[1].to_string(),
        ])
        .await;
    assert_eq!(behind.status.code(), Some(1), "{}", text(&behind.stderr));
    let remaining = cli
        .admin(&["projections", "dead-letters", ACCOUNT_BALANCES, "--all"])
        .await;
    let out = text(&remaining.stdout);
    assert!(out.contains("skipped"), "{out}");
}

// ---------------------------------------------------------------------------------------
// The admin CLI

/// Runs `bank-admin` against one deployment.
struct Cli {
    database_url: String,
    brokers: String,
    prefix: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Cli {
    fn new(database_url: &str, brokers: &str, prefix: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            brokers: brokers.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// `bank-admin ARGS` with the deployment in the environment.
    async fn admin(&self, args: &[&str]) -> Output {
        self.run(args, &[]).await
    }

    /// `bank-admin ARGS` with the deployment in the environment, overridden by `env`
    /// (an empty value removes the variable).
    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bank-admin"));
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("ANNALS_PREFIX", &self.prefix);
        for (key, value) in env {
            if value.is_empty() {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
        }
        tokio::task::spawn_blocking(move || command.output().expect("runs bank-admin"))
            .await
            .expect("runs")
    }
}

/// The framework's rows that operator commands change (offsets, versions, dead
/// letters), to show that a failed command changed nothing.
async fn framework_state(db: &Database) -> Vec<String> {
    let mut state = Vec::new();
    for (table, query) in [
        (
            "projections",
            "SELECT projection || ' ' || live_version || ' ' || coalesce(building_version, 0) \
             || ' ' || last_version FROM annals_projections ORDER BY 1",
        ),
        (
            "offsets",
            "SELECT projection || ' v' || version || ' ' || topic || '/' || partition || ' ' \
             || next_offset || ' ' || high_water FROM annals_projection_offsets ORDER BY 1",
        ),
        (
            "dead letters",
            "SELECT id || ' ' || state FROM annals_dead_letters ORDER BY 1",
        ),
        (
            "schemas",
            "SELECT schema_name::text FROM information_schema.schemata ORDER BY 1",
        ),
    ] {
        let rows = sqlx::query(query)
            .fetch_all(db.pool())
            .await
            .expect("reads the framework's tables");
        state.extend(
            rows.iter()
                .map(|r| format!("{table}: {}", r.get::<String, _>(0))),
        );
    }
    state
}

/// The STORED column of each partition row of `status` output.
fn stored_offsets(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with('v'))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// A projection this binary has no code for: only its name is in the database.
struct EventCounts;

impl DocumentProjection for EventCounts {
    const NAME: &'static str = "account_event_counts";
    const AGGREGATES: &'static [&'static str] = &["account"];
    type Event = AccountEvent;
    type Document = u64;
    type Error = std::convert::Infallible;

    fn document_id(&self, event: &Envelope<AccountEvent>) -> Option<String> {
        Some(event.aggregate_id.to_string())
    }

    fn apply(
        &self,
        count: &mut Option<u64>,
        _: &Envelope<AccountEvent>,
    ) -> Result<(), Self::Error> {
        *count = Some(count.unwrap_or(0) + 1);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_cli_lists_shows_replays_rebuilds_and_refuses_bad_input() {
    let Some(bank) = Deployment::start().await else {
        return;
    };
    let projectors = bank::read_models::start(bank.db(), &bank.kafka)
        .await
        .expect("projectors start");
    let unknown_code = Projector::new(
        bank.db().clone(),
        bank.kafka.clone(),
        Projection::document(EventCounts),
    )
    .start()
    .await
    .expect("starts");
    let ids = bank.run_scenario(3).await;
    let events = bank.stored_events(&ids).await;
    let expected = expected_balances(&events);
    wait_until_projected(bank.db(), &events).await;
    wait_for_offsets(bank.db(), &["account_event_counts"], ends(&events)).await;
    unknown_code.stop().await.expect("stops");
    stop_all(projectors).await;
    let history_before: Vec<Vec<Movement>> = {
        let mut all = Vec::new();
        for id in &ids {
            all.push(
                bank::read_models::history(bank.db(), id, 1_000)
                    .await
                    .expect("reads"),
            );
        }
        all
    };
    let brokers = bank.kafka.brokers().to_owned();
    let cli = Cli::new(&bank.test_db.url, &brokers, &bank.prefix);

    // list: every projection, which ones this binary can rebuild.
    let list = cli.admin(&["projections", "list"]).await;
    assert_eq!(list.status.code(), Some(0), "{}", text(&list.stderr));
    let out = text(&list.stdout);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is listed: {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line(ACCOUNT_BALANCES)[..7],
        ["account_balances", "document", "v1", "-", "1", "0", "here"]
    );
    assert_eq!(
        line(TRANSACTION_HISTORY)[..7],
        ["transaction_history", "sql", "v1", "-", "1", "0", "here"]
    );
    assert_eq!(line("account_event_counts")[6], "-", "no code for it here");

    // status: a row per partition, stored offsets past the events.
    let status = cli
        .admin(&["projections", "status", ACCOUNT_BALANCES])
        .await;
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let out = text(&status.stdout);
    assert!(
        out.contains("account_balances (document): live v1"),
        "{out}"
    );
    let stored = stored_offsets(&out);
    assert_eq!(stored.len(), 3, "three partitions: {out}");
    assert!(stored.iter().any(|s| s != "0"), "offsets moved: {out}");
    let all = cli.admin(&["projections", "status"]).await;
    assert_eq!(all.status.code(), Some(0));
    assert_eq!(
        stored_offsets(&text(&all.stdout)).len(),
        9,
        "three projections"
    );

    // Bad input: a clear error, the documented exit code, nothing changed.
    let before = framework_state(bank.db()).await;
    // Arguments, environment overrides, exit code, a part of the message.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);
    let bad: Vec<Case<'_>> = vec![
        (
            vec!["projections", "status", "nosuch"],
            vec![],
            4,
            "unknown projection `nosuch`",
        ),
        (
            vec!["projections", "replay", "nosuch", "--from", "earliest"],
            vec![],
            4,
            "unknown projection `nosuch`",
        ),
        (
            vec![
                "projections",
                "replay",
                ACCOUNT_BALANCES,
                "--from",
                "yesterday",
            ],
            vec![],
            2,
            "expected `earliest`, `offset:N` or `time:RFC3339`",
        ),
        (
            vec![
                "projections",
                "replay",
                ACCOUNT_BALANCES,
                "--from",
                "offset:-3",
            ],
            vec![],
            2,
            "the offset is not a whole number",
        ),
        (
            vec![
                "projections",
                "replay",
                ACCOUNT_BALANCES,
                "--from",
                "time:2999-01-01T00:00:00Z",
            ],
            vec![],
            2,
            "the time is in the future",
        ),
        (
            vec!["projections", "replay", ACCOUNT_BALANCES],
            vec![],
            2,
            "--from",
        ),
        (
            vec!["projections", "list"],
            vec![("DATABASE_URL", "")],
            2,
            "set DATABASE_URL or pass --database-url",
        ),
        (
            vec!["projections", "list"],
            vec![("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")],
            3,
            "database unavailable",
        ),
        (
            vec![
                "projections",
                "replay",
                ACCOUNT_BALANCES,
                "--from",
                "earliest",
                "--timeout",
                "3",
            ],
            vec![("KAFKA_BROKERS", "127.0.0.1:1")],
            3,
            "kafka: counting partitions",
        ),
        (
            vec!["projections", "rebuild", "account_event_counts"],
            vec![],
            4,
            "this binary has no code for projection `account_event_counts`",
        ),
        (
            vec!["projections", "rebuild", "nosuch"],
            vec![],
            4,
            "unknown projection `nosuch`",
        ),
        (
            vec![
                "projections",
                "dead-letters",
                "account_event_counts",
                "retry",
                "1",
            ],
            vec![],
            4,
            "bank-admin",
        ),
        (
            vec!["projections", "abort-rebuild", ACCOUNT_BALANCES],
            vec![],
            4,
            "has no rebuild in progress",
        ),
        (
            vec!["projections", "drop-version", ACCOUNT_BALANCES, "1"],
            vec![],
            1,
            "v1: is live",
        ),
    ];
    for (args, env, code, message) in bad {
        let out = cli.run(&args, &env).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed nothing");
    }
    assert_eq!(
        framework_state(bank.db()).await,
        before,
        "no failed command changed anything"
    );

    // replay --from earliest: every stored offset of the live version back to 0.
    let replay = cli
        .admin(&[
            "projections",
            "replay",
            ACCOUNT_BALANCES,
            "--from",
            "earliest",
        ])
        .await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));
    assert!(text(&replay.stdout).contains("replaying account_balances v1 from the earliest event"));
    let status = cli
        .admin(&["projections", "status", ACCOUNT_BALANCES])
        .await;
    assert_eq!(
        stored_offsets(&text(&status.stdout)),
        vec!["0", "0", "0"],
        "status shows the reset: {}",
        text(&status.stdout)
    );
    let replay = cli
        .admin(&[
            "projections",
            "replay",
            TRANSACTION_HISTORY,
            "--from",
            "offset:0",
        ])
        .await;
    assert_eq!(replay.status.code(), Some(0), "{}", text(&replay.stderr));

    // Projectors apply everything again: a replay changes no balance and no movement.
    let projectors = bank::read_models::start(bank.db(), &bank.kafka)
        .await
        .expect("projectors start again");
    wait_until_projected(bank.db(), &events).await;
    stop_all(projectors).await;
    assert_eq!(
        annals_projections::read::documents::<AccountBalances>(bank.db())
            .await
            .expect("reads"),
        expected,
        "replayed balances are unchanged"
    );
    for (id, before) in ids.iter().zip(&history_before) {
        assert_eq!(
            &bank::read_models::history(bank.db(), id, 1_000)
                .await
                .expect("reads"),
            before,
            "replayed history of {id} is unchanged"
        );
    }
    assert!(
        ops::list(bank.db())
            .await
            .expect("lists")
            .iter()
            .all(|p| p.last_error.is_none()),
        "no projector stopped on an error"
    );

    // rebuild: a report, then the new version is live and the old one kept.
    let rebuild = cli
        .admin(&["projections", "rebuild", ACCOUNT_BALANCES])
        .await;
    assert_eq!(rebuild.status.code(), Some(0), "{}", text(&rebuild.stderr));
    let out = text(&rebuild.stdout);
    let total: usize = events.values().map(Vec::len).sum();
    assert!(
        out.contains(&format!(
            "rebuilt account_balances v2 (from scratch): {total} events applied, 0 parked"
        )),
        "{out}"
    );
    assert!(out.contains("readers now see v2; v1 is kept"), "{out}");
    let list = cli.admin(&["projections", "list"]).await;
    let out = text(&list.stdout);
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with(ACCOUNT_BALANCES))
        .expect("listed")
        .split_whitespace()
        .collect();
    assert_eq!(row[2..5], ["v2", "-", "1,2"]);
    assert_eq!(
        annals_projections::read::documents::<AccountBalances>(bank.db())
            .await
            .expect("reads"),
        expected,
        "the rebuilt model equals the events"
    );
    let dropped = cli
        .admin(&["projections", "drop-version", ACCOUNT_BALANCES, "1"])
        .await;
    assert_eq!(dropped.status.code(), Some(0), "{}", text(&dropped.stderr));
    let letters = cli
        .admin(&["projections", "dead-letters", ACCOUNT_BALANCES])
        .await;
    assert_eq!(letters.status.code(), Some(0));
    assert!(text(&letters.stdout).contains("no parked dead letters for account_balances"));
    bank.processor.shutdown().await;
}
