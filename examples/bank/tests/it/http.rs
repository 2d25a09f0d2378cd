//! The HTTP API in front of an in-memory bank.

use std::net::SocketAddr;
use std::sync::Arc;

use annals_core::{Aggregate as _, AggregateRepository, EventStore, MemoryEventStore};
use annals_saga::SagaRunner;
use bank::domain::{Account, Transfer};
use bank::http::client::request;
use bank::service::{Bank, InProcessTransfers};
use serde_json::json;

async fn serve() -> SocketAddr {
    let store: Arc<dyn EventStore> = Arc::new(MemoryEventStore::new());
    let accounts = AggregateRepository::<Account>::new(store.clone());
    let runner = SagaRunner::<Transfer>::new(AggregateRepository::new(store.clone()))
        .with_participant(Account::TYPE, Arc::new(accounts.clone()));
    let bank = Bank::new(
        Arc::new(accounts.clone()),
        accounts,
        Arc::new(InProcessTransfers { runner }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, bank::http::router(bank)).await });
    addr
}

fn eur(minor: i64) -> serde_json::Value {
    json!({ "minor": minor, "currency": "EUR" })
}

#[tokio::test]
async fn accounts_and_transfers_over_http() {
    let addr = serve().await;
    for id in ["a", "b"] {
        let (status, body) = request(
            addr,
            "POST",
            "/accounts",
            Some(&json!({ "id": id, "owner": id, "currency": "EUR" })),
        )
        .await
        .expect("open");
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = request(
        addr,
        "POST",
        "/accounts/a/deposits",
        Some(&json!({ "amount": eur(1_000) })),
    )
    .await
    .expect("deposit");
    assert_eq!(status, 200);
    let (status, body) = request(
        addr,
        "POST",
        "/transfers",
        Some(&json!({ "id": "t1", "from": "a", "to": "b", "amount": eur(400) })),
    )
    .await
    .expect("transfer");
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "completed");
    let (_, a) = request(addr, "GET", "/accounts/a", None).await.expect("a");
    let (_, b) = request(addr, "GET", "/accounts/b", None).await.expect("b");
    assert_eq!(a["balance"], 600);
    assert_eq!(b["balance"], 400);
    let (status, t) = request(addr, "GET", "/transfers/t1", None)
        .await
        .expect("t1");
    assert_eq!(status, 200);
    assert_eq!(t["trail"].as_array().map(Vec::len), Some(8), "{t}");
}

#[tokio::test]
async fn bad_requests_get_typed_errors_and_change_nothing() {
    let addr = serve().await;
    request(
        addr,
        "POST",
        "/accounts",
        Some(&json!({ "id": "a", "owner": "A", "currency": "EUR" })),
    )
    .await
    .expect("open");

    let (status, body) = request(
        addr,
        "POST",
        "/accounts/a/withdrawals",
        Some(&json!({ "amount": eur(1) })),
    )
    .await
    .expect("overdraft");
    assert_eq!(status, 422);
    assert_eq!(body["error"]["kind"], "rejected");
    assert_eq!(
        body["error"]["detail"],
        json!({ "InsufficientFunds": { "balance": 0, "requested": 1 } })
    );

    let (status, body) = request(
        addr,
        "POST",
        "/accounts/a/deposits",
        Some(&json!({ "amount": { "minor": 5, "currency": "euro" } })),
    )
    .await
    .expect("bad currency");
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("currency"),
        "{body}"
    );

    let (status, body) = request(
        addr,
        "POST",
        "/transfers",
        Some(&json!({ "id": "t", "from": "a", "to": "a", "amount": eur(1) })),
    )
    .await
    .expect("self transfer");
    assert_eq!(status, 422);
    assert_eq!(body["error"]["detail"], json!({ "Invalid": "SameAccount" }));

    let (status, _) = request(addr, "GET", "/accounts/nobody", None)
        .await
        .expect("unknown");
    assert_eq!(status, 404);
    let (status, _) = request(addr, "GET", "/transfers/t", None)
        .await
        .expect("refused transfer");
    assert_eq!(status, 404, "a refused transfer was never started");

    let (_, a) = request(addr, "GET", "/accounts/a", None).await.expect("a");
    assert_eq!(a["balance"], 0);
    assert_eq!(a["version"], 1, "only the opening was stored");
}
