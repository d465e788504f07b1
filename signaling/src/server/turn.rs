//! The TURN relay that ships with signaling (`--turn-listen`), for peers that cannot reach
//! each other directly (symmetric NATs, firewalls that pass only the server).
//!
//! The relay itself is `medea-turn` (a maintained fork of webrtc-rs's `turn` server, UDP
//! and TCP, no unsafe). What this module adds:
//! - **Short-lived credentials** in the TURN REST API scheme (as coturn's
//!   `use-auth-secret`): the user name is `EXPIRY:TAG`, the password the base64 of
//!   HMAC-SHA1(secret, user name). Signaling mints them per identity (`turn_credentials`)
//!   and hands them to its authenticated clients, so calls need no manual `--turn` flags
//!   and a leaked pair stops working at its expiry. The tag is a keyed hash of the
//!   identity: the relay never learns who is behind an allocation. SHA-1 because the
//!   scheme is coturn's, so an operator can put coturn with the same secret in our place.
//! - **A guard in front of the relay's sockets** (`Guarded`): malformed datagrams,
//!   floods of unauthenticated requests per source and in all, and the relay's refusals
//!   (bad or expired credentials) are counted in `/metrics`, never logged with addresses.
//!   The rate limits matter beyond the CPU: medea-turn remembers a nonce for every
//!   unauthenticated request for an hour (and upstream, for ever: we carry a patch, see
//!   the workspace Cargo.toml), so the limit on all sources bounds that memory: 50 a
//!   second for an hour, 180,000 nonces, about 20 MB at most.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use medea_turn::attr::{Attribute, MessageIntegrity, Nonce};
use medea_turn::transport::{self, Request, Transport};
use medea_turn::{AuthHandler, ServerConfig, TurnConfig};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use secrecy::SecretString;
use stun_codec::{Message, MessageClass};

use super::limiter::TokenBucket;

/// The realm the relay names in its challenges.
pub const REALM: &str = "sotto";

/// How long minted credentials stay valid.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// Unauthenticated requests (each costs the relay a remembered nonce) per source address:
/// burst and per second. A client needs two per allocation.
const UNAUTHENTICATED_BURST: u32 = 20;
const UNAUTHENTICATED_PER_SEC: f64 = 5.0;
/// ...and from all sources together.
const UNAUTHENTICATED_ALL_BURST: u32 = 200;
const UNAUTHENTICATED_ALL_PER_SEC: f64 = 50.0;
/// Everything else (authenticated requests, relayed media) per source address: enough
/// for several video calls.
const PACKETS_BURST: u32 = 4_000;
const PACKETS_PER_SEC: f64 = 2_000.0;
/// Most source addresses tracked at once; beyond it, idle ones are forgotten, and while
/// none is idle new sources are refused.
const MAX_SOURCES: usize = 20_000;
const SOURCE_IDLE: Duration = Duration::from_secs(60);

type HmacSha1 = Hmac<sha1::Sha1>;
type Labels = Vec<(&'static str, &'static str)>;

/// What the relay counts (registered in the server's metrics).
#[derive(Clone, Default)]
pub struct TurnMetrics {
    /// Datagrams and frames dropped before the relay saw them, by reason (`malformed`,
    /// `rate`).
    pub dropped: Family<Labels, Counter>,
    /// Requests the relay refused, by reason (`expired`, `bad_user`: the credentials;
    /// `error_NNN`: the relay's error responses other than the nonce challenge).
    pub refused: Family<Labels, Counter>,
    /// Credentials minted for clients.
    pub minted: Counter,
}

impl TurnMetrics {
    fn drop_for(&self, reason: &'static str) {
        self.dropped.get_or_create(&vec![("reason", reason)]).inc();
    }

    fn refuse_for(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }
}

/// Where and how the relay runs.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// UDP and TCP address of the relay's listener.
    pub listen: SocketAddr,
    /// The address clients reach the relay at (the relayed addresses are on it too).
    pub public_ip: IpAddr,
    /// The ports allocations are made on.
    pub relay_ports: (u16, u16),
    /// The credentials' secret (shared with nothing but this process).
    pub secret: Vec<u8>,
}

/// A pair of short-lived credentials and where to use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// `turn:` URLs, UDP and TCP.
    pub urls: Vec<String>,
    /// `EXPIRY:TAG`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub credential: String,
    /// Seconds since the Unix epoch after which the relay refuses them.
    pub expires: u64,
}

/// The running relay.
pub struct TurnRelay {
    _server: medea_turn::Server,
    options: TurnOptions,
    metrics: TurnMetrics,
    /// The TCP listener's address (the same port as UDP unless that was 0).
    tcp_addr: SocketAddr,
    udp_addr: SocketAddr,
}

impl TurnRelay {
    /// Binds UDP and TCP on `options.listen` and starts relaying.
    pub async fn start(options: TurnOptions, metrics: TurnMetrics) -> std::io::Result<Self> {
        let udp = tokio::net::UdpSocket::bind(options.listen).await?;
        let udp_addr = udp.local_addr()?;
        let tcp =
            tokio::net::TcpListener::bind(SocketAddr::new(options.listen.ip(), udp_addr.port()))
                .await?;
        let tcp_addr = tcp.local_addr()?;
        let tcp = transport::TcpServer::new(tcp).map_err(std::io::Error::other)?;
        let limits = Arc::new(Mutex::new(Limits::new(Instant::now())));
        let guard = |inner: Arc<dyn Transport + Send + Sync>| -> Arc<dyn Transport + Send + Sync> {
            Arc::new(Guarded {
                inner,
                limits: limits.clone(),
                metrics: metrics.clone(),
            })
        };
        let server = medea_turn::Server::new(ServerConfig {
            connections: vec![guard(Arc::new(udp)), guard(Arc::new(tcp))],
            turn: Some(TurnConfig {
                relay_addr_generator: medea_turn::relay::Allocator {
                    relay_address: options.public_ip,
                    min_port: options.relay_ports.0,
                    max_port: options.relay_ports.1,
                    max_retries: 10,
                    address: options.listen.ip().to_string(),
                },
                realm: REALM.to_owned(),
                auth_handler: Arc::new(RestAuth {
                    secret: options.secret.clone(),
                    metrics: metrics.clone(),
                }),
                channel_bind_lifetime: Duration::from_secs(600),
                alloc_close_notify: None,
            }),
        });
        Ok(TurnRelay {
            _server: server,
            options,
            metrics,
            tcp_addr,
            udp_addr,
        })
    }

    /// The UDP address the relay listens on.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Credentials for `identity` (any stable bytes naming the user), valid for
    /// [`CREDENTIAL_TTL`] from `now`.
    pub fn mint(&self, identity: &[u8], now: SystemTime) -> Minted {
        self.metrics.minted.inc();
        let public = SocketAddr::new(self.options.public_ip, self.udp_addr.port());
        let public_tcp = SocketAddr::new(self.options.public_ip, self.tcp_addr.port());
        let mut minted = mint(&self.options.secret, identity, now, CREDENTIAL_TTL);
        minted.urls = vec![
            format!("turn:{public}?transport=udp"),
            format!("turn:{public_tcp}?transport=tcp"),
        ];
        minted
    }
}

/// The TURN REST API pair for `identity`, valid for `ttl` from `now` (no URLs).
pub fn mint(secret: &[u8], identity: &[u8], now: SystemTime, ttl: Duration) -> Minted {
    let expires = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let username = format!("{expires}:{}", tag(secret, identity));
    Minted {
        urls: Vec::new(),
        credential: password(secret, &username),
        username,
        expires,
    }
}

/// A keyed hash of the identity: the same for one user, telling the relay nothing.
fn tag(secret: &[u8], identity: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(b"sotto turn user tag");
    mac.update(identity);
    let digest = mac.finalize().into_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

fn password(secret: &[u8], username: &str) -> String {
    let mut mac = keyed(secret);
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn keyed(secret: &[u8]) -> HmacSha1 {
    // HMAC takes keys of any length.
    HmacSha1::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key"))
}

/// Why a user name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `EXPIRY:TAG`.
    BadUser,
    /// Its expiry has passed.
    Expired,
}

/// The password a user name must prove, if it is one of ours and still valid at `now`.
pub fn check(secret: &[u8], username: &str, now: SystemTime) -> Result<String, Refusal> {
    let (expiry, tag) = username.split_once(':').ok_or(Refusal::BadUser)?;
    let expiry: u64 = expiry.parse().map_err(|_| Refusal::BadUser)?;
    if tag.is_empty() || tag.len() > 64 {
        return Err(Refusal::BadUser);
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if expiry <= now {
        return Err(Refusal::Expired);
    }
    Ok(password(secret, username))
}

struct RestAuth {
    secret: Vec<u8>,
    metrics: TurnMetrics,
}

impl AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        _realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<SecretString, medea_turn::Error> {
        match check(&self.secret, username, SystemTime::now()) {
            Ok(password) => Ok(SecretString::from(password)),
            Err(refusal) => {
                self.metrics.refuse_for(match refusal {
                    Refusal::BadUser => "bad_user",
                    Refusal::Expired => "expired",
                });
                Err(medea_turn::Error::NoSuchUser)
            }
        }
    }
}

/// Token buckets per source address and for all unauthenticated requests, sans-IO.
struct Limits {
    sources: HashMap<IpAddr, Source>,
    unauthenticated_all: TokenBucket,
}

struct Source {
    unauthenticated: TokenBucket,
    packets: TokenBucket,
    seen: Instant,
}

/// What kind of packet a limit is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A STUN request without MESSAGE-INTEGRITY: the relay answers it with a fresh nonce.
    Unauthenticated,
    /// Anything else (authenticated requests, indications, channel data).
    Other,
}

impl Limits {
    fn new(now: Instant) -> Self {
        Limits {
            sources: HashMap::new(),
            unauthenticated_all: TokenBucket::new(
                UNAUTHENTICATED_ALL_BURST,
                UNAUTHENTICATED_ALL_PER_SEC,
                now,
            ),
        }
    }

    fn admit(&mut self, from: IpAddr, kind: Kind, now: Instant) -> bool {
        if !self.sources.contains_key(&from) && self.sources.len() >= MAX_SOURCES {
            self.sources
                .retain(|_, source| now.saturating_duration_since(source.seen) < SOURCE_IDLE);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let source = self.sources.entry(from).or_insert_with(|| Source {
            unauthenticated: TokenBucket::new(UNAUTHENTICATED_BURST, UNAUTHENTICATED_PER_SEC, now),
            packets: TokenBucket::new(PACKETS_BURST, PACKETS_PER_SEC, now),
            seen: now,
        });
        source.seen = now;
        match kind {
            Kind::Unauthenticated => {
                source.unauthenticated.try_take(now) && self.unauthenticated_all.try_take(now)
            }
            Kind::Other => source.packets.try_take(now),
        }
    }
}

/// The relay's transport behind the limits and counters (see the module's docs).
struct Guarded {
    inner: Arc<dyn Transport + Send + Sync>,
    limits: Arc<Mutex<Limits>>,
    metrics: TurnMetrics,
}

fn kind_of(request: &Request) -> Kind {
    match request {
        Request::Message(message)
            if message.class() == MessageClass::Request
                && message.get_attribute::<MessageIntegrity>().is_none() =>
        {
            Kind::Unauthenticated
        }
        Request::Message(_) | Request::ChannelData(_) => Kind::Other,
    }
}

#[async_trait::async_trait]
impl Transport for Guarded {
    async fn recv_from(&self) -> Result<(Request, SocketAddr), transport::Error> {
        loop {
            match self.inner.recv_from().await {
                Ok((request, from)) => {
                    let admitted = self
                        .limits
                        .lock()
                        .map(|mut limits| {
                            limits.admit(from.ip(), kind_of(&request), Instant::now())
                        })
                        .unwrap_or(false);
                    if admitted {
                        return Ok((request, from));
                    }
                    self.metrics.drop_for("rate");
                }
                Err(err @ (transport::Error::Io(_) | transport::Error::TransportIsDead)) => {
                    return Err(err);
                }
                Err(_) => self.metrics.drop_for("malformed"),
            }
        }
    }

    async fn send_to(
        &self,
        data: Cow<'_, [u8]>,
        target: SocketAddr,
    ) -> Result<(), transport::Error> {
        self.inner.send_to(data, target).await
    }

    async fn send_msg_to(
        &self,
        message: Message<Attribute>,
        target: SocketAddr,
    ) -> Result<(), transport::Error> {
        // Error responses count as refusals, except the challenge that hands out a nonce
        // (the first answer to every allocation).
        if message.class() == MessageClass::ErrorResponse
            && message.get_attribute::<Nonce>().is_none()
        {
            let code = message
                .get_attribute::<medea_turn::attr::ErrorCode>()
                .map_or(0, medea_turn::attr::ErrorCode::code);
            self.metrics.refuse_for(error_label(code));
        }
        self.inner.send_msg_to(message, target).await
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    fn proto(&self) -> u8 {
        self.inner.proto()
    }
}

fn error_label(code: u16) -> &'static str {
    match code {
        400 => "error_400",
        401 => "error_401",
        403 => "error_403",
        437 => "error_437",
        438 => "error_438",
        441 => "error_441",
        442 => "error_442",
        486 => "error_486",
        508 => "error_508",
        _ => "error_other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credentials_check_until_they_expire() {
        let secret = b"a secret of some length";
        let now = SystemTime::now();
        let minted = mint(secret, b"alice", now, Duration::from_secs(60));
        assert_eq!(
            check(secret, &minted.username, now),
            Ok(minted.credential.clone())
        );
        assert_eq!(
            check(secret, &minted.username, now + Duration::from_secs(61)),
            Err(Refusal::Expired)
        );
        // Another secret proves another password; the user name does not name alice.
        assert_ne!(
            check(b"other", &minted.username, now),
            Ok(minted.credential.clone())
        );
        assert!(!minted.username.contains("alice"));
        // One user, one tag; two users, two.
        let again = mint(secret, b"alice", now, Duration::from_secs(60));
        let bob = mint(secret, b"bob", now, Duration::from_secs(60));
        let tag = |m: &Minted| m.username.split_once(':').map(|(_, t)| t.to_owned());
        assert_eq!(tag(&minted), tag(&again));
        assert_ne!(tag(&minted), tag(&bob));
    }

    #[test]
    fn user_names_that_are_not_ours_are_refused() {
        let now = SystemTime::now();
        for name in [
            "",
            "alice",
            ":",
            "12:",
            "x:tag",
            "-5:tag",
            "99999999999999999999999:t",
        ] {
            assert_eq!(check(b"s", name, now), Err(Refusal::BadUser), "{name}");
        }
        assert_eq!(check(b"s", "5:tag", now), Err(Refusal::Expired));
    }

    #[test]
    fn floods_of_unauthenticated_requests_are_cut_per_source_and_in_all() {
        let now = Instant::now();
        let mut limits = Limits::new(now);
        let one = IpAddr::from([10, 0, 0, 1]);
        let admitted = (0..100)
            .filter(|_| limits.admit(one, Kind::Unauthenticated, now))
            .count();
        assert_eq!(admitted, UNAUTHENTICATED_BURST as usize);
        // Its media is not held back by that.
        assert!(limits.admit(one, Kind::Other, now));
        // Many sources, each within its own limit, meet the limit on all.
        let admitted = (0..2_000u32)
            .filter(|i| limits.admit(IpAddr::from(i.to_be_bytes()), Kind::Unauthenticated, now))
            .count();
        assert_eq!(
            admitted,
            UNAUTHENTICATED_ALL_BURST as usize - UNAUTHENTICATED_BURST as usize
        );
        // Time refills the buckets.
        let later = now + Duration::from_secs(10);
        assert!(limits.admit(one, Kind::Unauthenticated, later));
    }
}
