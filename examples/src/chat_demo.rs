//! The encrypted group chat demo: a signaling server in this process, three identities
//! (Alice, Bob, Carol) each with their own data dir, a group with text and a file, then
//! Carol removed and more said. Returns one JSON object of what each member could read,
//! and what the server's data dir held.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sotto_engine::files::FileOffer;
use sotto_engine::messaging::messenger::{Delivery, Messenger};
use sotto_engine::messaging::{Body, Received};
use sotto_engine::{ClientConfig, Identity};
use sotto_signaling::server::{Config, start};

const QUIET: Duration = Duration::from_millis(300);

/// What one member read, in order: texts, and files as `file:NAME` once fetched.
async fn read(m: &mut Messenger, into: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let deliveries: Vec<Delivery> = m.sync(QUIET).await?;
    for delivery in deliveries {
        let Ok(Received::Message { content, .. }) = delivery else {
            continue;
        };
        match content.body {
            Body::Text { text } => out.push(text),
            Body::File { offer } => {
                let offer: FileOffer = serde_json::from_value(offer)?;
                let path = m.fetch_file(&offer, into, |_| {}).await?;
                let bytes = std::fs::read(&path)?;
                out.push(format!("file:{} ({} bytes)", offer.name, bytes.len()));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn contains(dir: &Path, needles: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                for needle in needles {
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push((*needle).to_owned());
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Run the demo; returns its summary.
pub async fn run() -> anyhow::Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let server = start(Config::new(
        "127.0.0.1:0".parse()?,
        dir.path().join("server"),
    ))
    .await
    .context("starting signaling")?;
    let config = ClientConfig::new(server.ws_url());
    let mut members = Vec::new();
    for name in ["Alice", "Bob", "Carol"] {
        let identity = Arc::new(Identity::generate(Some(name.into()))?);
        let data = dir.path().join(name);
        members.push(Messenger::connect(config.clone(), identity, &data).await?);
    }
    let [mut alice, mut bob, mut carol] =
        <[Messenger; 3]>::try_from(members).map_err(|_| anyhow::anyhow!("three members"))?;
    let (bob_id, carol_id) = (bob.core().me(), carol.core().me());

    let group = alice.create_room(Some("Trip"), &[bob_id, carol_id]).await?;
    alice
        .send(
            &group,
            Body::Text {
                text: "Tickets are booked.".into(),
            },
        )
        .await?;
    let file = dir.path().join("itinerary.txt");
    std::fs::write(
        &file,
        "Day 1: the harbour. Day 2: the hills.\n".repeat(10_000),
    )?;
    alice.send_file(&group, &file, |_| {}).await?;
    let downloads = dir.path().join("downloads");
    let mut read_by = serde_json::Map::new();
    for (name, m) in [("bob", &mut bob), ("carol", &mut carol)] {
        let into = downloads.join(name);
        std::fs::create_dir_all(&into)?;
        read_by.insert(
            format!("{name}_before_removal"),
            read(m, &into).await?.into(),
        );
    }

    alice.remove(&group, &[carol_id]).await?;
    alice
        .send(
            &group,
            Body::Text {
                text: "Carol is out; new meeting point: the pier.".into(),
            },
        )
        .await?;
    for (name, m) in [("bob", &mut bob), ("carol", &mut carol)] {
        let into = downloads.join(name);
        read_by.insert(
            format!("{name}_after_removal"),
            read(m, &into).await?.into(),
        );
    }
    let members_now = alice.core().members(&group)?.len();
    for m in [alice, bob, carol] {
        m.close().await;
    }
    server.shutdown().await?;
    let leaked = contains(
        &dir.path().join("server"),
        &[
            "Tickets are booked",
            "the pier",
            "the harbour",
            "itinerary",
            "Trip",
        ],
    )?;
    let mut summary = serde_json::Map::new();
    summary.insert("group_members_at_end".into(), members_now.into());
    summary.extend(read_by);
    summary.insert("plaintext_found_on_server".into(), leaked.into());
    Ok(serde_json::Value::Object(summary))
}
