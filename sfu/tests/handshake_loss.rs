//! Connection setup under loss from the first packet (issue 18): every datagram, STUN and
//! DTLS included, is lost at random both ways from the start, as a kernel drop rule makes
//! it. A participant that is not connected within 20 s of simulated time has failed.
//! rtc's DTLS client and the SFU's rtc leg on both ends; injected time, seeded loss.
#![allow(clippy::unwrap_used)]

mod sim;

use std::time::Duration;

use sim::Sim;
use sotto_sfu::client::Publish;

/// Connect times (None: never) of one participant joining over `loss` for `seeds` seeds.
fn setups(loss: f64, seeds: std::ops::Range<u64>) -> Vec<Option<Duration>> {
    seeds
        .map(|seed| {
            let mut sim = Sim::new(seed, loss, Duration::from_millis(25));
            sim.control_loss = loss;
            sim.join("ana", &[Publish::audio(1000)]);
            let mut connected = None;
            while sim.elapsed() < Duration::from_secs(20) {
                sim.run_for(Duration::from_millis(20));
                if sim.participants[0].connected {
                    connected = Some(sim.elapsed());
                    break;
                }
            }
            connected
        })
        .collect()
}

fn report(loss: f64, setups: &[Option<Duration>]) -> (usize, Duration, Duration) {
    let failed_at: Vec<usize> = (0..setups.len()).filter(|&i| setups[i].is_none()).collect();
    let mut times: Vec<Duration> = setups.iter().flatten().copied().collect();
    times.sort();
    let failed = setups.len() - times.len();
    let pick = |q: f64| {
        times
            .get(((times.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let (p50, p95) = (pick(0.5), pick(0.95));
    eprintln!(
        "{:.0} % loss both ways from the first packet: {failed} of {} failed to connect; \
         setup p50 {p50:?}, p95 {p95:?} (failed: {failed_at:?}, by index in the seed range)",
        loss * 100.0,
        setups.len()
    );
    (failed, p50, p95)
}

/// A flight lost while the peer repeats its own is retransmitted: with rtc-dtls 0.21.1
/// as released, 15 of these 100 setups failed (the handshaker dropped its retransmit
/// timer on every incoming record); with the patch we carry (vendor/rtc-dtls), none.
#[test]
fn a_hundred_setups_at_10_percent_loss_all_connect() {
    let (failed, _, _) = report(0.1, &setups(0.1, 100..200));
    assert_eq!(failed, 0);
}

/// Issue 18's setup targets: all of 100 setups connect at 20 % loss both ways from the
/// first packet, and setup p95 at 10 % is under 1.5 s (simulated time). Before the DTLS
/// backoff (100 ms doubling instead of a fixed second) and the longer ICE checks, 1 of
/// these 100 failed and p95 at 10 % was 2.5 s.
#[test]
fn a_hundred_setups_at_20_percent_loss_all_connect() {
    let (failed, _, _) = report(0.2, &setups(0.2, 0..100));
    let (failed10, _, p95) = report(0.1, &setups(0.1, 100..200));
    assert_eq!((failed, failed10), (0, 0));
    assert!(p95 < Duration::from_millis(1500), "p95 {p95:?} at 10 %");
}

/// Beyond the targets: `SOTTO_LOSS=0.3 SOTTO_SEEDS=1000 cargo test -p sotto-sfu --test
/// handshake_loss many_seeds -- --ignored --nocapture`.
#[test]
#[ignore = "an exploration aid"]
fn many_seeds() {
    let loss: f64 = std::env::var("SOTTO_LOSS").map_or(0.2, |s| s.parse().unwrap());
    let seeds: u64 = std::env::var("SOTTO_SEEDS").map_or(1000, |s| s.parse().unwrap());
    report(loss, &setups(loss, 1000..1000 + seeds));
}

/// One seed with logs: `SOTTO_SEED=N RUST_LOG=rtc_dtls=debug cargo test -p sotto-sfu
/// --test handshake_loss one_seed -- --ignored --nocapture`.
#[test]
#[ignore = "a debugging aid"]
fn one_seed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let seed: u64 = std::env::var("SOTTO_SEED").map_or(0, |s| s.parse().unwrap());
    let loss: f64 = std::env::var("SOTTO_LOSS").map_or(0.1, |s| s.parse().unwrap());
    report(loss, &setups(loss, seed..seed + 1));
}
