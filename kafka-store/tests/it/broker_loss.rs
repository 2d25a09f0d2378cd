//! A broker that dies under a running processor and bus (a private broker, never the
//! shared one): callers get typed errors within the command timeout, nothing panics,
//! and the processor still shuts down. (Tansu's memory storage loses everything on a
//! restart, so this tests clear errors, not durability.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use annals_core::{CommandError, Error};
use annals_kafka_store::{CommandBus, CommandProcessor, KafkaEventStore};

use crate::harness::{OwnBroker, annals_thread_panics, fault_options, meta};
use crate::model::{Counter, CounterCommand};
use crate::support::brokers;

type Outcome = Result<
    annals_core::Committed<crate::model::CounterEvent>,
    CommandError<crate::model::CounterRejection>,
>;

fn add(id: &str) -> CounterCommand {
    CounterCommand::Add {
        id: id.to_owned(),
        by: 1,
    }
}

fn assert_typed_failure(outcome: &Outcome, what: &str) {
    assert!(
        matches!(
            outcome,
            Err(CommandError::Store(
                Error::Timeout { .. } | Error::Backend { .. }
            ))
        ),
        "{what}: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_dying_under_commands_gives_typed_errors_within_the_command_timeout() {
    if brokers().is_none() {
        return;
    }
    let broker = tokio::task::spawn_blocking(OwnBroker::start)
        .await
        .expect("own broker");
    let command_timeout = Duration::from_secs(4);
    let margin = Duration::from_secs(2);
    let options = fault_options(&broker.brokers())
        .command_timeout(command_timeout)
        .operation_timeout(Duration::from_secs(5));
    let processor = CommandProcessor::<Counter>::new(options.clone())
        .start()
        .await
        .expect("processor starts");
    assert!(
        processor
            .wait_for(Duration::from_secs(30), |live| live.len() == 3)
            .await,
        "{:?}",
        processor.partition_errors()
    );
    let bus = Arc::new(
        CommandBus::<Counter>::connect(options.clone())
            .await
            .expect("bus connects"),
    );
    bus.send_expecting(add("b-0"), meta(), None)
        .await
        .expect("the broker serves");

    // Commands in flight when the broker is killed.
    let mut in_flight = Vec::new();
    for i in 0..4 {
        let bus = Arc::clone(&bus);
        in_flight.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = bus
                .send_expecting(add(&format!("b-{i}")), meta(), None)
                .await;
            (outcome, started.elapsed())
        }));
    }
    broker.kill9();
    let killed = Instant::now();
    for task in in_flight {
        let (outcome, took) = task.await.expect("no panic in the caller");
        println!(
            "in flight at the kill: {} after {took:?}",
            match &outcome {
                Ok(done) => format!("committed v{}", done.version),
                Err(e) => format!("{e}"),
            }
        );
        if outcome.is_err() {
            assert_typed_failure(&outcome, "in flight");
        }
        assert!(
            took < command_timeout + margin,
            "answered within the command timeout"
        );
    }

    // A command sent while the broker is gone: a typed error within the command timeout.
    let started = Instant::now();
    let outcome = bus.send_expecting(add("b-late"), meta(), None).await;
    let took = started.elapsed();
    println!("sent to a dead broker: {outcome:?} after {took:?}");
    assert_typed_failure(&outcome, "dead broker");
    assert!(
        took < command_timeout + margin,
        "answered within the command timeout: {took:?}"
    );

    // Reads fail with an error too, within the operation timeout.
    let store = KafkaEventStore::connect(options.clone()).await;
    println!(
        "connecting a store to a dead broker: {:?}",
        store.as_ref().err()
    );
    assert!(store.is_err(), "the brokers do not answer");

    // The processor notices nothing it could panic on and still shuts down.
    let started = Instant::now();
    processor.shutdown().await;
    println!(
        "processor shut down {:?} after the broker died ({:?} for shutdown)",
        killed.elapsed(),
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(annals_thread_panics(), 0, "no annals thread panicked");
}
