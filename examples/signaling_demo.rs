//! `cargo run -p sotto-examples --example signaling_demo`: signaling in-process, two
//! clients meet in a room and exchange a message; prints one JSON line.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let summary = sotto_examples::signaling_demo::run().await?;
    println!("{summary}");
    Ok(())
}
