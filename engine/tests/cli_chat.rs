//! The messaging commands as real processes against a real signaling server: contacts,
//! `send`, `inbox --json`, a group with `group new` / `group remove`, and the loud warning
//! when a contact's key changes.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use sotto_signaling::server::{Config, RunningServer, start};

/// A signaling server keeping its data under `dir`, and its URL.
async fn server_in(dir: &Path) -> (RunningServer, String) {
    let server = start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.join("server"),
    ))
    .await
    .unwrap();
    let url = server.ws_url();
    (server, url)
}

fn sotto(data: &Path, args: &[&str], server: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .env_remove("SOTTO_DATA_DIR")
        .env("SOTTO_SERVER", server)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn new_identity(data: &Path, server: &str) -> String {
    sotto(data, &["id", "new"], server);
    let shown = sotto(data, &["id", "show", "--json"], server);
    let json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    json["id"].as_str().unwrap().to_owned()
}

fn inbox(data: &Path, server: &str) -> Vec<serde_json::Value> {
    let out = sotto(data, &["inbox", "--json"], server);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn bodies(entries: &[serde_json::Value], kind: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_inbox_and_a_group_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = server_in(dir.path()).await;
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| dir.path().join(n));
    let ids: Vec<String> = [&alice, &bob, &carol]
        .iter()
        .map(|d| new_identity(d, &url))
        .collect();
    // Everyone connects once so their key packages are in the directory.
    for d in [&bob, &carol] {
        assert!(inbox(d, &url).is_empty());
    }
    sotto(&alice, &["contact", "add", "bob", &ids[1]], &url);
    sotto(&alice, &["contact", "add", "carol", &ids[2]], &url);

    let sent = sotto(&alice, &["send", "bob", "hello bob, it's alice"], &url);
    assert!(String::from_utf8_lossy(&sent.stdout).contains("sent"));
    let got = inbox(&bob, &url);
    assert_eq!(bodies(&got, "text"), vec!["hello bob, it's alice"]);
    assert_eq!(got[0]["sender"], ids[0].as_str());
    assert!(
        inbox(&bob, &url).is_empty(),
        "read messages are not shown again"
    );
    // Bob answers by id; Alice sees it.
    sotto(&bob, &["send", &ids[0], "hi alice"], &url);
    assert_eq!(bodies(&inbox(&alice, &url), "text"), vec!["hi alice"]);

    // A group of three; then Carol is removed and does not get what follows.
    sotto(&alice, &["group", "new", "Plans", "bob", "carol"], &url);
    sotto(&alice, &["send", "Plans", "to all three"], &url);
    assert_eq!(bodies(&inbox(&carol, &url), "text"), vec!["to all three"]);
    assert_eq!(bodies(&inbox(&bob, &url), "text"), vec!["to all three"]);
    sotto(&alice, &["group", "remove", "Plans", "carol"], &url);
    sotto(&alice, &["send", "Plans", "just us two"], &url);
    assert_eq!(bodies(&inbox(&bob, &url), "text"), vec!["just us two"]);
    assert!(bodies(&inbox(&carol, &url), "text").is_empty());
    let list = sotto(&carol, &["group", "list"], &url);
    assert!(String::from_utf8_lossy(&list.stdout).contains("you were removed"));

    // A file to the group: Bob fetches it by the id his inbox shows; the server's data
    // dir never holds the plaintext.
    let file = dir.path().join("notes.txt");
    let secret = "the plan, in a file: meet at noon by the fountain\n".repeat(20_000);
    std::fs::write(&file, &secret).unwrap();
    sotto(
        &alice,
        &["send-file", "Plans", file.to_str().unwrap()],
        &url,
    );
    let got = inbox(&bob, &url);
    let offer = got
        .iter()
        .find(|e| e["kind"] == "file")
        .expect("a file message");
    assert!(
        !offer["body"].as_str().unwrap().contains("key"),
        "the inbox shows no key"
    );
    let into = dir.path().join("bob-files");
    std::fs::create_dir(&into).unwrap();
    let fetched = sotto(
        &bob,
        &[
            "fetch-file",
            &offer["id"].as_str().unwrap()[..8],
            into.to_str().unwrap(),
        ],
        &url,
    );
    let fetched_path = String::from_utf8(fetched.stdout).unwrap();
    assert_eq!(
        std::fs::read_to_string(fetched_path.trim()).unwrap(),
        secret
    );

    // Safety numbers: both sides see the same digits; a scanned payload is checked.
    let digits = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(2)
            .unwrap()
            .trim()
            .to_owned()
    };
    let at_alice = sotto(&alice, &["verify", "bob"], &url);
    let at_bob = sotto(&bob, &["verify", &ids[0]], &url);
    assert_eq!(digits(&at_alice), digits(&at_bob));
    assert_eq!(digits(&at_alice).split(' ').count(), 12);
    let payload = String::from_utf8_lossy(&at_bob.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("QR payload (for the other side to scan): ")
                .map(str::to_owned)
        })
        .unwrap();
    let confirmed = sotto(
        &alice,
        &["verify", "bob", "--scanned", &payload, "--confirm"],
        &url,
    );
    assert!(String::from_utf8_lossy(&confirmed.stdout).contains("marked verified"));
    let contacts = sotto(&alice, &["contact", "list"], &url);
    assert!(String::from_utf8_lossy(&contacts.stdout).contains("(verified)"));

    // Re-pointing a contact name at another key warns loudly.
    let changed = sotto(&alice, &["contact", "add", "bob", &ids[2]], &url);
    let warning = String::from_utf8_lossy(&changed.stderr);
    assert!(
        warning.contains("WARNING") && warning.contains("CHANGED"),
        "{warning}"
    );
    server.shutdown().await.unwrap();

    // After messages and a file, the server's data dir (SQLite and blobs) holds none of
    // the plaintext, the group's title or the file's name.
    let mut stack = vec![dir.path().join("server")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // SQLite may still be removing its -wal and -shm files as the server closes.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for needle in [
                "hello bob",
                "just us two",
                "meet at noon",
                "notes.txt",
                "Plans",
            ] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{} contains {needle:?}",
                    path.display()
                );
            }
        }
    }
}

/// Runs `sotto` with `stdin` piped in; returns the output whatever the exit status.
fn sotto_with_input(data: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .env_remove("SOTTO_DATA_DIR")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_identity_groups_and_history_on_a_new_machine() {
    use sotto_engine::identity::{IDENTITY_FILE, Identity};
    use sotto_engine::messaging::Conversations;
    use sotto_engine::messaging::history;

    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = server_in(dir.path()).await;
    let [alice, bob] = ["alice", "bob"].map(|n| dir.path().join(n));
    // Alice's backup is offered, and made, at `id new`.
    let first_backup = dir.path().join("alice-at-creation.backup");
    let created = sotto(
        &alice,
        &["id", "new", "--backup", first_backup.to_str().unwrap()],
        &url,
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("recovery code"));
    assert!(first_backup.exists());
    let alice_id = {
        let shown = sotto(&alice, &["id", "show", "--json"], &url);
        let json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
        json["id"].as_str().unwrap().to_owned()
    };
    new_identity(&bob, &url);
    assert!(inbox(&alice, &url).is_empty());
    sotto(&bob, &["contact", "add", "alice", &alice_id], &url);
    sotto(&bob, &["group", "new", "Trip", "alice"], &url);
    sotto(&bob, &["send", "Trip", "the tickets are booked"], &url);
    assert_eq!(
        bodies(&inbox(&alice, &url), "text"),
        vec!["the tickets are booked"]
    );

    // Alice backs up; the code is on the line after the announcement.
    let file = dir.path().join("alice.backup");
    let exported = sotto(&alice, &["backup", "export", file.to_str().unwrap()], &url);
    let text = String::from_utf8(exported.stdout).unwrap();
    let code = text
        .lines()
        .skip_while(|l| !l.contains("recovery code"))
        .map(str::trim)
        .find(|l| l.len() >= 28 && l.contains('-'))
        .expect("a recovery code")
        .to_owned();
    let raw = std::fs::read(&file).unwrap();
    assert!(
        !raw.windows(b"tickets".len()).any(|w| w == b"tickets"),
        "the backup holds no plaintext"
    );

    // A new machine: a wrong code and a mistyped one are told apart and restore nothing.
    let restored = dir.path().join("alice-new-machine");
    let wrong = "0000-0000-0000-0000-0000-0000-0000";
    let out = sotto_with_input(
        &restored,
        &["backup", "import", file.to_str().unwrap()],
        wrong,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong recovery code") || err.contains("mistyped"),
        "{err}"
    );
    let mut typo = code.clone().into_bytes();
    typo[0] = if typo[0] == b'A' { b'B' } else { b'A' };
    let out = sotto_with_input(
        &restored,
        &["backup", "import", file.to_str().unwrap()],
        std::str::from_utf8(&typo).unwrap(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mistyped"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!restored.join(IDENTITY_FILE).exists());

    let out = sotto_with_input(
        &restored,
        &["backup", "import", file.to_str().unwrap()],
        &format!("{}\n", code.to_lowercase()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The identity, the group and its history are back...
    let identity = Identity::load(&restored.join(IDENTITY_FILE)).unwrap();
    assert_eq!(identity.public().to_string(), alice_id);
    {
        let core = Conversations::open(&restored, std::sync::Arc::new(identity)).unwrap();
        let group = history::room_by_title(core.conn(), "Trip")
            .unwrap()
            .expect("the group");
        let texts: Vec<String> = history::recent(core.conn(), &group, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect();
        assert!(
            texts.iter().any(|t| t == "the tickets are booked"),
            "{texts:?}"
        );
    }
    // ...and its MLS state works: the restored Alice reads what Bob sends next, and her
    // reply reaches him.
    sotto(&bob, &["send", "Trip", "see you at the station"], &url);
    assert_eq!(
        bodies(&inbox(&restored, &url), "text"),
        vec!["see you at the station"]
    );
    sotto(&restored, &["send", "Trip", "restored and here"], &url);
    assert_eq!(
        bodies(&inbox(&bob, &url), "text"),
        vec!["restored and here"]
    );
    // An import over an existing identity is refused.
    let out = sotto_with_input(
        &restored,
        &["backup", "import", file.to_str().unwrap()],
        &code,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

/// First contact as a new user tries it: the recipient has only ever run `id new` and
/// `check`; the sender adds them and sends. Before that `check`, the sender is told what
/// the recipient has to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_who_only_ran_check_can_be_messaged() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = server_in(dir.path()).await;
    let [alice, bob] = ["alice", "bob"].map(|n| dir.path().join(n));
    let [alice_id, bob_id] = [&alice, &bob].map(|d| new_identity(d, &url));
    sotto(&alice, &["contact", "add", "bob", &bob_id], &url);

    // Bob has never connected: a clear error, and nothing sent.
    let refused = sotto_with_input(&alice, &["send", "bob", "too early", "--server", &url], "");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("no key package") && said.contains("sotto check"),
        "{said}"
    );

    let checked = sotto(&bob, &["check", "--server", &url], &url);
    assert!(String::from_utf8_lossy(&checked.stdout).contains("Authenticated"));
    let sent = sotto(&alice, &["send", "bob", "hello after check"], &url);
    assert!(String::from_utf8_lossy(&sent.stdout).contains("sent"));
    let got = inbox(&bob, &url);
    assert_eq!(bodies(&got, "text"), vec!["hello after check"]);
    assert_eq!(got[0]["sender"], alice_id.as_str());

    // `group new` takes its --server flag after the members too (the environment's
    // server is wrong here, so only the flag can reach the right one).
    let made = sotto(
        &alice,
        &["group", "new", "Pair", "bob", "--server", &url],
        "ws://127.0.0.1:9/v1/ws",
    );
    assert!(String::from_utf8_lossy(&made.stdout).contains("created group \"Pair\""));
}
