//! Prometheus metrics of the signaling server (served as text at `GET /metrics`).
//! Counts only: no identities, no addresses, no contents in any label.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Authenticated connections.
    pub authenticated: Gauge,
    /// Connections accepted since start.
    pub connections_accepted: Counter,
    /// Connections refused before the upgrade, by reason.
    pub connections_refused: Family<Labels, Counter>,
    /// Client messages received, by type (`invalid` for unparseable ones).
    pub messages: Family<Labels, Counter>,
    /// Error replies sent, by code.
    pub errors: Family<Labels, Counter>,
    /// Envelopes queued in all mailboxes.
    pub mailbox_depth: Gauge,
    /// Live rooms.
    pub rooms: Gauge,
    /// Pushed events dropped because a client's outbound queue was full.
    pub dropped_events: Counter,
    /// Blob store requests by operation (`create`, `put`, `get`, `status`) and outcome
    /// (`ok` or the refusal's code).
    pub blob_requests: Family<Labels, Counter>,
    /// Ciphertext bytes stored as blob chunks.
    pub blob_bytes_in: Counter,
    /// Ciphertext bytes served from blob chunks.
    pub blob_bytes_out: Counter,
    /// Blobs deleted at the end of the retention period.
    pub blobs_expired: Counter,
    /// The TURN relay's drops, refusals and minted credentials.
    pub turn: super::turn::TurnMetrics,
}

impl Metrics {
    /// Register everything.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sotto_signaling");
        let connections = Gauge::default();
        let authenticated = Gauge::default();
        let connections_accepted = Counter::default();
        let connections_refused = Family::<Labels, Counter>::default();
        let messages = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let mailbox_depth = Gauge::default();
        let rooms = Gauge::default();
        let dropped_events = Counter::default();
        let blob_requests = Family::<Labels, Counter>::default();
        let blob_bytes_in = Counter::default();
        let blob_bytes_out = Counter::default();
        let blobs_expired = Counter::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "authenticated_connections",
            "Authenticated WebSocket connections",
            authenticated.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            connections_accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused before the upgrade",
            connections_refused.clone(),
        );
        registry.register(
            "messages",
            "Client messages received by type",
            messages.clone(),
        );
        registry.register("errors", "Error replies sent by code", errors.clone());
        registry.register(
            "mailbox_depth",
            "Envelopes queued in all mailboxes",
            mailbox_depth.clone(),
        );
        registry.register("rooms", "Live rooms", rooms.clone());
        registry.register(
            "dropped_events",
            "Pushed events dropped because a client's queue was full",
            dropped_events.clone(),
        );
        registry.register(
            "blob_requests",
            "Blob store requests by operation and outcome",
            blob_requests.clone(),
        );
        registry.register(
            "blob_bytes_received",
            "Ciphertext bytes stored as blob chunks",
            blob_bytes_in.clone(),
        );
        registry.register(
            "blob_bytes_served",
            "Ciphertext bytes served from blob chunks",
            blob_bytes_out.clone(),
        );
        registry.register(
            "blobs_expired",
            "Blobs deleted at the end of the retention period",
            blobs_expired.clone(),
        );
        let turn = super::turn::TurnMetrics::default();
        registry.register(
            "turn_dropped",
            "Datagrams dropped before the TURN relay saw them, by reason",
            turn.dropped.clone(),
        );
        registry.register(
            "turn_refused",
            "Requests the TURN relay refused, by reason",
            turn.refused.clone(),
        );
        registry.register(
            "turn_credentials_minted",
            "TURN credentials handed to clients",
            turn.minted.clone(),
        );
        Metrics {
            registry,
            connections,
            authenticated,
            connections_accepted,
            connections_refused,
            messages,
            errors,
            mailbox_depth,
            rooms,
            dropped_events,
            blob_requests,
            blob_bytes_in,
            blob_bytes_out,
            blobs_expired,
            turn,
        }
    }

    /// Count one blob store request of `op` that ended in `outcome`.
    pub fn blob(&self, op: &'static str, outcome: &'static str) {
        self.blob_requests
            .get_or_create(&vec![("op", op), ("outcome", outcome)])
            .inc();
    }

    /// Count one received message of `kind`.
    pub fn message(&self, kind: &'static str) {
        self.messages.get_or_create(&vec![("type", kind)]).inc();
    }

    /// Count one error reply.
    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&vec![("code", code.as_str())])
            .inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
