//! Server configuration: every limit is a flag with an environment variable and a default
//! that suits one small server. Owns parsing only; enforcement lives where each limit
//! applies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::protocol::Limits;

/// `sotto-signaling`: Sotto's signaling service.
///
/// Authenticates clients by their Ed25519 identity (no accounts), keeps rooms and presence
/// in memory, relays call setup (SDP, ICE candidates, hang-ups) and stores opaque
/// ciphertext envelopes and key packages in SQLite under --data-dir. It never sees
/// plaintext and never logs addresses or keys at info level.
#[derive(Debug, Clone, Parser)]
#[command(name = "sotto-signaling", version, about, long_about)]
pub struct Config {
    /// Address to listen on (HTTP: GET /v1/ws, /health, /metrics).
    #[arg(long, env = "SOTTO_SIGNALING_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// Directory for the SQLite store (mailbox, key-package directory). Created if missing.
    #[arg(
        long,
        env = "SOTTO_SIGNALING_DATA_DIR",
        default_value = "sotto-signaling-data"
    )]
    pub data_dir: PathBuf,

    /// Largest WebSocket message accepted, in bytes; a bigger one closes the connection
    /// with code 1009.
    #[arg(long, env = "SOTTO_SIGNALING_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Sustained messages per second allowed per connection.
    #[arg(long, env = "SOTTO_SIGNALING_RATE_PER_SEC", default_value_t = 50)]
    pub rate_per_sec: u32,

    /// Messages a connection may send at once above the sustained rate.
    #[arg(long, env = "SOTTO_SIGNALING_RATE_BURST", default_value_t = 100)]
    pub rate_burst: u32,

    /// Rejected messages (rate-limited or invalid) a connection may accumulate before it
    /// is closed as abusive; the allowance refills at a tenth of this per second.
    #[arg(long, env = "SOTTO_SIGNALING_MAX_STRIKES", default_value_t = 50)]
    pub max_strikes: u32,

    /// Close a connection that sent nothing (not even a pong) for this long.
    #[arg(long, env = "SOTTO_SIGNALING_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Send a WebSocket ping this often.
    #[arg(long, env = "SOTTO_SIGNALING_PING_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Drop a connection when one frame to it cannot be written for this long (the
    /// client stopped reading).
    #[arg(long, env = "SOTTO_SIGNALING_SEND_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub send_timeout: Duration,

    /// Close a connection that has not authenticated within this time.
    #[arg(long, env = "SOTTO_SIGNALING_AUTH_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub auth_timeout: Duration,

    /// Most simultaneous WebSocket connections; more are refused with HTTP 503.
    #[arg(
        long,
        env = "SOTTO_SIGNALING_MAX_CONNECTIONS",
        default_value_t = 20_000
    )]
    pub max_connections: usize,

    /// Most participants in one room.
    #[arg(
        long,
        env = "SOTTO_SIGNALING_MAX_ROOM_PARTICIPANTS",
        default_value_t = 50
    )]
    pub max_room_participants: u32,

    /// Most rooms one identity may be in at once.
    #[arg(
        long,
        env = "SOTTO_SIGNALING_MAX_ROOMS_PER_IDENTITY",
        default_value_t = 16
    )]
    pub max_rooms_per_identity: usize,

    /// Most envelopes queued for one identity.
    #[arg(
        long,
        env = "SOTTO_SIGNALING_MAILBOX_MAX_ENVELOPES",
        default_value_t = 10_000
    )]
    pub mailbox_max_envelopes: u64,

    /// Envelopes never acknowledged are deleted after this long.
    #[arg(long, env = "SOTTO_SIGNALING_MAILBOX_RETENTION", default_value = "30days", value_parser = humantime::parse_duration)]
    pub mailbox_retention: Duration,

    /// Most one-time key packages stored per identity.
    #[arg(long, env = "SOTTO_SIGNALING_MAX_KEY_PACKAGES", default_value_t = 100)]
    pub max_key_packages: u32,

    /// Per-connection WebSocket read buffer, in bytes (memory per idle connection).
    #[arg(long, env = "SOTTO_SIGNALING_WS_BUFFER_BYTES", default_value_t = 4096)]
    pub ws_buffer_bytes: usize,

    /// A file holding the secret SFUs prove with `sfu_register` (at least 16 bytes;
    /// surrounding whitespace is ignored). Without it, no SFU can register and rooms
    /// with `sfu: true` are refused with `no_sfu`.
    #[arg(long, env = "SOTTO_SIGNALING_SFU_SECRET_FILE", value_name = "FILE")]
    pub sfu_secret_file: Option<PathBuf>,

    /// Sustained messages per second allowed to a registered SFU's connection: it answers
    /// and offers on behalf of every participant of its rooms (about two messages per
    /// participant joining), so a room filling at once must not be rate-limited.
    #[arg(long, env = "SOTTO_SIGNALING_SFU_RATE_PER_SEC", default_value_t = 5000)]
    pub sfu_rate_per_sec: u32,

    /// Messages a registered SFU may send at once above its sustained rate.
    #[arg(long, env = "SOTTO_SIGNALING_SFU_RATE_BURST", default_value_t = 10_000)]
    pub sfu_rate_burst: u32,

    /// Largest blob (an encrypted file's ciphertext) accepted by `blob_create`, in bytes.
    /// The default holds a 2 GiB file plus its AEAD tags (16 bytes per 256 KiB chunk).
    #[arg(long, env = "SOTTO_SIGNALING_MAX_BLOB_BYTES", default_value_t = crate::protocol::DEFAULT_MAX_BLOB_BYTES)]
    pub max_blob_bytes: u64,

    /// Most unfinished blobs one identity may have open (created in the last 24 hours
    /// of this process, not yet complete).
    #[arg(long, env = "SOTTO_SIGNALING_MAX_OPEN_BLOBS", default_value_t = 16)]
    pub max_open_blobs_per_identity: usize,

    /// Run a TURN relay on this address (UDP and TCP, e.g. `0.0.0.0:3478`), for peers
    /// that cannot reach each other directly. Clients get short-lived credentials for it
    /// from this server (`turn_credentials`); nothing else is needed on their side.
    #[arg(long, env = "SOTTO_SIGNALING_TURN_LISTEN", value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,

    /// The address clients reach the TURN relay at (its relayed addresses are on it too).
    /// Needed when --turn-listen names a wildcard; otherwise that address.
    #[arg(long, env = "SOTTO_SIGNALING_TURN_PUBLIC_IP", value_name = "IP")]
    pub turn_public_ip: Option<std::net::IpAddr>,

    /// The UDP ports the TURN relay allocates relayed addresses on, `MIN-MAX`.
    #[arg(long, env = "SOTTO_SIGNALING_TURN_PORTS", default_value = "49152-65535", value_parser = parse_port_range)]
    pub turn_ports: (u16, u16),
}

/// `MIN-MAX`, both ports, MIN at most MAX.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (min, max) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not MIN-MAX"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("`{p}` is not a port: {e}"))
    };
    let (min, max) = (port(min)?, port(max)?);
    if min == 0 || min > max {
        return Err(format!("`{text}`: need 0 < MIN <= MAX"));
    }
    Ok((min, max))
}

impl Config {
    /// Defaults (ignoring the environment) with the given address and data directory.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen,
            data_dir: data_dir.into(),
            max_message_bytes: 64 * 1024,
            rate_per_sec: 50,
            rate_burst: 100,
            max_strikes: 50,
            idle_timeout: Duration::from_secs(60),
            ping_interval: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_room_participants: 50,
            max_rooms_per_identity: 16,
            mailbox_max_envelopes: 10_000,
            mailbox_retention: Duration::from_secs(30 * 24 * 3600),
            max_key_packages: 100,
            ws_buffer_bytes: 4096,
            sfu_secret_file: None,
            sfu_rate_per_sec: 5000,
            sfu_rate_burst: 10_000,
            max_blob_bytes: crate::protocol::DEFAULT_MAX_BLOB_BYTES,
            max_open_blobs_per_identity: 16,
            turn_listen: None,
            turn_public_ip: None,
            turn_ports: (49152, 65535),
        }
    }

    /// The limits announced to clients in `hello`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            rate_per_sec: self.rate_per_sec,
            rate_burst: self.rate_burst,
            idle_timeout_ms: u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            max_room_participants: self.max_room_participants,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_matches_the_cli_defaults() {
        let parsed = Config::try_parse_from(["sotto-signaling", "--data-dir", "d"]).unwrap();
        let built = Config::new(parsed.listen, "d");
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }
}
