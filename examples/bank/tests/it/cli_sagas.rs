//! `annals sagas` (through the bank's admin binary) against real transfers on Kafka.

use std::process::{Command, Output};

use annals_core::{Actor, AggregateId, CommandGateway as _, CommandId, Metadata};
use annals_kafka_store::{CommandBus, KafkaStoreOptions};
use annals_saga::{SagaCommand, SagaInstance};
use bank::domain::{Account, AccountCommand, Currency, Money, Transfer, TransferRequest};

use crate::support::{brokers, eventually, options, unique_prefix};

fn meta() -> Metadata {
    Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7()))
}

fn admin(brokers: &str, prefix: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bank-admin"))
        .args(["--prefix", prefix, "--timeout", "10"])
        .args(args)
        .env("KAFKA_BROKERS", brokers)
        .env_remove("DATABASE_URL")
        .output()
        .expect("bank-admin runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn start(options: &KafkaStoreOptions, id: &str, from: &str, to: &str) {
    let bus = CommandBus::<SagaInstance<Transfer>>::connect(options.clone())
        .await
        .expect("bus");
    bus.send(
        SagaCommand::Start {
            saga_id: AggregateId::new(id),
            input: TransferRequest {
                from: from.into(),
                to: to.into(),
                amount: Money::new(100, Currency::EUR),
            },
        },
        meta(),
    )
    .await
    .expect("start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_list_show_retry_and_abandon_sagas() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix();
    let options = options(&brokers, &prefix);
    let (accounts, transfers) = crate::support::start_services(&options).await;
    let bus = CommandBus::<Account>::connect(options.clone())
        .await
        .expect("bus");
    for id in ["a", "b"] {
        bus.send(
            AccountCommand::Open {
                account: id.into(),
                owner: id.into(),
                currency: Currency::EUR,
            },
            meta(),
        )
        .await
        .expect("open");
    }
    bus.send(
        AccountCommand::Deposit {
            account: "a".into(),
            amount: Money::new(1_000, Currency::EUR),
        },
        meta(),
    )
    .await
    .expect("deposit");
    start(&options, "t-ok", "a", "b").await;
    eventually(
        std::time::Duration::from_secs(30),
        "t-ok to complete",
        || async {
            let out = admin(
                &brokers,
                &prefix,
                &["sagas", "list", "transfer", "--status", "completed"],
            );
            text(&out).contains("t-ok").then_some(())
        },
    )
    .await;

    // With the account service gone, a new transfer waits for its first step.
    accounts.shutdown().await;
    start(&options, "t-wait", "a", "b").await;

    let list = admin(&brokers, &prefix, &["sagas", "list", "transfer"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = text(&list);
    assert!(
        listed.contains("t-ok") && listed.contains("completed"),
        "{listed}"
    );
    assert!(
        listed.contains("t-wait") && listed.contains("running"),
        "{listed}"
    );

    let show = admin(&brokers, &prefix, &["sagas", "show", "transfer", "t-ok"]);
    assert!(show.status.success());
    let shown = text(&show);
    for line in [
        "status: Completed",
        "SagaStepSucceeded",
        "SagaCompleted",
        "step 1 (Withdraw to account/a) sent",
        "by reaction:transfer",
    ] {
        assert!(shown.contains(line), "`{line}` missing from:\n{shown}");
    }

    let retry = admin(&brokers, &prefix, &["sagas", "retry", "transfer", "t-ok"]);
    assert_eq!(retry.status.code(), Some(1), "{}", text(&retry));
    assert!(text(&retry).contains("not stuck"), "{}", text(&retry));

    let abandon = admin(
        &brokers,
        &prefix,
        &["sagas", "abandon", "transfer", "t-wait", "--reason", "test"],
    );
    assert!(abandon.status.success(), "{}", text(&abandon));
    let abandoned = admin(
        &brokers,
        &prefix,
        &["sagas", "list", "transfer", "--status", "abandoned"],
    );
    assert!(text(&abandoned).contains("t-wait"), "{}", text(&abandoned));

    let missing = admin(&brokers, &prefix, &["sagas", "show", "transfer", "nope"]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing));
    let no_topic = admin(&brokers, &prefix, &["sagas", "list", "payment"]);
    assert_eq!(no_topic.status.code(), Some(4), "{}", text(&no_topic));
    transfers.shutdown().await;
}
