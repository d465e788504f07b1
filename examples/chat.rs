//! `cargo run -p sotto-examples --example chat`: signaling in-process, three identities, an
//! end-to-end encrypted group chat with a file, one member removed; prints one JSON line of
//! what each member could read (and any plaintext found in the server's data dir: none).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let summary = sotto_examples::chat_demo::run().await?;
    println!("{summary}");
    Ok(())
}
