//! A thousand random transfers while the transfer service is killed with SIGKILL at
//! random moments: afterwards every transfer ended completed or compensated, and the
//! money is all there.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{
    Actor, Aggregate as _, AggregateId, AggregateRepository, CommandError, CommandGateway,
    CommandId, Error, EventStore, Metadata, Offset, Partition,
};
use annals_kafka_store::{CommandBus, KafkaEventStore, KafkaStoreOptions};
use annals_saga::{SagaCommand, SagaEvent, SagaInstance, SagaStatus};
use bank::domain::{Account, AccountCommand, Currency, Money, Transfer, TransferRequest};
use futures::StreamExt as _;

use crate::support::{brokers, options, unique_prefix};

const ACCOUNTS: usize = 20;
const INITIAL: i64 = 10_000;
const TRANSFERS: usize = 1_000;
const KILLS: usize = 4;

/// A bank service in a child process.
struct Service {
    child: Child,
}

impl Service {
    /// Starts `bank <service>` and waits until it says it is live.
    fn start(service: &str, brokers: &str, prefix: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
            .arg(service)
            .env("KAFKA_BROKERS", brokers)
            .env("ANNALS_PREFIX", prefix)
            .env("ANNALS_PARTITIONS", "3")
            .env("ANNALS_SESSION_TIMEOUT_MS", "2000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the bank binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "`bank {service}` did not go live"
            );
            match lines.next() {
                Some(Ok(line)) if line.contains("service live") => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("reading `bank {service}`: {e}"),
                None => panic!("`bank {service}` exited before going live"),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child }
    }

    /// SIGKILL: no shutdown, no flush, an open transaction left behind.
    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn meta(id: CommandId) -> Metadata {
    Metadata::new(Actor::new("user:test"), id)
}

fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::EUR)
}

/// A cheap deterministic pseudo-random sequence (xorshift), so a failure can be rerun.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Sends a command, resending it with the same id while the outcome is unknown.
async fn send_until_answered<A, G>(
    gateway: &G,
    command: A::Command,
) -> Result<(), CommandError<A::Rejection>>
where
    A: annals_core::Aggregate,
    A::Command: Clone,
    G: CommandGateway<A>,
{
    let id = CommandId(uuid::Uuid::now_v7());
    for _ in 0..20 {
        match gateway.send(command.clone(), meta(id)).await {
            Err(CommandError::Store(Error::Timeout { .. } | Error::Backend { .. })) => continue,
            other => return other.map(|_| ()),
        }
    }
    panic!("no answer after 20 tries");
}

async fn saga_states(options: &KafkaStoreOptions) -> BTreeMap<String, SagaInstance<Transfer>> {
    let store = KafkaEventStore::connect(options.clone())
        .await
        .expect("store");
    let mut states: BTreeMap<String, SagaInstance<Transfer>> = BTreeMap::new();
    for p in 0..3 {
        let mut stream = store.read_partition("transfer", Partition(p), Offset(0));
        while let Some(raw) = stream.next().await {
            let raw = raw.expect("saga streams verify");
            let event = annals_core::repository::decode_event::<SagaEvent<TransferRequest>>(
                raw,
                &annals_core::JsonCodec,
                &annals_core::Upcasters::new(),
            )
            .expect("saga events decode");
            states
                .entry(event.aggregate_id.to_string())
                .or_default()
                .apply(&event.payload);
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_transfers_survive_kill_9_of_the_transfer_service() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix();
    // Short command timeouts: a command sent while the transfer service is down is
    // resent (same id) instead of waiting long.
    let options = options(&brokers, &prefix).command_timeout(Duration::from_secs(4));
    let began = Instant::now();
    let _accounts = Service::start("accounts", &brokers, &prefix);
    let mut transfers_service = Some(Service::start("transfers", &brokers, &prefix));

    let accounts = CommandBus::<Account>::connect(options.clone())
        .await
        .expect("bus");
    let sagas = Arc::new(
        CommandBus::<SagaInstance<Transfer>>::connect(options.clone())
            .await
            .expect("saga bus"),
    );
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        send_until_answered(
            &accounts,
            AccountCommand::Open {
                account: id.clone(),
                owner: id.clone(),
                currency: Currency::EUR,
            },
        )
        .await
        .expect("open");
        send_until_answered(
            &accounts,
            AccountCommand::Deposit {
                account: id,
                amount: eur(INITIAL),
            },
        )
        .await
        .expect("deposit");
    }
    // Some transfers must fail: one account is frozen, some targets do not exist, some
    // amounts exceed what the source holds.
    send_until_answered(
        &accounts,
        AccountCommand::Freeze {
            account: "acc-0".into(),
            reason: "test".into(),
        },
    )
    .await
    .expect("freeze");

    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let requests: Vec<(String, TransferRequest)> = (0..TRANSFERS)
        .map(|i| {
            let from = rng.below(ACCOUNTS as u64);
            let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1)) % ACCOUNTS as u64;
            let to = if rng.below(50) == 0 {
                "ghost".to_owned()
            } else {
                format!("acc-{to}")
            };
            let big = rng.below(10) == 0;
            let amount = 1 + rng.below(if big { 50_000 } else { 2_000 }) as i64;
            (
                format!("tr-{i}"),
                TransferRequest {
                    from: format!("acc-{from}"),
                    to,
                    amount: eur(amount),
                },
            )
        })
        .collect();

    let starter = {
        let sagas = Arc::clone(&sagas);
        let requests = requests.clone();
        tokio::spawn(async move {
            let chunks: Vec<Vec<(String, TransferRequest)>> =
                requests.chunks(25).map(<[_]>::to_vec).collect();
            for chunk in chunks {
                let starts = chunk.into_iter().map(|(id, input)| {
                    let sagas = Arc::clone(&sagas);
                    async move {
                        send_until_answered(
                            sagas.as_ref(),
                            SagaCommand::Start {
                                saga_id: AggregateId::new(id),
                                input,
                            },
                        )
                        .await
                        .expect("valid transfers start");
                    }
                });
                futures::future::join_all(starts).await;
            }
        })
    };

    // Kill the transfer service at random moments while transfers run.
    let kills: usize = std::env::var("ANNALS_TEST_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(KILLS);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(800 + rng.below(2_000))).await;
        if let Some(service) = transfers_service.take() {
            service.kill9();
        }
        transfers_service = Some(Service::start("transfers", &brokers, &prefix));
    }
    starter.await.expect("every transfer was started");
    eprintln!("all transfers started after {:?}", began.elapsed());

    // Every transfer ends, completed or compensated.
    let deadline = Instant::now() + Duration::from_secs(180);
    let states = loop {
        let states = saga_states(&options).await;
        let open = states.values().filter(|s| !s.status.is_final()).count();
        if states.len() == TRANSFERS && open == 0 {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {TRANSFERS} transfers started, {open} not finished",
            states.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let completed = states
        .values()
        .filter(|s| s.status == SagaStatus::Completed)
        .count();
    let compensated = states
        .values()
        .filter(|s| s.status == SagaStatus::Compensated)
        .count();
    assert_eq!(
        completed + compensated,
        TRANSFERS,
        "no transfer stuck or abandoned"
    );
    assert!(
        completed > 0 && compensated > 0,
        "both outcomes occurred: {completed} / {compensated}"
    );

    // Money is conserved, and it moved exactly as the completed transfers say.
    let store: Arc<dyn EventStore> = Arc::new(
        KafkaEventStore::connect(options.clone())
            .await
            .expect("store"),
    );
    let repo = AggregateRepository::<Account>::new(store);
    let mut expected: BTreeMap<String, i64> = (0..ACCOUNTS)
        .map(|i| (format!("acc-{i}"), INITIAL))
        .collect();
    for (id, request) in &requests {
        if states[id].status == SagaStatus::Completed {
            *expected.get_mut(&request.from).expect("source") -= request.amount.minor;
            *expected.get_mut(&request.to).expect("target") += request.amount.minor;
        }
    }
    let mut total = 0;
    for (account, want) in &expected {
        let loaded = repo
            .load(&AggregateId::new(account.as_str()))
            .await
            .expect("account streams verify");
        assert_eq!(loaded.state.balance(), *want, "balance of {account}");
        total += loaded.state.balance();
    }
    assert_eq!(total, INITIAL * ACCOUNTS as i64, "money conserved");

    // The read model, folded by a projector from the same events, says the same.
    let Some(test_db) = crate::read_models::TestDb::create().await else {
        return;
    };
    let projectors = bank::read_models::start(&test_db.db, &options)
        .await
        .expect("projectors start");
    crate::support::eventually(
        Duration::from_secs(120),
        "the read model to catch up",
        || async {
            for (account, want) in &expected {
                match bank::read_models::balance(&test_db.db, account).await {
                    Ok(Some(b)) if b.balance == *want => {}
                    _ => return None,
                }
            }
            Some(())
        },
    )
    .await;
    let totals = bank::read_models::total_balance(&test_db.db)
        .await
        .expect("totals");
    assert_eq!(
        totals.get("EUR").copied(),
        Some(INITIAL * ACCOUNTS as i64),
        "money conserved in the read model"
    );
    for p in projectors {
        p.stop().await.expect("projector stops");
    }
    eprintln!(
        "{TRANSFERS} transfers: {completed} completed, {compensated} compensated, {KILLS} kills"
    );
}
