//! `cargo run -p bank`: the whole demo. Runs on the embedded in-memory store when
//! `KAFKA_BROKERS` is unset.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Err(e) = bank::demo::run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
