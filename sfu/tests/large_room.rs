//! Issue 19's seeded simulation: one publisher's video to 200 subscribers through the
//! SFU's own transport, 5 % of media datagrams lost on every link both ways from the
//! first one. NACK and RTX from the producer's one history must leave every subscriber's
//! stream complete, and a seed must repeat exactly: two runs, the same packet logs, and
//! the same again with the copies queued in three send lanes.

mod sim;

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use sim::Sim;
use sotto_sfu::client::Publish;

const SUBSCRIBERS: usize = 200;
const VIDEO: u32 = 0x7000;
const ONE_WAY: Duration = Duration::from_millis(20);

/// The room, run: connect and open the tracks, then a measured window, then time for the
/// last repairs. Returns the window.
fn run(seed: u64, lanes: usize) -> (Sim, Instant, Instant) {
    let mut sim = Sim::new(seed, 0.05, ONE_WAY);
    sim.sfu.set_lanes(lanes);
    sim.join("publisher", &[Publish::video(VIDEO)]);
    for i in 0..SUBSCRIBERS {
        sim.join(&format!("listener-{i}"), &[]);
    }
    sim.run_for(Duration::from_secs(3));
    let from = sim.now;
    sim.run_for(Duration::from_secs(3));
    let to = sim.now;
    sim.run_for(Duration::from_millis(1500));
    (sim, from, to)
}

/// What each subscriber received of the publisher's video: (time since start, seq).
fn video_log(sim: &Sim) -> Vec<Vec<(Duration, u16)>> {
    sim.participants
        .iter()
        .skip(1)
        .map(|p| {
            let ssrc = p
                .receiving("publisher", RtpCodecKind::Video)
                .unwrap_or_else(|| panic!("{} gets no video", p.name));
            p.received_on(ssrc)
                .iter()
                .map(|r| (r.at - sim.start, r.seq))
                .collect()
        })
        .collect()
}

#[test]
fn two_hundred_subscribers_at_5_percent_loss_get_every_packet_and_a_seed_repeats() {
    let (sim, from, to) = run(19, 1);
    assert!(sim.participants.iter().all(|p| p.connected));
    assert!(sim.lost > 0, "the network lost nothing");
    let sent = sim.participants[0].sent_between(VIDEO, from, to);
    assert!(sent.len() > 200, "{} packets sent", sent.len());
    let mut incomplete = Vec::new();
    let mut retransmissions = 0u64;
    for p in sim.participants.iter().skip(1) {
        let ssrc = p
            .receiving("publisher", RtpCodecKind::Video)
            .expect("video");
        let (received, _) = p.received(ssrc);
        let missing: Vec<u16> = sent
            .iter()
            .copied()
            .filter(|seq| !received.contains(seq))
            .collect();
        if !missing.is_empty() {
            incomplete.push((p.name.clone(), missing));
        }
        retransmissions += sim.sfu_sent.get(&(ssrc + 1)).copied().unwrap_or(0);
    }
    assert!(
        incomplete.is_empty(),
        "{} of {SUBSCRIBERS} subscribers miss packets: {:?}",
        incomplete.len(),
        incomplete.iter().take(5).collect::<Vec<_>>()
    );
    // Each subscriber's losses on its own link were repaired from the one history.
    assert!(retransmissions > 0);
    // Every subscriber hears about its stream in sender reports, about once a second.
    assert!(
        sim.sfu.counters().sender_reports >= SUBSCRIBERS as u64 * 6,
        "{} sender reports",
        sim.sfu.counters().sender_reports
    );

    let (again, ..) = run(19, 1);
    assert_eq!(
        video_log(&sim),
        video_log(&again),
        "one seed, two different runs"
    );
    assert_eq!(sim.lost, again.lost);

    // Queued in three send lanes (three workers in the driver), every subscriber gets the
    // same packets at the same times in the same order.
    let (laned, ..) = run(19, 3);
    assert_eq!(laned.sfu.lanes(), 3);
    assert_eq!(
        video_log(&sim),
        video_log(&laned),
        "three lanes changed what a subscriber got"
    );
}
