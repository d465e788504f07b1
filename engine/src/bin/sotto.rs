//! `sotto`: the command-line client.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[path = "cli/backup.rs"]
mod backup;
#[path = "cli/call.rs"]
mod call;
#[path = "cli/chat.rs"]
mod chat;
#[path = "cli/room.rs"]
mod room;
#[path = "cli/session.rs"]
mod session;
use sotto_engine::data_dir::{DATA_DIR_ENV, default_data_dir};
use sotto_engine::identity::{IDENTITY_FILE, Identity, fingerprint};
use sotto_engine::{ClientConfig, SignalingClient};

/// Sotto: private voice, video and text, end to end encrypted.
///
/// Your identity is a key pair kept on this machine: no phone number, no e-mail, no
/// account. Create one with `sotto id new`, then share the id it prints with the people
/// you want to reach.
#[derive(Debug, Parser)]
#[command(name = "sotto", version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    /// Where Sotto keeps your identity and data [default: $XDG_DATA_HOME/sotto or
    /// ~/.local/share/sotto]
    #[arg(long, global = true, env = DATA_DIR_ENV, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  sotto id new --name Ada        create your identity (a key pair in a 0600 file)
  sotto id show                  print your id and fingerprint
  sotto check --server ws://127.0.0.1:7000/v1/ws
                                 authenticate to a signaling server
  sotto devices                  list microphones and speakers
  sotto answer --input silence --output heard.wav
                                 wait for a call, record what you hear
  sotto call <PEER_ID> --input speech.wav --output null --duration 10s
                                 call someone, playing a file instead of the microphone
  sotto room create --input speech.wav --record heard/
                                 start a group call through the server's SFU
  sotto room join <ROOM> <TOKEN> --input tone:440 --record heard/
                                 join one, recording each participant to heard/<id>.wav
  sotto contact add bob <BOB_ID> name someone's id
  sotto send bob \"hello\"          send an end-to-end encrypted message
  sotto inbox                    fetch, decrypt and show what arrived
  sotto chat bob                 an interactive encrypted chat
  sotto group new Plans bob carol
                                 an encrypted group conversation
  sotto backup export ~/sotto.backup
                                 an encrypted backup; prints its recovery code once
  sotto backup import ~/sotto.backup < code.txt
                                 restore it on a new machine";

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or show your identity.
    #[command(subcommand)]
    Id(IdCommand),
    /// Connect to a signaling server, authenticate, and report.
    Check {
        /// The server's WebSocket URL.
        #[arg(
            long,
            env = "SOTTO_SERVER",
            default_value = "ws://127.0.0.1:7000/v1/ws"
        )]
        server: String,
    },
    /// List the audio devices (capture and playback) that `device:NAME` can name.
    Devices,
    /// Call someone by their id; prints the call summary as JSON at the end.
    Call {
        /// The peer's id (`sotto id show` on their machine prints it).
        // Ids, room ids and tokens are base64url and may begin with '-'.
        #[arg(allow_hyphen_values = true)]
        peer: String,
        #[command(flatten)]
        args: call::CallArgs,
    },
    /// Group calls through an SFU.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Wait for a call and answer it; prints the call summary as JSON at the end.
    Answer {
        /// Only answer this id (others are declined).
        #[arg(long, allow_hyphen_values = true)]
        from: Option<String>,
        /// Give up when no call comes within this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
        #[command(flatten)]
        args: call::CallArgs,
    },
    #[command(flatten)]
    Chat(chat::ChatCommand),
    /// Encrypted backups of your identity, conversations and history.
    #[command(subcommand)]
    Backup(backup::BackupCommand),
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Create a group room (its media goes through an SFU), print how others join, and
    /// join its call.
    Create {
        /// Most participants.
        #[arg(long)]
        max: Option<u32>,
        #[command(flatten)]
        args: room::RoomArgs,
    },
    /// Join a group room's call.
    Join {
        /// The room id.
        // Ids, room ids and tokens are base64url and may begin with '-'.
        #[arg(allow_hyphen_values = true)]
        room: String,
        /// Its invite token.
        #[arg(allow_hyphen_values = true)]
        token: String,
        #[command(flatten)]
        args: room::RoomArgs,
    },
}

#[derive(Debug, Subcommand)]
enum IdCommand {
    /// Create a new identity (refuses to replace an existing one without --force).
    New {
        /// A display name others see in rooms (optional, at most 64 characters).
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing identity. The old one is gone for good.
        #[arg(long)]
        force: bool,
        /// Also write an encrypted backup of it to this new file and print its recovery
        /// code (the same as `sotto backup export FILE` afterwards).
        #[arg(long, value_name = "FILE")]
        backup: Option<PathBuf>,
    },
    /// Show your id, fingerprint and display name.
    Show {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

// One runtime worker, as WebRTC has one network thread: every packet's work (SRTP, RTCP,
// the peer connection's driver) is small, and the codecs and the media clock have threads
// of their own. A second worker mostly woke the first and cost CPU for nothing
// (BENCHMARKS.md, "CPU": interleaved calls with one and two workers).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rtc's ICE agent warns when it has no candidate pair yet, which is
                // every call's first moment while candidates trickle: not for users.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rtc_ice=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let data_dir = cli.data_dir.unwrap_or_else(default_data_dir);
    let identity_path = data_dir.join(IDENTITY_FILE);
    match cli.command {
        Command::Id(IdCommand::New {
            name,
            force,
            backup: backup_file,
        }) => {
            let identity = Identity::generate(name)?;
            identity.save(&identity_path, force)?;
            println!("Created your identity in {}", identity_path.display());
            print_identity(&identity);
            println!();
            println!("Share your id with people who should reach you. Keep the file private:");
            println!("whoever holds it can act as you.");
            println!();
            match backup_file {
                Some(file) => backup::export(&data_dir, &file)?,
                None => {
                    println!(
                        "Lose this machine and the identity is gone: make an encrypted backup"
                    );
                    println!("with `sotto backup export FILE` (it prints a recovery code once).");
                }
            }
        }
        Command::Id(IdCommand::Show { json }) => {
            let identity = Identity::load(&identity_path)?;
            if json {
                let out = serde_json::json!({
                    "id": identity.public().to_string(),
                    "fingerprint": identity.fingerprint(),
                    "display_name": identity.display_name(),
                });
                println!("{out}");
            } else {
                print_identity(&identity);
            }
        }
        Command::Check { server } => {
            let identity = Arc::new(Identity::load(&identity_path)?);
            let client = SignalingClient::connect(ClientConfig::new(&server), identity.clone())
                .await
                .with_context(|| format!("checking {server}"))?;
            println!("Authenticated to {server}");
            // Others can start a conversation with us from now on.
            session::publish_key_packages(&client, identity.clone(), &data_dir).await?;
            println!("  server id:     {}", client.server_id());
            println!(
                "  as:            {} ({})",
                identity.public(),
                fingerprint(&identity.public())
            );
            println!(
                "  mailbox:       {} envelope(s) waiting",
                client.mailbox_depth_at_connect()
            );
            client.close().await;
        }
        Command::Devices => print_devices(),
        Command::Call { peer, args } => {
            call::call(Identity::load(&identity_path)?, &data_dir, &peer, &args).await?;
        }
        Command::Room(RoomCommand::Create { max, args }) => {
            room::create(Identity::load(&identity_path)?, &data_dir, max, &args).await?;
        }
        Command::Room(RoomCommand::Join { room, token, args }) => {
            room::join(
                Identity::load(&identity_path)?,
                &data_dir,
                &room,
                &token,
                &args,
            )
            .await?;
        }
        Command::Backup(command) => backup::run(command, &data_dir)?,
        Command::Chat(command) => {
            chat::run(command, Identity::load(&identity_path)?, &data_dir).await?;
        }
        Command::Answer { from, wait, args } => {
            call::answer(
                Identity::load(&identity_path)?,
                &data_dir,
                from.as_deref(),
                wait,
                &args,
            )
            .await?;
        }
    }
    Ok(())
}

/// What `sotto devices` prints when there is nothing to list (normal on a server or CI).
const NO_DEVICES: &str = "no audio devices found; use --input FILE.wav, --input tone:440 or \
                          --input silence, and --output FILE.wav or --output null";

fn print_devices() {
    match sotto_engine::audio::device::list_devices() {
        Ok(devices) if !devices.is_empty() => {
            println!("Audio devices (pick one with --input/--output device:NAME):");
            for device in devices {
                println!("  {}", device.summary());
            }
        }
        Ok(_) => println!("{NO_DEVICES}"),
        Err(e) => {
            eprintln!("note: {e}");
            println!("{NO_DEVICES}");
        }
    }
}

fn print_identity(identity: &Identity) {
    println!("  id:            {}", identity.public());
    println!("  fingerprint:   {}", identity.fingerprint());
    if let Some(name) = identity.display_name() {
        println!("  display name:  {name}");
    }
}
