//! `kill -9` of projectors: child processes fold a few thousand events, first from the
//! start of the log and then as a blue-green rebuild, and are killed with SIGKILL again
//! and again mid-batch. Afterwards every version of the read model equals a clean
//! rebuild, row for row: no event lost, none applied twice.
//!
//! The child is this test binary itself, running only [`child_projector`], which does
//! nothing unless [`ENV`] holds a [`ChildConfig`] (JSON). Both projections are strict:
//! `Totals` halts on an event out of sequence, `Ledger { strict }` on a second insert of
//! a position, so a double application would also stop a child with an error, which
//! fails the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use annals_kafka_store::KafkaStoreOptions;
use annals_projections::ops;
use annals_projections::{Database, Projection, Projector, ProjectorOptions};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::model::{Ledger, Totals, expected_totals};
use crate::support::{Env, write_many};

const ENV: &str = "ANNALS_PROJECTIONS_KILL9_CHILD";
const PROGRESS: &str = "KILL9-PROGRESS";
const DONE: &str = "KILL9-DONE";

/// What the child does and where.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildConfig {
    database_url: String,
    brokers: String,
    prefix: String,
    /// Rebuild (resuming a rebuild in progress) the projections still at version 1,
    /// instead of running their live projectors.
    rebuild: bool,
}

fn projections() -> [Projection; 2] {
    [
        Projection::document(Totals::new()),
        Projection::sql(Ledger {
            strict: true,
            ..Ledger::default()
        }),
    ]
}

fn child_options(projection: &Projection) -> ProjectorOptions {
    // A group of its own per process and projection: a killed child's membership never
    // delays the next one's assignment (offsets live in Postgres, not in the group). The
    // name is part of it: projectors of two projections in one group would split the
    // partitions between them.
    ProjectorOptions::new()
        .group(format!(
            "kill9-{}-{}",
            std::process::id(),
            projection.name()
        ))
        .batch_size(25)
        .batch_window(Duration::from_millis(5))
}

/// The child's body: a no-op in a normal test run.
#[test]
fn child_projector() {
    let Ok(config) = std::env::var(ENV) else {
        return;
    };
    let config: ChildConfig = serde_json::from_str(&config).expect("child config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // An orphan never outlives its test by long.
        let deadline = tokio::time::sleep(Duration::from_secs(240));
        tokio::select! {
            () = child_body(config) => println!("{DONE}"),
            () = deadline => panic!("the child ran for too long"),
        }
    });
}

async fn child_body(config: ChildConfig) {
    let db = Database::connect(&config.database_url)
        .await
        .expect("the child connects to the database");
    println!("KILL9-STAGE connected");
    let kafka = KafkaStoreOptions::new(&config.brokers)
        .topic_prefix(&config.prefix)
        .session_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(20));
    if config.rebuild {
        let live: BTreeMap<String, i32> = ops::list(&db)
            .await
            .expect("lists")
            .into_iter()
            .map(|p| (p.name, p.live_version))
            .collect();
        for projection in projections() {
            if live.get(projection.name()).copied().unwrap_or(1) > 1 {
                continue;
            }
            let options = child_options(&projection);
            let report = ops::rebuild(&db, &kafka, &projection, options, |p| {
                println!("{PROGRESS} {} {}", projection.name(), p.applied);
            })
            .await
            .expect("the rebuild runs to its end");
            eprintln!("child: rebuilt {} {report:?}", projection.name());
        }
        return;
    }
    let mut handles = Vec::new();
    for projection in projections() {
        handles.push(
            Projector::new(db.clone(), kafka.clone(), projection.clone())
                .options(child_options(&projection))
                .start()
                .await
                .expect("the child projector starts"),
        );
        println!("KILL9-STAGE started");
    }
    let mut last = 0;
    let mut debug_at = Instant::now();
    loop {
        if debug_at.elapsed() > Duration::from_secs(3) {
            debug_at = Instant::now();
            for h in &handles {
                println!("KILL9-DEBUG {:?}", h.progress());
            }
        }
        let applied: u64 = handles.iter().map(|h| h.progress().applied).sum();
        if applied != last {
            println!("{PROGRESS} live {applied}");
            last = applied;
        }
        if handles.iter().all(|h| h.progress().caught_up()) {
            break;
        }
        // Wake on a projector's next commit, or soon, to look at the other; a
        // projector that stopped on an error fails the child here.
        for h in &mut handles {
            let seen = h.progress().applied;
            h.wait_for(Duration::from_millis(10), |p| p.applied != seen)
                .await
                .expect("the projector keeps running");
        }
    }
    for h in handles {
        h.stop().await.expect("stops cleanly");
    }
}

/// A running child, its stdout lines and its stderr.
struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(config: &ChildConfig) -> Running {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "kill9::child_projector",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, serde_json::to_string(config).expect("json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Running {
        child,
        lines,
        stderr,
    }
}

/// What became of a child.
enum Outcome {
    /// Killed after it had applied this many events.
    Killed(u64),
    /// It finished.
    Done,
    /// It stopped by itself or hung: why.
    Failed(String),
}

/// What the database says when a child failed: sessions and stored offsets.
async fn diagnose(db: &Database, why: &str) -> ! {
    let sessions = sqlx::query(
        "SELECT coalesce(state, '') || ' ' || coalesce(wait_event_type, '') || '/' || \
         coalesce(wait_event, '') || ' ' || left(query, 120) \
         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(db.pool())
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
    });
    let offsets = sqlx::query(
        "SELECT projection || ' v' || version || ' ' || partition || ': ' || next_offset \
         FROM annals_projection_offsets ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
    });
    panic!("{why}\nsessions: {sessions:#?}\noffsets: {offsets:#?}");
}

/// Runs a child until it has applied `kill_after` events in this life (then kills it
/// with SIGKILL, a few milliseconds later so the kill lands at varying points of the
/// next batch) or until it finishes. `None` for `kill_after` runs it to its end. A
/// child that stops by itself without finishing fails the test with its stderr.
fn run_child(config: &ChildConfig, kill_after: Option<u64>, jitter: Duration) -> Outcome {
    let mut running = spawn(config);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut applied = 0u64;
    let mut seen = Vec::new();
    loop {
        match running.lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with("KILL9-STAGE") || line.starts_with("KILL9-DEBUG") => {
                seen.push(line);
                if seen.len() > 6 {
                    seen.remove(0);
                }
            }
            Ok(line) if line.starts_with(DONE) => {
                let status = running.child.wait().expect("waits");
                assert!(status.success(), "the finished child exits cleanly");
                return Outcome::Done;
            }
            Ok(line) => {
                if let Some(n) = line
                    .strip_prefix(PROGRESS)
                    .and_then(|rest| rest.split_whitespace().last())
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    applied = n;
                }
                if kill_after.is_some_and(|k| applied >= k) {
                    std::thread::sleep(jitter);
                    running.child.kill().expect("SIGKILL");
                    let _ = running.child.wait();
                    return Outcome::Killed(applied);
                }
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = running.child.kill();
                let status = running.child.wait().expect("waits");
                let stderr = running.stderr.join().unwrap_or_default();
                return Outcome::Failed(format!(
                    "the child stopped by itself ({status}) or hung after {seen:#?}, {applied} \
                     applied; its stderr:\n{stderr}"
                ));
            }
        }
    }
}

/// The stored offsets of every version, summed, and the live versions.
async fn stored_offsets(db: &Database) -> (i64, BTreeMap<String, i32>) {
    let sum: Option<i64> =
        sqlx::query_scalar("SELECT sum(next_offset)::int8 FROM annals_projection_offsets")
            .fetch_one(db.pool())
            .await
            .expect("reads offsets");
    let live = ops::list(db)
        .await
        .expect("lists")
        .into_iter()
        .map(|p| (p.name, p.live_version))
        .collect();
    (sum.unwrap_or(0), live)
}

/// Kills children `kills` times, each after it applied between 20 and
/// `20 + max_kill_after` events in its life, then runs one to its end. Returns how many kills found
/// the read model part-built (the rest came too late: the child had finished).
async fn kill_repeatedly(
    env: &Env,
    config: &ChildConfig,
    kills: u32,
    max_kill_after: u64,
    seed: u64,
) -> u32 {
    let mut mid_way = 0;
    let mut random = seed;
    for round in 0..kills {
        // xorshift: varied, reproducible kill points.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let kill_after = 20 + random % max_kill_after;
        let jitter = Duration::from_millis(random % 15);
        let before = stored_offsets(env.db()).await;
        let config = config.clone();
        let outcome =
            tokio::task::spawn_blocking(move || run_child(&config, Some(kill_after), jitter))
                .await
                .expect("child runner");
        let after = stored_offsets(env.db()).await;
        match outcome {
            Outcome::Killed(applied) => {
                eprintln!(
                    "round {round}: killed after {applied} events; offsets {} -> {}",
                    before.0, after.0
                );
                mid_way += 1;
            }
            Outcome::Done => {
                eprintln!("round {round}: the child finished before its kill");
                return mid_way;
            }
            Outcome::Failed(why) => diagnose(env.db(), &why).await,
        }
    }
    let config = config.clone();
    let outcome = tokio::task::spawn_blocking(move || run_child(&config, None, Duration::ZERO))
        .await
        .expect("child runner");
    match outcome {
        Outcome::Done => {}
        Outcome::Killed(_) => unreachable!("never killed"),
        Outcome::Failed(why) => diagnose(env.db(), &why).await,
    }
    mid_way
}

/// The rows of one version of both read models, in a stable order.
async fn rows(db: &Database, version: i32) -> (Vec<(String, String, i64)>, Vec<String>) {
    let documents = sqlx::query(&format!(
        "SELECT id, doc::text, revision FROM totals__v{version}.documents ORDER BY id"
    ))
    .fetch_all(db.pool())
    .await
    .expect("reads documents");
    let entries = sqlx::query(&format!(
        "SELECT topic, partition, \"offset\", aggregate_id, sequence, amount
         FROM ledger__v{version}.entries ORDER BY topic, partition, \"offset\""
    ))
    .fetch_all(db.pool())
    .await
    .expect("reads entries");
    (
        documents
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        entries
            .iter()
            .map(|r| {
                format!(
                    "{}/{}/{} {}#{} +{}",
                    r.get::<String, _>(0),
                    r.get::<i32, _>(1),
                    r.get::<i64, _>(2),
                    r.get::<String, _>(3),
                    r.get::<i64, _>(4),
                    r.get::<i64, _>(5)
                )
            })
            .collect(),
    )
}

fn database_url(name: &str) -> String {
    let server = std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    format!("{server}/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_killed_mid_batch_leave_the_model_equal_to_a_clean_rebuild() {
    let Some(env) = Env::new().await else { return };
    let ids: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
    let written = write_many(&env.store, &ids, 100, 10).await;
    assert_eq!(written.len(), 2000);
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(env.db().pool())
        .await
        .expect("names the database");
    let mut config = ChildConfig {
        database_url: database_url(&name),
        brokers: env.kafka.brokers().to_owned(),
        prefix: env.kafka.prefix().to_owned(),
        rebuild: false,
    };

    // Version 1 is folded from the start of the log by live projectors, killed again
    // and again; then version 2 by rebuilds, killed again and again, each resuming.
    let live_kills = kill_repeatedly(&env, &config, 14, 500, 0x9e37_79b9_7f4a_7c15).await;
    config.rebuild = true;
    let rebuild_kills = kill_repeatedly(&env, &config, 14, 500, 0x2545_f491_4f6c_dd1d).await;
    eprintln!("{live_kills} kills while folding v1, {rebuild_kills} while rebuilding v2");
    assert!(
        live_kills >= 5 && rebuild_kills >= 5,
        "most kills landed mid-way ({live_kills} and {rebuild_kills})"
    );
    let (_, live) = stored_offsets(env.db()).await;
    assert_eq!(
        live,
        BTreeMap::from([("ledger".to_owned(), 2), ("totals".to_owned(), 2)])
    );

    // A clean rebuild, never interrupted: version 3.
    for projection in projections() {
        let report = ops::rebuild(
            env.db(),
            &env.kafka,
            &projection,
            ProjectorOptions::new().batch_window(Duration::from_millis(5)),
            |_| {},
        )
        .await
        .expect("a clean rebuild");
        assert_eq!((report.version, report.applied), (3, written.len() as u64));
    }

    let clean = rows(env.db(), 3).await;
    assert_eq!(
        clean.1.len(),
        written.len(),
        "every event once in the ledger"
    );
    let expected: BTreeMap<String, crate::model::Tally> = expected_totals(&written, 1);
    let clean_totals: BTreeMap<String, crate::model::Tally> = clean
        .0
        .iter()
        .map(|(id, doc, _)| (id.clone(), serde_json::from_str(doc).expect("a tally")))
        .collect();
    assert_eq!(
        clean_totals, expected,
        "the clean rebuild folds every event"
    );
    for version in [1, 2] {
        let killed = rows(env.db(), version).await;
        assert_eq!(
            killed.0, clean.0,
            "v{version} documents (with revisions) equal the clean rebuild's"
        );
        assert_eq!(
            killed.1, clean.1,
            "v{version} ledger rows equal the clean rebuild's"
        );
    }
}
