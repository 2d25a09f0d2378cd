//! A command processor in a child process, so that a test can `kill -9` it.
//!
//! The child is this test binary itself, running only [`child_processor`], which does
//! nothing unless `ANNALS_CHILD_PROCESSOR` holds a [`ChildConfig`] (JSON). Then it runs a
//! processor of the test `Counter`, prints [`LIVE_LINE`] once it owns and has restored
//! every partition, and runs until it is killed (or exits after a safety deadline, so an
//! orphan never outlives its test by long).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

use annals_kafka_store::{CommandProcessor, KafkaStoreOptions};
use serde::{Deserialize, Serialize};

use crate::harness::tuned;
use crate::model::Counter;

const ENV: &str = "ANNALS_CHILD_PROCESSOR";
const LIVE_LINE: &str = "ANNALS-CHILD-LIVE";
const PARTITIONS: u32 = 3;

/// Where the child processor works: the same topics and app id as its parent's clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildConfig {
    brokers: String,
    prefix: String,
    app_id: String,
}

impl ChildConfig {
    /// A configuration on topics and an app id no other test uses.
    pub(crate) fn isolated(brokers: &str) -> Self {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        Self {
            brokers: brokers.to_owned(),
            prefix: format!("t{unique}"),
            app_id: format!("app{unique}"),
        }
    }

    /// The options both the child and its parent's clients use.
    pub(crate) fn options(&self) -> KafkaStoreOptions {
        tuned(
            KafkaStoreOptions::new(&self.brokers)
                .topic_prefix(&self.prefix)
                .app_id(&self.app_id)
                .partitions(PARTITIONS)
                .operation_timeout(Duration::from_secs(20)),
        )
    }
}

/// The child's body: a no-op in a normal test run.
#[test]
fn child_processor() {
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
        let processor = CommandProcessor::<Counter>::new(config.options())
            .start()
            .await
            .expect("the child processor starts");
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut announced = false;
        let mut errors = std::collections::BTreeMap::new();
        loop {
            let now = processor.partition_errors();
            if now != errors {
                eprintln!("child processor: partition errors {now:?}");
                errors = now;
            }
            let live = processor.live_partitions();
            if !announced && live.len() == PARTITIONS as usize {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{LIVE_LINE} {live:?}").expect("stdout");
                out.flush().expect("stdout");
                announced = true;
            }
            if Instant::now() > deadline {
                eprintln!("child processor: safety deadline reached, exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A running child processor. Killed (SIGKILL) and reaped when dropped.
pub(crate) struct ChildProcessor {
    child: Child,
    lines: Receiver<String>,
}

impl ChildProcessor {
    /// Starts the child on `config`.
    pub(crate) fn spawn(config: &ChildConfig) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "child::child_processor",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(
                ENV,
                serde_json::to_string(config).expect("config serializes"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until the child owns and has restored every partition.
    pub(crate) async fn wait_live(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.try_recv() {
                Ok(line) if line.contains(LIVE_LINE) => return,
                Ok(_) => continue,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("the child processor exited before going live: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the child processor did not go live within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9` (`Child::kill` is SIGKILL on Unix), and reaps the process.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ChildProcessor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
