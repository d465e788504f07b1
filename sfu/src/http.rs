//! `/health` and Prometheus `/metrics` of the SFU. Counts only: no identities, addresses or
//! room ids in any label (rooms are reported as a histogram-free gauge of how many there
//! are and how many participants they hold in all).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::driver::SfuHandle;

/// Serves `/health` and `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, sfu: SfuHandle) -> std::io::Result<()> {
    serve_on(tokio::net::TcpListener::bind(addr).await?, sfu).await
}

/// Serves `/health` and `/metrics` on a bound listener.
pub async fn serve_on(listener: tokio::net::TcpListener, sfu: SfuHandle) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(sfu);
    axum::serve(listener, router).await
}

async fn metrics(State(sfu): State<SfuHandle>) -> impl IntoResponse {
    let (counters, rooms) = sfu.with(|s| (s.counters(), s.room_sizes()));
    let mut registry = Registry::with_prefix("sotto_sfu");
    let counter = |value: u64| ConstCounter::new(value);
    registry.register(
        "datagrams_in",
        "UDP datagrams received",
        counter(counters.datagrams_in),
    );
    registry.register(
        "datagrams_out",
        "UDP datagrams sent",
        counter(counters.datagrams_out),
    );
    registry.register("bytes_in", "UDP bytes received", counter(counters.bytes_in));
    registry.register("bytes_out", "UDP bytes sent", counter(counters.bytes_out));
    registry.register(
        "dropped",
        "Datagrams dropped: no leg matched, or the leg refused them",
        counter(counters.dropped),
    );
    registry.register(
        "forwarded",
        "RTP packets forwarded, one per subscriber",
        counter(counters.forwarded),
    );
    registry.register(
        "forward_errors",
        "RTP packets that could not be written to a subscriber",
        counter(counters.forward_errors),
    );
    registry.register(
        "nacks",
        "NACKs received from subscribers, answered from the packet cache",
        counter(counters.nacks),
    );
    registry.register(
        "retransmissions_dropped",
        "Retransmissions not sent: too old, or over a quarter of the subscriber's estimate",
        counter(counters.retransmissions_dropped),
    );
    registry.register(
        "red_rebuilt",
        "Audio packets lost on a publisher's uplink, rebuilt from the RED copies in later ones",
        counter(counters.red_rebuilt),
    );
    registry.register(
        "red_superseded",
        "Late originals of rebuilt audio packets, dropped",
        counter(counters.red_superseded),
    );
    registry.register(
        "keyframe_requests",
        "Keyframe requests (PLI, FIR) received from subscribers",
        counter(counters.keyframe_requests),
    );
    registry.register(
        "keyframe_requests_sent",
        "Keyframe requests sent to publishers, at most two a second per stream",
        counter(counters.keyframe_requests_sent),
    );
    registry.register(
        "sender_reports",
        "Sender reports sent to subscribers, one per forwarded stream about once a second",
        counter(counters.sender_reports),
    );
    registry.register(
        "unsupported_streams",
        "Published streams in a codec the SFU does not forward",
        counter(counters.unsupported_streams),
    );
    registry.register(
        "rooms",
        "Rooms with at least one participant",
        ConstGauge::new(rooms.len() as i64),
    );
    registry.register(
        "participants",
        "Participants in all rooms",
        ConstGauge::new(rooms.iter().map(|(_, n)| *n as i64).sum::<i64>()),
    );
    registry.register(
        "forward_latency_seconds",
        "From a datagram's arrival to the end of sending what it caused",
        sfu.forward_latency.clone(),
    );
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text.clear();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}
