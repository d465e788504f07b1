//! The encrypted-messaging commands: `send`, `inbox`, `chat`, `group ...`, `contact ...`
//! and `verify`. Each connects a [`Messenger`], catches up with the mailbox, does its one
//! thing and exits (`chat` stays until /quit or end of input).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use sotto_engine::e2ee::safety::SafetyNumber;
use sotto_engine::identity::fingerprint;
use sotto_engine::messaging::history::{self, ContactChange, Entry};
use sotto_engine::messaging::messenger::{Delivery, Messenger};
use sotto_engine::messaging::{Body, GroupId, MessageId, Received};
use sotto_engine::{ClientConfig, Identity};
use sotto_signaling::protocol::IdentityKey;
use tokio::io::AsyncBufReadExt as _;

/// How long a one-shot command waits for more envelopes after the backlog.
const QUIET: Duration = Duration::from_millis(300);

/// The signaling server to use.
#[derive(Debug, Args)]
pub struct ServerArg {
    /// The signaling server's WebSocket URL.
    #[arg(
        long,
        env = "SOTTO_SERVER",
        default_value = "ws://127.0.0.1:7000/v1/ws"
    )]
    pub server: String,
}

/// Takes `--server URL` (or `--server=URL`) out of a member list: members accept values
/// starting with a hyphen (a base64url id may), so clap hands a flag written after them to
/// the list instead of parsing it.
fn take_server_flag(
    members: Vec<String>,
    server: ServerArg,
) -> anyhow::Result<(Vec<String>, ServerArg)> {
    let mut server = server;
    let mut kept = Vec::with_capacity(members.len());
    let mut words = members.into_iter();
    while let Some(word) = words.next() {
        if word == "--server" {
            server.server = words.next().context("--server needs a URL after it")?;
        } else if let Some(url) = word.strip_prefix("--server=") {
            server.server = url.to_owned();
        } else {
            kept.push(word);
        }
    }
    Ok((kept, server))
}

/// Messaging commands (flattened into `sotto`'s).
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Send one encrypted message to a contact, an id, or a group.
    Send {
        /// A contact name, an id, or a group's title or id.
        #[arg(allow_hyphen_values = true)]
        to: String,
        /// The text.
        text: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Fetch and decrypt what arrived, print what is unread, and mark it read.
    Inbox {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// An interactive chat: history, then every line you type is sent; /quit ends it.
    Chat {
        /// A contact name, an id, or a group's title or id.
        #[arg(allow_hyphen_values = true)]
        with: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Encrypt a file, upload it, and send it to a contact, an id, or a group. An
    /// interrupted upload of the same file resumes.
    SendFile {
        /// A contact name, an id, or a group's title or id.
        #[arg(allow_hyphen_values = true)]
        to: String,
        /// The file.
        path: std::path::PathBuf,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Download and decrypt a file someone sent (its message id, or the start of it, as
    /// `inbox` shows it) into a directory. An interrupted download resumes.
    FetchFile {
        /// The message id (hex; a unique prefix is enough).
        id: String,
        /// Where to put it.
        dir: std::path::PathBuf,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Group conversations (end-to-end encrypted; not group calls: see `room`).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Name the people you talk to.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Show the safety number you share with someone. Compare it with theirs in person or
    /// on a call (or scan their QR payload with --scanned); if it matches, no one is in the
    /// middle, and --confirm marks them verified.
    Verify {
        /// A contact name or an id.
        #[arg(allow_hyphen_values = true)]
        peer: String,
        /// The QR payload from their screen: checked exactly.
        #[arg(long, allow_hyphen_values = true)]
        scanned: Option<String>,
        /// You compared the numbers and they match: mark the contact verified.
        #[arg(long)]
        confirm: bool,
    },
}

/// `sotto group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with a title and members.
    New {
        /// The title (members see it).
        title: String,
        /// Members: contact names or ids.
        #[arg(allow_hyphen_values = true)]
        members: Vec<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Add members to a group.
    Add {
        /// The group's title or id.
        group: String,
        /// Contact names or ids.
        #[arg(required = true, allow_hyphen_values = true)]
        members: Vec<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Remove members from a group; they cannot read anything sent afterwards.
    Remove {
        /// The group's title or id.
        group: String,
        /// Contact names or ids.
        #[arg(required = true, allow_hyphen_values = true)]
        members: Vec<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List conversations (offline: from the local store).
    List,
}

/// `sotto contact ...`
#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Give an id a name. Warns loudly when the name had another key.
    Add {
        /// Your name for them.
        name: String,
        /// Their id.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// List contacts.
    List,
}

/// Run one messaging command.
pub async fn run(command: ChatCommand, identity: Identity, data_dir: &Path) -> anyhow::Result<()> {
    let identity = Arc::new(identity);
    match command {
        ChatCommand::Send { to, text, server } => {
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let group = target(&mut m, &to).await?;
            let out = m.send(&group, Body::Text { text }).await?;
            println!("sent {} to {} member(s)", out.content.id, out.to.len());
            m.close().await;
        }
        ChatCommand::Inbox { json, server } => {
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let conn = m.core().conn();
            let unread = history::unread(conn)?;
            for entry in &unread {
                if json {
                    println!("{}", serde_json::to_string(entry)?);
                } else {
                    println!("{}", line(conn, entry));
                }
            }
            let groups: std::collections::BTreeSet<String> =
                unread.iter().map(|e| e.conversation.clone()).collect();
            for group in groups.iter().filter_map(|g| GroupId::parse(g)) {
                let ids = history::mark_read(m.core().conn(), &group)?;
                if !ids.is_empty() {
                    m.send(&group, Body::Read { targets: ids }).await?;
                }
            }
            if unread.is_empty() && !json {
                println!("no new messages");
            }
            m.close().await;
        }
        ChatCommand::SendFile { to, path, server } => {
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let group = target(&mut m, &to).await?;
            let out = m
                .send_file(&group, &path, |t| {
                    eprint!("\r{} / {} chunks", t.chunks_done, t.chunks_total);
                })
                .await?;
            eprintln!();
            println!(
                "sent {} ({}) to {} member(s)",
                path.display(),
                out.content.id,
                out.to.len()
            );
            m.close().await;
        }
        ChatCommand::FetchFile { id, dir, server } => {
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let offer = history::file_offer(m.core().conn(), &id)
                .map_err(|e| anyhow!(e))?
                .ok_or_else(|| anyhow!("no file message with id {id}"))?;
            let offer: sotto_engine::files::FileOffer =
                serde_json::from_value(offer).context("the stored file offer")?;
            let path = m
                .fetch_file(&offer, &dir, |t| {
                    eprint!("\r{} / {} chunks", t.chunks_done, t.chunks_total);
                })
                .await?;
            eprintln!();
            println!("{}", path.display());
            m.close().await;
        }
        ChatCommand::Chat { with, server } => {
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let group = target(&mut m, &with).await?;
            interactive(&mut m, &group).await?;
            m.close().await;
        }
        ChatCommand::Group(GroupCommand::New {
            title,
            members,
            server,
        }) => {
            let (members, server) = take_server_flag(members, server)?;
            let mut m = connect(&server, identity, data_dir).await?;
            let members = peers(&m, &members)?;
            let group = m.create_room(Some(&title), &members).await?;
            println!(
                "created group {title:?} ({}) with {} member(s)",
                group.to_hex(),
                members.len() + 1
            );
            m.close().await;
        }
        ChatCommand::Group(GroupCommand::Add {
            group,
            members,
            server,
        }) => {
            let (members, server) = take_server_flag(members, server)?;
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let group = room(&m, &group)?;
            let members = peers(&m, &members)?;
            m.add(&group, &members).await?;
            println!("added {} member(s)", members.len());
            m.close().await;
        }
        ChatCommand::Group(GroupCommand::Remove {
            group,
            members,
            server,
        }) => {
            let (members, server) = take_server_flag(members, server)?;
            let mut m = connect(&server, identity, data_dir).await?;
            catch_up(&mut m).await?;
            let group = room(&m, &group)?;
            let members = peers(&m, &members)?;
            m.remove(&group, &members).await?;
            println!(
                "removed {} member(s); they cannot read what is sent from now on",
                members.len()
            );
            m.close().await;
        }
        ChatCommand::Group(GroupCommand::List) => {
            let conn = sotto_engine::store::open(data_dir)?;
            for c in history::conversations(&conn)? {
                let who = match (&c.title, &c.peer) {
                    (Some(title), _) => title.clone(),
                    (None, Some(peer)) => name_of_b64(&conn, peer),
                    (None, None) => "(untitled group)".into(),
                };
                let state = if c.active { "" } else { " (you were removed)" };
                println!(
                    "{}  {:6}  {who}  {} unread{state}",
                    c.conversation, c.kind, c.unread
                );
            }
        }
        ChatCommand::Contact(ContactCommand::Add { name, id }) => {
            let key: IdentityKey = id
                .parse()
                .map_err(|e| anyhow!("{id:?} is not an id: {e}"))?;
            let conn = sotto_engine::store::open(data_dir)?;
            match history::save_contact(&conn, &name, &key)? {
                ContactChange::Added => println!("saved {name} ({})", fingerprint(&key)),
                ContactChange::Unchanged => println!("{name} already has that id"),
                ContactChange::KeyChanged { old } => {
                    eprintln!("WARNING: {name}'s identity key has CHANGED.");
                    eprintln!("  was: {} ({})", old, fingerprint(&old));
                    eprintln!("  now: {} ({})", key, fingerprint(&key));
                    eprintln!(
                        "  This happens when someone sets up Sotto again, or when someone else"
                    );
                    eprintln!(
                        "  claims to be them. Compare safety numbers (`sotto verify {name}`)"
                    );
                    eprintln!("  in person or on a call before you trust the new key.");
                }
            }
        }
        ChatCommand::Verify {
            peer: who,
            scanned,
            confirm,
        } => {
            let conn = sotto_engine::store::open(data_dir)?;
            let key = match history::contact(&conn, &who)? {
                Some(c) => c.identity,
                None => who
                    .parse::<IdentityKey>()
                    .map_err(|_| anyhow!("{who:?} is neither a contact name nor an id"))?,
            };
            let number = SafetyNumber::new(identity.public().as_bytes(), key.as_bytes());
            println!("Safety number with {who}:");
            println!();
            println!("  {}", number.digits());
            println!();
            println!(
                "QR payload (for the other side to scan): {}",
                number.qr_payload()
            );
            if let Some(scanned) = scanned {
                number
                    .verify_qr(&scanned)
                    .map_err(|e| anyhow!("the scanned code does NOT match: {e}"))?;
                println!("The scanned code matches.");
            }
            if confirm {
                if !history::set_verified(&conn, &key)? {
                    bail!("save {who} as a contact first (`sotto contact add NAME ID`)");
                }
                println!("{who} is marked verified.");
            }
        }
        ChatCommand::Contact(ContactCommand::List) => {
            let conn = sotto_engine::store::open(data_dir)?;
            for c in history::contacts(&conn)? {
                let mark = if c.verified {
                    "verified"
                } else {
                    "not verified"
                };
                println!(
                    "{:16} {}  {} ({mark})",
                    c.name,
                    c.identity,
                    fingerprint(&c.identity)
                );
            }
        }
    }
    Ok(())
}

async fn connect(
    server: &ServerArg,
    identity: Arc<Identity>,
    data_dir: &Path,
) -> anyhow::Result<Messenger> {
    Messenger::connect(ClientConfig::new(&server.server), identity, data_dir)
        .await
        .with_context(|| format!("connecting to {}", server.server))
}

/// How long this identity's keys in a conversation may go without a commit of its own
/// before the CLI refreshes them (an update commit; post-compromise security).
const KEY_REFRESH: Duration = Duration::from_secs(7 * 24 * 3600);

/// Process the mailbox and say what changed; then refresh keys that have grown old. A
/// refresh that fails (a busy group) is retried next time.
async fn catch_up(m: &mut Messenger) -> anyhow::Result<()> {
    let deliveries = m.sync(QUIET).await?;
    report(m, &deliveries);
    if let Err(err) = m.refresh_keys(KEY_REFRESH).await {
        eprintln!("note: refreshing your keys in a conversation failed ({err}); retried next time");
    }
    Ok(())
}

/// Say what a sync did that the user should know beyond new messages.
fn report(m: &Messenger, deliveries: &[Delivery]) {
    let conn = m.core().conn();
    for delivery in deliveries {
        match delivery {
            Ok(Received::Joined { group, by, .. }) => {
                eprintln!(
                    "{} added you to conversation {}",
                    name_of(conn, by),
                    group.to_hex()
                );
            }
            Ok(Received::Membership { removed, .. }) if removed.contains(&m.core().me()) => {
                eprintln!("you were removed from a group");
            }
            Ok(_) => {}
            // Redelivered after an interrupted acknowledgement: already handled.
            Err(sotto_engine::messaging::ReceiveError::Replayed) => {}
            Err(e) => eprintln!("refused an incoming message: {e}"),
        }
    }
}

/// A peer by contact name or id.
fn peer(m: &Messenger, text: &str) -> anyhow::Result<IdentityKey> {
    if let Some(contact) = history::contact(m.core().conn(), text)? {
        return Ok(contact.identity);
    }
    text.parse().map_err(|_| {
        anyhow!("{text:?} is neither a contact name nor an id (see `sotto contact add`)")
    })
}

fn peers(m: &Messenger, texts: &[String]) -> anyhow::Result<Vec<IdentityKey>> {
    texts.iter().map(|t| peer(m, t)).collect()
}

/// A group by title or hex id.
fn room(m: &Messenger, text: &str) -> anyhow::Result<GroupId> {
    if let Some(group) = history::room_by_title(m.core().conn(), text)? {
        return Ok(group);
    }
    GroupId::parse(text)
        .filter(|g| !g.is_direct())
        .ok_or_else(|| anyhow!("no group titled or with id {text:?} (see `sotto group list`)"))
}

/// A conversation: a group by title or id, else the direct one with a peer (started
/// if needed).
async fn target(m: &mut Messenger, text: &str) -> anyhow::Result<GroupId> {
    if let Ok(group) = room(m, text) {
        return Ok(group);
    }
    let who = peer(m, text)?;
    Ok(m.direct(&who).await?)
}

fn name_of(conn: &rusqlite::Connection, key: &IdentityKey) -> String {
    match history::contact_by_key(conn, key) {
        Ok(Some(c)) => c.name,
        _ => fingerprint(key),
    }
}

fn name_of_b64(conn: &rusqlite::Connection, b64: &str) -> String {
    b64.parse::<IdentityKey>()
        .map(|k| name_of(conn, &k))
        .unwrap_or_else(|_| b64.to_owned())
}

fn line(conn: &rusqlite::Connection, entry: &Entry) -> String {
    let who = name_of_b64(conn, &entry.sender);
    let text = if entry.deleted {
        "(deleted)".to_owned()
    } else if entry.edited {
        format!("{} (edited)", entry.body)
    } else {
        entry.body.clone()
    };
    let short = &entry.id[..8];
    match entry.kind.as_str() {
        "system" => format!("  * {who} {text}"),
        "file" => format!("[{short}] {who} sent a file: {text}"),
        _ => format!("[{short}] {who}: {text}"),
    }
}

/// The interactive loop: incoming messages print as they arrive; typed lines are sent.
async fn interactive(m: &mut Messenger, group: &GroupId) -> anyhow::Result<()> {
    for entry in history::recent(m.core().conn(), group, 20)? {
        println!("{}", line(m.core().conn(), &entry));
    }
    history::mark_read(m.core().conn(), group)?;
    eprintln!("-- type a message and press enter; /edit ID TEXT, /delete ID, /members, /quit --");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line_in = stdin.next_line() => {
                let Some(text) = line_in? else { return Ok(()) };
                if !command(m, group, text.trim()).await? {
                    return Ok(());
                }
            }
            delivery = m.next_within(Duration::from_secs(3600)) => {
                match delivery? {
                    Some(Ok(Received::Message { group: g, sender, content })) if g == *group => {
                        match content.body {
                            Body::Typing { active: true } => eprintln!("{} is typing…", name_of(m.core().conn(), &sender)),
                            Body::Typing { .. } | Body::Read { .. } => {}
                            _ => {
                                let ids = history::mark_read(m.core().conn(), group)?;
                                for entry in history::recent(m.core().conn(), group, 1)? {
                                    println!("{}", line(m.core().conn(), &entry));
                                }
                                if !ids.is_empty() {
                                    m.send(group, Body::Read { targets: ids }).await?;
                                }
                            }
                        }
                    }
                    Some(other) => report(m, &[other]),
                    None => {}
                }
            }
        }
    }
}

/// One typed line. Returns false to quit.
async fn command(m: &mut Messenger, group: &GroupId, text: &str) -> anyhow::Result<bool> {
    let find = |m: &Messenger, prefix: &str| -> anyhow::Result<MessageId> {
        let entries = history::recent(m.core().conn(), group, 10_000)?;
        let hits: Vec<_> = entries
            .iter()
            .filter(|e| e.id.starts_with(prefix))
            .collect();
        match hits.as_slice() {
            [one] => MessageId::parse(&one.id).ok_or_else(|| anyhow!("bad id")),
            [] => bail!("no message with an id starting {prefix}"),
            _ => bail!("{prefix} matches several messages; type more of the id"),
        }
    };
    match text.split_once(' ').unwrap_or((text, "")) {
        ("/quit", _) => return Ok(false),
        ("", _) => {}
        ("/members", _) => {
            for member in m.core().members(group)? {
                println!("  {}", name_of(m.core().conn(), &member));
            }
        }
        ("/edit", rest) => {
            let (id, new_text) = rest
                .split_once(' ')
                .ok_or_else(|| anyhow!("/edit ID TEXT"))?;
            let target = find(m, id)?;
            m.send(
                group,
                Body::Edit {
                    target,
                    text: new_text.to_owned(),
                },
            )
            .await?;
        }
        ("/delete", id) => {
            let target = find(m, id.trim())?;
            m.send(group, Body::Delete { target }).await?;
        }
        _ => {
            let out = m
                .send(
                    group,
                    Body::Text {
                        text: text.to_owned(),
                    },
                )
                .await?;
            println!("[{}] you: {text}", &out.content.id.to_string()[..8]);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_server_flag_after_the_members_is_taken_as_the_flag() {
        let default = || ServerArg {
            server: "ws://default".to_owned(),
        };
        let (members, server) = take_server_flag(
            words(&["bob", "--server", "ws://x", "-carolsid"]),
            default(),
        )
        .unwrap();
        assert_eq!(members, ["bob", "-carolsid"]);
        assert_eq!(server.server, "ws://x");
        let (members, server) =
            take_server_flag(words(&["--server=ws://y", "bob"]), default()).unwrap();
        assert_eq!(
            (members, server.server.as_str()),
            (words(&["bob"]), "ws://y")
        );
        let (_, server) = take_server_flag(words(&["bob"]), default()).unwrap();
        assert_eq!(server.server, "ws://default");
        assert!(take_server_flag(words(&["bob", "--server"]), default()).is_err());
    }
}
