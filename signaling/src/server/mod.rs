//! The signaling server: HTTP routes (`GET /v1/ws`, `/health`, `/metrics`, the blob
//! store's `/v1/blobs/...`), shared state, start and shutdown. Each WebSocket is served
//! by one task in [`connection`].

mod blob_store;
mod blobs;
mod commits;
mod config;
mod connection;
mod dispatch;
mod hub;
mod limiter;
mod metrics;
mod rooms;
mod store;
pub mod turn;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use config::Config;
pub use limiter::{FloodGuard, TokenBucket, Verdict};
pub use metrics::Metrics;
pub use rooms::{Joined, RoomError, Rooms};
pub use store::{
    KeyPackageStock, MailboxFull, Store, StoreError, StoredEnvelope, TooManyKeyPackages,
};

use hub::Hub;

/// The server failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("binding the listener: {0}")]
    Bind(#[from] std::io::Error),
    /// The TURN relay's options do not fit together.
    #[error("the TURN relay: {0}")]
    Turn(String),
}

/// State shared by every connection task.
pub(crate) struct Shared {
    pub config: Config,
    /// The secret SFUs prove (from `--sfu-secret-file`).
    pub sfu_secret: Option<Vec<u8>>,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub hub: Mutex<Hub>,
    pub rooms: Mutex<Rooms>,
    pub slots: Arc<Semaphore>,
    pub next_conn_id: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
    /// Encrypted files' ciphertext chunks (see [`blobs`]).
    pub blobs: blobs::Blobs,
    /// The TURN relay, with `--turn-listen`.
    pub turn: Option<turn::TurnRelay>,
}

/// How long [`RunningServer::shutdown`] waits for open connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A server running in this process.
pub struct RunningServer {
    addr: SocketAddr,
    server_id: String,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
    /// Held one per open connection until its task ends.
    slots: Arc<Semaphore>,
    max_connections: usize,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL clients connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// This server's stable id (clients sign it into their authentication).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// Close every connection (with `shutting_down`) and stop listening. Returns once
    /// every connection task has ended (at most [`SHUTDOWN_GRACE`] after the listener),
    /// so a process that exits next has sent every client its close frame.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let served = match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        };
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.slots.acquire_many(all)).await;
        served
    }
}

/// Open the store, bind the listener and serve in the background.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let sfu_secret = match &config.sfu_secret_file {
        Some(path) => Some(read_sfu_secret(path)?),
        None => None,
    };
    let store = Arc::new(Store::open(&config.data_dir)?);
    let blobs = blobs::Blobs::open(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Metrics::new();
    metrics
        .mailbox_depth
        .set(i64::try_from(store.mailbox_total()?).unwrap_or(i64::MAX));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let max_connections = config.max_connections;
    let turn = match config.turn_listen {
        Some(listen) => Some(start_turn(&config, listen, metrics.turn.clone()).await?),
        None => None,
    };
    let shared = Arc::new(Shared {
        rooms: Mutex::new(Rooms::new(
            config.max_room_participants,
            config.max_rooms_per_identity,
        )),
        slots: slots.clone(),
        sfu_secret,
        config,
        store: store.clone(),
        metrics,
        hub: Mutex::new(Hub::default()),
        next_conn_id: AtomicU64::new(1),
        shutdown: shutdown_rx.clone(),
        blobs,
        turn,
    });
    tokio::spawn(expire_mailboxes(shared.clone()));
    tokio::spawn(blobs::expire_blobs(shared.clone()));
    let router = Router::new()
        .route("/v1/ws", get(ws_upgrade))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .merge(blobs::routes())
        .with_state(shared);
    // Signaling frames are small and latency-sensitive: send each at once (no Nagle), so
    // an error and close frame written just before a connection is dropped are on the
    // wire before the kernel resets it.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped(&mut stop).await })
            .await
    });
    Ok(RunningServer {
        addr,
        server_id: store.server_id().to_owned(),
        shutdown: shutdown_tx,
        task,
        slots,
        max_connections,
    })
}

async fn ws_upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        shared
            .metrics
            .connections_refused
            .get_or_create(&vec![("reason", "server_full")])
            .inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full: the server is at its connection cap; try again later\n",
        )
            .into_response();
    };
    let limit = shared.config.max_message_bytes;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(shared.config.ws_buffer_bytes)
        .on_upgrade(move |socket| connection::serve(shared, socket, permit))
}

async fn render_metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}

/// Hours since the Unix epoch: the only time stored with an envelope.
pub(crate) fn current_hour() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    i64::try_from(secs / 3600).unwrap_or(i64::MAX)
}

/// Delete envelopes older than the retention period, at start and then hourly.
async fn expire_mailboxes(shared: Arc<Shared>) {
    let retention_hours =
        i64::try_from(shared.config.mailbox_retention.as_secs() / 3600).unwrap_or(i64::MAX);
    let mut stop = shared.shutdown.clone();
    loop {
        let store = shared.store.clone();
        let before = current_hour().saturating_sub(retention_hours);
        let expired = tokio::task::spawn_blocking(move || store.mailbox_expire(before)).await;
        match expired {
            Ok(Ok(n)) => {
                shared
                    .metrics
                    .mailbox_depth
                    .dec_by(i64::try_from(n).unwrap_or(0));
                if n > 0 {
                    tracing::info!(expired = n, "deleted expired mailbox envelopes");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "mailbox expiry failed"),
            Err(e) => tracing::warn!(error = %e, "mailbox expiry task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once shutdown has been requested (or the sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The shortest SFU secret accepted.
pub const MIN_SFU_SECRET_BYTES: usize = 16;

/// Starts the TURN relay with a fresh secret (it and signaling share this process, so the
/// secret never leaves it).
async fn start_turn(
    config: &Config,
    listen: SocketAddr,
    metrics: turn::TurnMetrics,
) -> Result<turn::TurnRelay, ServerError> {
    let public_ip = match (config.turn_public_ip, listen.ip()) {
        (Some(ip), _) => ip,
        (None, ip) if !ip.is_unspecified() => ip,
        (None, _) => {
            return Err(ServerError::Turn(
                "--turn-listen names a wildcard: say with --turn-public-ip where clients reach it"
                    .into(),
            ));
        }
    };
    let secret: [u8; 32] = rand::random();
    let relay = turn::TurnRelay::start(
        turn::TurnOptions {
            listen,
            public_ip,
            relay_ports: config.turn_ports,
            secret: secret.to_vec(),
        },
        metrics,
    )
    .await?;
    tracing::info!(
        port = relay.udp_addr().port(),
        "TURN relay listening (UDP and TCP)"
    );
    Ok(relay)
}

fn read_sfu_secret(path: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    let raw = std::fs::read(path)?;
    let secret = raw.trim_ascii().to_vec();
    if secret.len() < MIN_SFU_SECRET_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the SFU secret in {} is shorter than {MIN_SFU_SECRET_BYTES} bytes",
                path.display()
            ),
        )
        .into());
    }
    Ok(secret)
}
