//! Flags every call command shares (`call`, `answer`, `room create`, `room join`) and
//! what they turn into.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sotto_engine::audio::InputSpec;
use sotto_engine::call::IceConfig;
use sotto_engine::messaging::Conversations;
use sotto_engine::{ClientConfig, Identity, SignalingClient};

/// Server, input, timing and ICE binding.
#[derive(Debug, Args)]
pub struct SessionArgs {
    /// The signaling server's WebSocket URL.
    #[arg(
        long,
        env = "SOTTO_SERVER",
        default_value = "ws://127.0.0.1:7000/v1/ws"
    )]
    pub server: String,
    /// Audio in: `default`, `device:NAME`, a .wav file, `tone:440` or `silence`.
    #[arg(long, default_value = "default", value_name = "SPEC")]
    pub input: String,
    /// End after this long connected (e.g. `10s`, `2m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// When the input is a file, end this long after it ends (`0s`: keep going, sending
    /// silence, until --duration or a hang-up).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub after_input: Duration,
    /// Local addresses for host candidates (default: every interface but loopback).
    /// `127.0.0.1:0` allows loopback, for two ends on one machine.
    #[arg(long, value_name = "ADDR")]
    pub bind: Vec<String>,
}

impl SessionArgs {
    /// The parsed input.
    pub fn input(&self) -> anyhow::Result<InputSpec> {
        Ok(self.input.parse()?)
    }

    /// How long to stay after a file input ends, if it is a file.
    pub fn tail(&self, input: &InputSpec) -> Option<Duration> {
        (matches!(input, InputSpec::Wav(_)) && !self.after_input.is_zero())
            .then_some(self.after_input)
    }

    /// ICE with the binding asked for (and no servers yet).
    pub fn ice(&self) -> IceConfig {
        let mut ice = IceConfig::default();
        if !self.bind.is_empty() {
            ice.bind = self.bind.clone();
        }
        ice
    }

    /// Connects to the signaling server as `identity`, and publishes its key packages if
    /// the server holds few ([`publish_key_packages`]).
    pub async fn connect(
        &self,
        identity: Identity,
        data_dir: &Path,
    ) -> anyhow::Result<SignalingClient> {
        let identity = Arc::new(identity);
        let client = SignalingClient::connect(ClientConfig::new(&self.server), identity.clone())
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        if let Err(err) = publish_key_packages(&client, identity, data_dir).await {
            // Others cannot start a conversation with us yet; the call goes on.
            eprintln!("warning: key packages not published: {err:#}");
        }
        Ok(client)
    }
}

/// Publishes `identity`'s key packages (kept in the conversation store in `data_dir`,
/// created if missing) when the server holds few, so that someone who has only run
/// `sotto check` or taken a call can be messaged.
pub async fn publish_key_packages(
    client: &SignalingClient,
    identity: Arc<Identity>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let core = Conversations::open(data_dir, identity).context("opening the local store")?;
    sotto_engine::messaging::messenger::replenish_key_packages(client, &core).await?;
    Ok(())
}
