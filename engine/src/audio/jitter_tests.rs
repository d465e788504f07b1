//! Jitter-buffer tests driven by scripted arrival traces and injected time.

use super::*;

const FRAME_MS: u64 = 20;

/// One packet of a trace: sequence number, send time (ms) and arrival time (ms).
#[derive(Clone, Copy)]
struct Arrival {
    seq: u64,
    sent_ms: f64,
    arrive_ms: f64,
}

/// A sender producing one 20 ms frame per `period_ms` of real time (20.0 for an exact
/// clock), over the network delay `delay(seq)`; `None` drops the packet.
fn trace(count: u64, period_ms: f64, delay: impl Fn(u64) -> Option<f64>) -> Vec<Arrival> {
    let mut out: Vec<Arrival> = (0..count)
        .filter_map(|seq| {
            let sent_ms = seq as f64 * period_ms;
            delay(seq).map(|d| Arrival {
                seq,
                sent_ms,
                arrive_ms: sent_ms + d,
            })
        })
        .collect();
    out.sort_by(|a, b| a.arrive_ms.total_cmp(&b.arrive_ms));
    out
}

struct Run {
    decisions: Vec<(u64, Decision)>,
    /// The target delay after each pull.
    targets: Vec<f64>,
    buffer: JitterBuffer,
    inserted: Vec<Inserted>,
}

impl Run {
    /// Sequence numbers played, in playout order.
    fn played(&self) -> Vec<u16> {
        self.decisions
            .iter()
            .filter_map(|(_, d)| match d {
                Decision::Play(p) => Some(p.seq),
                _ => None,
            })
            .collect()
    }

    fn count(&self, f: impl Fn(&Decision) -> bool) -> usize {
        self.decisions.iter().filter(|(_, d)| f(d)).count()
    }
}

/// Feed the trace and pull every 20 ms of the receiver's clock for `duration_ms`. The
/// sequence numbers start near the 16-bit wrap so every test crosses it.
fn run(arrivals: &[Arrival], duration_ms: u64, quiet: impl Fn(u64) -> bool) -> Run {
    run_with(arrivals, duration_ms, quiet, 0)
}

/// [`run`], with each packet also carrying copies of the `depth` frames before it.
fn run_with(
    arrivals: &[Arrival],
    duration_ms: u64,
    quiet: impl Fn(u64) -> bool,
    depth: u64,
) -> Run {
    run_configured(arrivals, duration_ms, quiet, depth, JitterConfig::default())
}

/// The playout's time-stretching, as these decision-only tests model it (the stretcher
/// itself is tested on audio): only decoded audio is stretched, not concealment or comfort
/// noise; a quiet frame can lose all but 2.5 ms, a voiced one a pitch period of 7 ms, and
/// either can gain a period; requests under 2.5 ms are not met.
fn model_stretch(decision: &Decision, want: Want) -> isize {
    let quiet = match decision {
        Decision::Play(packet) => packet.quiet,
        Decision::Fec { .. } | Decision::Rebuild { .. } => false,
        Decision::Waiting | Decision::Conceal | Decision::ComfortNoise => return 0,
    };
    let period = 7 * SAMPLES_PER_MS;
    let (cut_in_pause, shortest) = (35 * SAMPLES_PER_MS / 2, 5 * SAMPLES_PER_MS / 2);
    match want {
        Want::Keep => 0,
        Want::Shorter { samples, .. } if samples < shortest => 0,
        Want::Shorter { samples, .. } if quiet => -(samples.min(cut_in_pause) as isize),
        Want::Shorter {
            in_speech: true, ..
        } => -(period as isize),
        Want::Shorter { .. } => 0,
        Want::Longer { samples, .. } if samples < shortest => 0,
        Want::Longer { samples, .. } if quiet => samples.min(15 * SAMPLES_PER_MS) as isize,
        Want::Longer {
            in_speech: true, ..
        } => period as isize,
        Want::Longer { .. } => 0,
    }
}

/// [`run_with`] on a buffer set up with `config`. Like the playout thread, the clock
/// pulls again only after the audio a decision played: the frames it covers (a rebuild
/// covers several), shortened or lengthened as [`model_stretch`] does.
fn run_configured(
    arrivals: &[Arrival],
    duration_ms: u64,
    quiet: impl Fn(u64) -> bool,
    depth: u64,
    config: JitterConfig,
) -> Run {
    let t0 = Instant::now();
    let at = |ms: f64| t0 + Duration::from_secs_f64(ms / 1000.0);
    let mut buffer = JitterBuffer::new(config);
    let mut decisions = Vec::new();
    let mut targets = Vec::new();
    let mut inserted = Vec::new();
    let mut next_arrival = 0;
    let mut pull_ms = 0.0;
    let packet = |seq: u64, sent_ms: f64| Packet {
        seq: (65_500 + seq) as u16,
        timestamp: (sent_ms * 48.0).round() as u64 as u32,
        payload: seq.to_be_bytes().to_vec(),
        quiet: quiet(seq),
    };
    while pull_ms <= duration_ms as f64 {
        while next_arrival < arrivals.len() && arrivals[next_arrival].arrive_ms <= pull_ms {
            let a = arrivals[next_arrival];
            let now = at(a.arrive_ms);
            inserted.push(buffer.insert(packet(a.seq, a.sent_ms), now));
            if depth > 0 {
                buffer.note_redundancy(depth as usize, now);
                for back in 1..=depth.min(a.seq) {
                    let copy = packet(a.seq - back, a.sent_ms - (back * FRAME_MS) as f64);
                    if buffer.wants(copy.seq) {
                        assert!(buffer.insert_redundant(copy, depth as usize, now));
                    }
                }
            }
            next_arrival += 1;
        }
        let decision = buffer.pull(at(pull_ms));
        let frames = match &decision {
            Decision::Rebuild { frames, .. } => *frames as u64,
            _ => 1,
        };
        let stretch = model_stretch(&decision, buffer.time_scale());
        buffer.stretched(stretch);
        decisions.push((pull_ms.round() as u64, decision));
        targets.push(buffer.stats().target_delay_ms);
        pull_ms += (FRAME_MS * frames) as f64 + stretch as f64 / SAMPLES_PER_MS as f64;
    }
    Run {
        decisions,
        targets,
        buffer,
        inserted,
    }
}

/// No frame plays twice and playout never goes backwards (also across the seq wrap).
fn assert_monotonic(run: &Run) {
    let played = run.played();
    for pair in played.windows(2) {
        let step = pair[1].wrapping_sub(pair[0]);
        assert!(
            (1..1000).contains(&step),
            "played {} after {}",
            pair[1],
            pair[0]
        );
    }
}

#[test]
fn steady_stream_plays_every_frame_at_the_minimum_delay() {
    let arrivals = trace(500, 20.0, |_| Some(30.0));
    let run = run(&arrivals, 10_200, |_| false);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.concealed, 0);
    assert_eq!(run.played().len(), 500);
    assert!(stats.target_delay_ms <= 40.0, "{stats:?}");
}

#[test]
fn reordering_is_absorbed_without_concealment() {
    // Every other pair swaps: odd packets take 25 ms longer.
    let arrivals = trace(500, 20.0, |seq| {
        Some(if seq % 2 == 1 { 55.0 } else { 30.0 })
    });
    let run = run(&arrivals, 11_000, |_| false);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert_eq!(run.played().len(), 500, "{stats:?}");
    assert_eq!(stats.lost, 0);
    assert!(
        stats.target_delay_ms >= 40.0,
        "target covers the 25 ms spread: {stats:?}"
    );
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut arrivals = trace(200, 20.0, |_| Some(30.0));
    let copies: Vec<Arrival> = arrivals
        .iter()
        .map(|a| Arrival {
            arrive_ms: a.arrive_ms + 5.0,
            ..*a
        })
        .collect();
    arrivals.extend(copies);
    arrivals.sort_by(|a, b| a.arrive_ms.total_cmp(&b.arrive_ms));
    let run = run(&arrivals, 5_000, |_| false);
    assert_monotonic(&run);
    assert_eq!(run.played().len(), 200);
    let stats = run.buffer.stats();
    assert_eq!(stats.duplicate + stats.late, 200, "{stats:?}");
    assert_eq!(
        run.inserted
            .iter()
            .filter(|i| **i == Inserted::Accepted)
            .count(),
        200
    );
}

#[test]
fn twenty_percent_loss_uses_fec_for_isolated_losses() {
    // Every fifth packet is lost: each loss has its successor, so FEC covers all of them.
    let arrivals = trace(500, 20.0, |seq| (seq % 5 != 2).then_some(30.0));
    let run = run(&arrivals, 11_000, |_| false);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert_eq!(stats.lost, 100, "{stats:?}");
    assert_eq!(stats.fec, 100);
    assert_eq!(stats.concealed, 0);
    assert_eq!(
        stats.concealed_ms,
        (stats.lost + stats.expanded) as f64 * 20.0
    );
    assert_eq!(run.count(|d| matches!(d, Decision::Fec { .. })), 100);
    // The FEC source is always the packet right after the missing one, which then plays.
    for (i, (_, d)) in run.decisions.iter().enumerate() {
        if let Decision::Fec { next } = d {
            assert_eq!(run.decisions[i + 1].1, Decision::Play(next.clone()));
        }
    }
}

#[test]
fn a_burst_is_rebuilt_at_once_from_the_packet_after_it() {
    let arrivals = trace(300, 20.0, |seq| {
        (!(100..103).contains(&seq)).then_some(30.0)
    });
    let run = run(&arrivals, 7_000, |_| false);
    let stats = run.buffer.stats();
    assert_eq!(stats.lost, 3);
    assert_eq!(
        (stats.rebuilt, stats.concealed, stats.fec),
        (3, 0, 0),
        "{stats:?}"
    );
    assert_monotonic(&run);
    // One decision covers the three missing frames; the packet it came from plays next.
    let rebuilds: Vec<usize> = (0..run.decisions.len())
        .filter(|&i| matches!(run.decisions[i].1, Decision::Rebuild { .. }))
        .collect();
    assert_eq!(rebuilds.len(), 1);
    let Decision::Rebuild { later, frames } = &run.decisions[rebuilds[0]].1 else {
        unreachable!()
    };
    assert_eq!((later.seq, *frames), ((65_500u64 + 103) as u16, 3));
    assert!(
        stats.current_delay_ms <= stats.target_delay_ms + 40.0,
        "{stats:?}"
    );
    // Playout skips the three frames' time (less a pitch period, when the rebuilt audio
    // is shortened to shed the delay the wait for it built up), and every packet is
    // played.
    let skipped = run.decisions[rebuilds[0] + 1].0 - run.decisions[rebuilds[0]].0;
    assert!((53..=60).contains(&skipped), "{skipped} ms");
    assert_eq!(stats.accelerated, 0, "{stats:?}");
    assert_eq!(run.played().len(), 297);
}

#[test]
fn a_burst_beyond_a_rebuild_is_concealed_until_it_is_in_reach() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let packet = |seq: u16| Packet {
        seq,
        timestamp: u32::from(seq) * 960,
        payload: vec![1, 2, 3],
        quiet: false,
    };
    let mut buffer = JitterBuffer::new(JitterConfig::default());
    for seq in 0..=5 {
        buffer.insert(packet(seq), at(u64::from(seq) * 20));
    }
    let mut decisions = Vec::new();
    let mut now = 100;
    while !matches!(decisions.last(), Some(Decision::Play(p)) if p.seq == 5) {
        decisions.push(buffer.pull(at(now)));
        now += 20;
        assert!(now < 1_000, "{decisions:?}");
    }
    // 6..=13 never come; 14..=20 arrive on time, and playout only looks again after
    // they are all here (a stalled thread), so 6 is overdue at once.
    for seq in 14..=20 {
        buffer.insert(packet(seq), at(u64::from(seq) * 20));
    }
    now = now.max(20 * 20);
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(buffer.pull(at(now)));
        now += 20;
    }
    // 8 missing, at most 6 rebuilt: 6 and 7 concealed, then 8..=13 rebuilt from 14.
    assert_eq!(after[0], Decision::Conceal, "{after:?}");
    assert_eq!(after[1], Decision::Conceal, "{after:?}");
    assert_eq!(
        after[2],
        Decision::Rebuild {
            later: packet(14),
            frames: 6
        }
    );
    let stats = buffer.stats();
    assert_eq!(
        (stats.lost, stats.concealed, stats.rebuilt),
        (8, 2, 6),
        "{stats:?}"
    );
    // Playout goes on from the packet the rebuild came from (or, far over the target,
    // drops its way down from it).
    let played = buffer.pull(at(now + 100));
    assert!(
        matches!(&played, Decision::Play(p) if p.seq >= 14),
        "{played:?}"
    );
}

#[test]
fn without_rebuilds_a_burst_falls_back_to_concealment() {
    let arrivals = trace(300, 20.0, |seq| {
        (!(100..103).contains(&seq)).then_some(30.0)
    });
    let config = JitterConfig {
        rebuild_frames: 0,
        ..JitterConfig::default()
    };
    let run = run_configured(&arrivals, 7_000, |_| false, 0, config);
    let stats = run.buffer.stats();
    assert_eq!(stats.lost, 3);
    assert_eq!(
        (stats.concealed, stats.fec, stats.rebuilt),
        (2, 1, 0),
        "{stats:?}"
    );
    assert_monotonic(&run);
    // Waiting for the burst built up delay; the buffer sheds it again (the frames it
    // drops are counted as accelerated), so every packet is played or deliberately dropped.
    assert_eq!(
        run.played().len() as u64 + stats.accelerated,
        297,
        "{stats:?}"
    );
    assert!(
        stats.current_delay_ms <= stats.target_delay_ms + 40.0,
        "{stats:?}"
    );
}

#[test]
fn a_200_ms_delay_spike_grows_the_target_at_once_and_it_shrinks_slowly() {
    // Packets 250..260 are held 200 ms in the network, then everything is normal.
    let arrivals = trace(1500, 20.0, |seq| {
        Some(if (250..260).contains(&seq) {
            230.0
        } else {
            30.0
        })
    });
    let run = run(&arrivals, 31_000, |seq| seq % 3 == 0);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    // Nothing is lost: playout stretches (expands) while the spiked packets are held...
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert!(stats.expanded >= 5, "{stats:?}");
    // ...and the target jumped to cover the spike within a frame of its arrival
    // (the spiked packets arrive from 5.23 s on; pulls are 20 ms apart).
    let at_ms = |ms: u64| run.targets[(ms / FRAME_MS) as usize];
    assert!(at_ms(5_000) < 100.0, "before the spike: {}", at_ms(5_000));
    assert!(at_ms(5_260) >= 200.0, "during the spike: {}", at_ms(5_260));
    // It never falls faster than 20 ms per second (0.4 ms per pull).
    for pair in run.targets.windows(2) {
        assert!(
            pair[1] >= pair[0] - 0.4 - 1e-9,
            "{} -> {}",
            pair[0],
            pair[1]
        );
    }
    // Long after the spike left the 10 s window, the target is back near the minimum,
    // and the delay got there gradually (shortened in quiet frames), not by a jump.
    assert!(stats.target_delay_ms <= 60.0, "{stats:?}");
    assert_eq!(stats.accelerated, 0, "{stats:?}");
    assert!(stats.shortened_ms >= 150.0, "{stats:?}");
    assert!(
        stats.current_delay_ms <= stats.target_delay_ms + 3.0 * 20.0,
        "{stats:?}"
    );
}

#[test]
fn a_sender_clock_0_1_percent_fast_does_not_grow_the_delay() {
    // 100 s of audio sent 0.1 % fast: 100 ms more audio than the receiver plays.
    let arrivals = trace(5000, 20.0 / 1.001, |_| Some(30.0));
    let run = run(&arrivals, 100_000, |seq| seq % 4 == 0);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert!(
        stats.shortened_ms >= 90.0 && stats.accelerated == 0,
        "drift is shed by shortening quiet frames, not by dropping any: {stats:?}"
    );
    assert!(
        stats.current_delay_ms <= stats.target_delay_ms + 3.0 * 20.0,
        "{stats:?}"
    );
    assert_eq!(stats.lost, 0, "{stats:?}");
}

#[test]
fn a_sender_clock_0_1_percent_slow_is_stretched_by_concealment() {
    let arrivals = trace(5000, 20.0 * 1.001, |_| Some(30.0));
    let run = run(&arrivals, 100_500, |_| false);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert_eq!(
        run.played().len(),
        5000,
        "every frame still plays: {stats:?}"
    );
    assert!(stats.expanded >= 1, "{stats:?}");
}

#[test]
fn a_dtx_gap_after_quiet_frames_is_comfort_noise_not_loss() {
    // 50 frames of speech (the last five quiet), then the sender goes silent for 400 ms
    // (DTX: the timestamp jumps, the sequence number does not), then 50 more frames.
    let gap_ms = 400.0;
    let arrivals: Vec<Arrival> = (0..100)
        .map(|seq| {
            let sent_ms = seq as f64 * 20.0 + if seq >= 50 { gap_ms } else { 0.0 };
            Arrival {
                seq,
                sent_ms,
                arrive_ms: sent_ms + 30.0,
            }
        })
        .collect();
    // Pull until the last packet (sent at 2380 ms, arriving at 2410 ms) has played.
    let run = run(&arrivals, 2_420, |seq| (45..50).contains(&seq));
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    assert_eq!(run.played().len(), 100, "{stats:?}");
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert_eq!(stats.concealed, 0, "{stats:?}");
    // The gap is played as comfort noise, about its own length, and not as concealment.
    let comfort = run.count(|d| matches!(d, Decision::ComfortNoise));
    assert!(
        (18..=22).contains(&comfort),
        "{comfort} comfort-noise frames: {stats:?}"
    );
    assert_eq!(stats.comfort_noise, comfort as u64);
    assert!(stats.expanded <= 2, "{stats:?}");
    // The silence plays as long as it was: speech resumes at the delay it paused at (the
    // timestamp moved on by the gap while the sequence number did not).
    let played_at = |seq: u64| {
        run.decisions
            .iter()
            .find_map(|(at, d)| match d {
                Decision::Play(p) if p.seq == (65_500 + seq) as u16 => Some(*at as f64),
                _ => None,
            })
            .expect("played")
    };
    let before = played_at(49) - arrivals[49].sent_ms;
    let after = played_at(50) - arrivals[50].sent_ms;
    assert!(
        (after - before).abs() <= 1.0,
        "{before} ms before the gap, {after} after"
    );
}

/// Like [`run`], but each arriving packet also carries copies of the `depth` frames before
/// it (RED), handed to the buffer as a receiver does: only the wanted ones.
fn run_redundant(arrivals: &[Arrival], duration_ms: u64, depth: u64) -> Run {
    run_with(arrivals, duration_ms, |_| false, depth)
}

#[test]
fn redundant_copies_fill_the_gaps_of_pairs_of_lost_packets() {
    // From packet 50 on, two of every five packets are lost (40 %, in pairs).
    let lost = |seq: u64| seq >= 50 && seq % 5 < 2;
    let arrivals = trace(500, 20.0, |seq| (!lost(seq)).then_some(30.0));
    let with_red = run_redundant(&arrivals, 10_500, 2);
    assert_monotonic(&with_red);
    let stats = with_red.buffer.stats();
    // The first pair comes before the buffer knows to wait for the second copy; after
    // that, every frame plays from its own packet or a copy.
    assert!(stats.lost <= 2, "{stats:?}");
    assert!(with_red.played().len() >= 498, "{stats:?}");
    assert!(stats.recovered >= 175, "{stats:?}");
    // Waiting for the copy two packets later costs two frames of delay, not more.
    assert!(stats.target_delay_ms <= 65.0, "{stats:?}");

    // Without the copies the same trace loses about 180 frames.
    let plain = run(&arrivals, 10_500, |_| false);
    assert!(
        plain.buffer.stats().lost >= 170,
        "{:?}",
        plain.buffer.stats()
    );
}

#[test]
fn copies_that_come_a_frame_late_are_waited_for() {
    // Through an SFU at 20 % loss per hop: frame 0 of every 25 is lost on the downlink,
    // and the next two on the uplink; the SFU rebuilds those from packet 3's copies and
    // sends them right after it. So frame 0's copies (in the rebuilt 1 and 2) come a frame
    // later than copies two packets back would.
    let arrivals = trace(1000, 20.0, |seq| match (seq >= 50, seq % 25) {
        (true, 0) => None,
        (true, 1) => Some(30.0 + 40.0 + 0.1),
        (true, 2) => Some(30.0 + 20.0 + 0.1),
        _ => Some(30.0),
    });
    let run = run_redundant(&arrivals, 20_200, 2);
    assert_monotonic(&run);
    let stats = run.buffer.stats();
    // The first such loss is concealed; from then on the buffer waits for the late copy.
    assert!(stats.lost <= 2, "{stats:?}");
    assert!(run.played().len() >= 997, "{stats:?}");
    // One frame more than the copies' depth, no more.
    assert!(stats.target_delay_ms <= 85.0, "{stats:?}");
}

#[test]
fn redundancy_on_a_clean_path_adds_a_frame_only_until_the_path_is_known() {
    let arrivals = trace(1000, 20.0, |_| Some(30.0));
    let run = run_redundant(&arrivals, 20_200, 2);
    let stats = run.buffer.stats();
    assert_eq!(stats.recovered, 0);
    assert_eq!(run.played().len(), 1000);
    // The start waits for the next packet's copy (loss may come from the first packet
    // on); ten seconds without a gap, the target shrinks back.
    assert!(run.targets.iter().all(|&t| t <= 40.5), "{:?}", run.targets);
    assert!(stats.target_delay_ms <= 25.0, "{stats:?}");
    assert!(run.inserted.iter().all(|i| *i == Inserted::Accepted));
}

#[test]
fn copies_of_frames_played_or_buffered_are_not_wanted() {
    let mut buffer = JitterBuffer::new(JitterConfig::default());
    let now = Instant::now();
    let packet = |seq: u16| Packet {
        seq,
        timestamp: u32::from(seq) * 960,
        payload: vec![1],
        quiet: false,
    };
    buffer.insert(packet(10), now);
    assert!(!buffer.wants(10));
    assert!(buffer.wants(11));
    assert!(!buffer.insert_redundant(packet(10), 1, now));
    // Fill and play past 12: a late copy of 11 is neither wanted nor counted as late.
    let ms = |ms: u64| now + Duration::from_millis(ms);
    buffer.insert(packet(12), ms(40));
    buffer.insert(packet(13), ms(60));
    for pull in [60, 80, 100] {
        buffer.pull(ms(pull));
    }
    let later = ms(100);
    assert!(!buffer.wants(11));
    assert!(!buffer.insert_redundant(packet(11), 1, later));
    let stats = buffer.stats();
    assert_eq!((stats.late, stats.duplicate, stats.recovered), (0, 0, 0));
    // 11 had its turn without a packet: its copy came too late, and is counted as such.
    assert_eq!(stats.late_copies, 1);
    // A copy of 12, which played, is no news.
    assert!(!buffer.insert_redundant(packet(12), 1, later));
    assert_eq!(buffer.stats().late_copies, 1);
}

#[test]
fn after_an_outage_playout_resumes_on_time() {
    // Two seconds of nothing (packets 100..200 never arrive), then the stream goes on.
    let arrivals = trace(500, 20.0, |seq| {
        (!(100..200).contains(&seq)).then_some(30.0)
    });
    let run = run(&arrivals, 10_500, |_| false);
    assert_monotonic(&run);
    // Packet 200 arrives at 4030 ms: it plays within a few frames of that, not after the
    // 100 missing frames are concealed a second time.
    let resumed_at = run
        .decisions
        .iter()
        .find_map(|(at, d)| {
            matches!(d, Decision::Play(p) if p.seq == (65_500u64 + 200) as u16).then_some(*at)
        })
        .expect("packet 200 plays");
    assert!(resumed_at <= 4_120, "resumed at {resumed_at} ms");
    let stats = run.buffer.stats();
    // Nothing after the outage is dropped to catch up, and the delay is back at the target.
    assert_eq!(stats.accelerated, 0, "{stats:?}");
    assert_eq!(run.played().len(), 400, "{stats:?}");
    assert!(stats.target_delay_ms <= 45.0, "{stats:?}");
}

/// Plays a stream of 20 ms frames that turns into 60 ms frames at `switch` (the sender's
/// narrow-link switch), `count` packets in all, each `delay(seq)` ms over the network. The
/// receiver tells the buffer when the first long one arrives, as `run_receiver` does, and
/// each packet plays as long as it is. Returns the sequence numbers played, and the stats.
fn play_through_a_frame_change(
    count: u64,
    switch: u64,
    delay: impl Fn(u64) -> u64,
) -> (Vec<u64>, JitterStats) {
    let packet_ms = |seq: u64| if seq < switch { 20 } else { 60 };
    let sent_ms = |seq: u64| {
        if seq < switch {
            seq * 20
        } else {
            switch * 20 + (seq - switch) * 60
        }
    };
    let mut arrivals: Vec<u64> = (0..count).collect();
    arrivals.sort_by_key(|&seq| (sent_ms(seq) + delay(seq), seq));
    let mut buffer = JitterBuffer::new(JitterConfig::default());
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let end_ms = sent_ms(count) + 2000;
    let mut arrived = 0;
    let mut now_ms = 0u64;
    let mut played = Vec::new();
    while now_ms < end_ms {
        while let Some(&seq) = arrivals.get(arrived)
            && sent_ms(seq) + delay(seq) <= now_ms
        {
            if packet_ms(seq) != buffer.frame().as_millis() as u64 && seq >= switch {
                buffer.set_frame(Duration::from_millis(packet_ms(seq)), 2);
            }
            buffer.insert(
                Packet {
                    seq: seq as u16,
                    timestamp: (sent_ms(seq) * 48) as u32,
                    payload: vec![1],
                    quiet: false,
                },
                at(sent_ms(seq) + delay(seq)),
            );
            arrived += 1;
        }
        now_ms += match buffer.pull(at(now_ms)) {
            Decision::Play(packet) => {
                played.push(u64::from(packet.seq));
                packet_ms(u64::from(packet.seq))
            }
            Decision::Waiting => 20,
            _ => buffer.frame().as_millis() as u64,
        };
    }
    (played, buffer.stats())
}

#[test]
fn a_change_of_frame_duration_plays_on_without_loss() {
    // 1 s of 20 ms frames, then 60 ms frames, 30 ms over the network.
    let (played, stats) = play_through_a_frame_change(80, 50, |_| 30);
    assert_eq!(played, (0..80).collect::<Vec<_>>());
    assert_eq!(
        (stats.lost, stats.accelerated, stats.late),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.target_delay_ms >= 60.0, "{stats:?}");
}

#[test]
fn a_deep_buffer_of_short_frames_is_not_mistaken_for_long_ones() {
    // A stall, then 400 ms of 20 ms frames at once (a queue draining), just before the
    // 60 ms frames begin. Counted at the new length they would look like 1.2 s, over the
    // most the buffer holds, and speech would be dropped; each counts at its own length.
    let (played, stats) = play_through_a_frame_change(130, 100, |seq| {
        if (80..100).contains(&seq) {
            2030 - seq * 20
        } else {
            30
        }
    });
    assert_eq!(played, (0..130).collect::<Vec<_>>(), "{stats:?}");
    assert_eq!(stats.accelerated, 0, "{stats:?}");
    // The late packet did build the buffer up (by expansion).
    assert!(stats.expanded >= 10, "{stats:?}");
}

#[test]
fn a_stream_that_stops_goes_quiet_instead_of_concealing_for_ever() {
    // Speech for 2 s, then nothing: the sender left without the stream ending.
    let arrivals = trace(100, 20.0, |_| Some(20.0));
    let run = run(&arrivals, 10_000, |_| false);
    assert_eq!(run.played().len(), 100);
    // The first second of silence is concealed or waited through; then comfort noise.
    let after_stop = |d: &Decision| matches!(d, Decision::Conceal);
    assert!(
        run.count(after_stop) <= (STREAM_STOPPED.as_millis() as u64 / FRAME_MS + 2) as usize,
        "{} frames concealed after the stream stopped",
        run.count(after_stop)
    );
    let stats = run.buffer.stats();
    assert!(stats.expanded <= 60, "{stats:?}");
    assert!(stats.comfort_noise >= 350, "{stats:?}");
    assert!(stats.concealed_ms <= 1_100.0, "{stats:?}");
}

#[test]
fn a_stream_that_stops_after_a_gap_plays_out_what_it_holds() {
    // The last packet but one is lost, then nothing: the last one must not wait behind
    // the gap for ever.
    // Jitter keeps the target well above one frame.
    let arrivals = trace(100, 20.0, |seq| {
        (seq != 98).then_some(if seq % 3 == 0 { 80.0 } else { 20.0 })
    });
    let run = run(&arrivals, 10_000, |_| false);
    assert!(
        run.played().contains(&((65_500u64 + 99) as u16)),
        "the last packet plays"
    );
    let stats = run.buffer.stats();
    assert!(stats.expanded <= 60, "{stats:?}");
    assert!(stats.concealed_ms <= 1_200.0, "{stats:?}");
}
