//! The in-memory runner: the same projection gives the same documents as on Postgres,
//! and runs with no services at all.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use annals_core::{Actor, AggregateRepository, CommandId, EventStore, MemoryEventStore, Metadata};
use annals_projections::{
    MemoryDocumentStore, MemoryProjector, PoisonPolicy, Projection, Projector, ProjectorOptions,
    read,
};

use crate::model::{Counter, CounterCommand, Tally, Totals, expected_totals};
use crate::support::{Env, add, write_many};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_runner_gives_the_same_documents_as_the_postgres_runner() {
    let Some(env) = Env::new().await else { return };
    let ids: Vec<String> = (0..7).map(|i| format!("m-{i}")).collect();
    let written = write_many(&env.store, &ids, 12, 4).await;

    let mut projector = Projector::new(
        env.db().clone(),
        env.kafka.clone(),
        Projection::document(Totals::new()),
    )
    .options(ProjectorOptions::new().batch_window(Duration::from_millis(10)))
    .start()
    .await
    .expect("starts");
    assert!(
        projector
            .wait_for(Duration::from_secs(60), |p| p.caught_up())
            .await
            .expect("runs")
    );
    projector.stop().await.expect("stops");

    let documents = MemoryDocumentStore::new();
    let events: Arc<dyn EventStore> = env.store.clone();
    let memory = MemoryProjector::new(events, documents.clone(), Totals::new()).batch_size(5);
    assert_eq!(
        memory.catch_up().await.expect("folds"),
        written.len() as u64
    );
    assert_eq!(memory.catch_up().await.expect("nothing new"), 0);

    let in_postgres = read::json_documents(env.db(), "totals")
        .await
        .expect("reads");
    assert_eq!(documents.json_documents("totals"), in_postgres);
    assert_eq!(
        documents.documents::<Totals>().expect("decodes"),
        expected_totals(&written, 1)
    );
}

#[tokio::test]
async fn the_memory_runner_needs_no_services_and_parks_per_key() {
    let store = Arc::new(MemoryEventStore::new());
    let repository = AggregateRepository::<Counter>::new(store.clone());
    let send = |id: &str, by: u32| {
        let repository = repository.clone();
        let id = id.to_owned();
        async move {
            repository
                .execute(
                    CounterCommand::Add { id, by },
                    Metadata::new(Actor::new("user:test"), CommandId(uuid::Uuid::now_v7())),
                )
                .await
                .expect("executes")
        }
    };
    send("a", 1).await;
    send("a", 13).await;
    send("b", 2).await;
    send("a", 3).await;

    let totals = Totals::new();
    totals.broken.store(true, Ordering::SeqCst);
    let documents = MemoryDocumentStore::new();
    let projector = MemoryProjector::new(store.clone(), documents.clone(), totals)
        .poison_policy(PoisonPolicy::Park);
    assert_eq!(projector.catch_up().await.expect("folds"), 4);
    assert_eq!(
        documents.document::<Totals>("a").expect("decodes"),
        Some(Tally {
            total: 1,
            events: 1,
            last_sequence: 1
        })
    );
    assert_eq!(
        documents.document::<Totals>("b").expect("decodes"),
        Some(Tally {
            total: 2,
            events: 1,
            last_sequence: 1
        })
    );
    let parked = documents.parked("totals");
    assert_eq!(
        parked
            .iter()
            .map(|p| (p.key.as_str(), p.behind))
            .collect::<Vec<_>>(),
        vec![("a", false), ("a", true)]
    );

    // Under the halt policy the projector stops at the poison event, its offset there.
    let halting = MemoryDocumentStore::new();
    let broken = Totals::new();
    broken.broken.store(true, Ordering::SeqCst);
    let projector = MemoryProjector::new(store.clone(), halting.clone(), broken);
    assert!(matches!(
        projector.catch_up().await,
        Err(annals_projections::ProjectionError::PoisonHalted { .. })
    ));
    let topic = store.topic_for("counter");
    let a_partition = annals_core::partition_for(b"a", 4);
    assert_eq!(halting.offset("totals", &topic, a_partition), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_added_after_a_catch_up_are_folded_by_the_next() {
    let Some(env) = Env::new().await else { return };
    add(&env.store, "n", &[1, 2]).await;
    let documents = MemoryDocumentStore::new();
    let events: Arc<dyn EventStore> = env.store.clone();
    let memory = MemoryProjector::new(events, documents.clone(), Totals::new());
    assert_eq!(memory.catch_up().await.expect("folds"), 2);
    add(&env.store, "n", &[3]).await;
    assert_eq!(memory.catch_up().await.expect("folds"), 1);
    assert_eq!(
        documents.document::<Totals>("n").expect("decodes"),
        Some(Tally {
            total: 6,
            events: 3,
            last_sequence: 3
        })
    );
}
