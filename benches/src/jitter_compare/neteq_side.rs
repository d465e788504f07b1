//! The crates.io `neteq` crate as a receive side, driven in real time.
//!
//! `neteq` 0.9 reads the wall clock itself (`web_time::Instant::now()` in its delay
//! manager, packet ages and rate counters) and no call takes the time, so it cannot run on
//! a virtual clock: one thread inserts each packet at its arrival time (sleeping until
//! then), the caller's thread pulls 10 ms every 10 ms on a deadline clock (sleeping until
//! the next deadline; a late tick does not shift the ones after it). Both share the
//! instance through a mutex. Our [`OpusDecoder`] decodes through the crate's
//! `AudioDecoder` trait.
//!
//! Owns: the real-time driver, the decoder adapter, and what the run saw (output, which
//! frames were decoded in what order, time spent inside the crate, how late the threads
//! woke). Must not touch: the trace (it is given) or the scoring.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use neteq::codec::AudioDecoder;
use neteq::neteq::SpeechType;
use neteq::{AudioPacket, NetEq, NetEqConfig, NetEqError, RtpHeader};
use sotto_engine::audio::codec::{MAX_FRAME_SAMPLES, OpusDecoder};
use sotto_engine::audio::replay::Sent;
use sotto_engine::audio::{SAMPLE_RATE, SAMPLES_PER_MS};

/// The payload type the packets carry and the decoder is registered for (Opus's usual
/// dynamic type in WebRTC offers).
const PAYLOAD_TYPE: u8 = 111;
/// Any SSRC: one stream.
const SSRC: u32 = 0x5077_0001;
/// What `get_audio` returns each call: 10 ms at 48 kHz mono.
const PULL_SAMPLES: usize = 10 * SAMPLES_PER_MS;
/// The pull period.
const PULL_PERIOD: Duration = Duration::from_millis(10);

/// Which of a packet's RFC 2198 copies are inserted as packets of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CopyPolicy {
    /// Every copy, as WebRTC's RED splitter hands them to NetEQ; the buffer has to drop
    /// the duplicates.
    All,
    /// Only frames not inserted before, as original or copy (a receiver that remembers
    /// the sequence numbers it inserted): the buffer never sees a frame twice.
    Unseen,
}

/// What one real-time run played and saw.
#[derive(Debug, Clone)]
pub struct RealTimeRun {
    /// The output, 48 kHz mono, from the first pull on (sample `i` played at `i / 48` ms).
    pub samples: Vec<i16>,
    /// The source timestamp of every frame the crate decoded, in order; `None` for a
    /// payload that matches no single sent frame.
    pub decoded: Vec<Option<u32>>,
    /// Packets inserted (originals and copies).
    pub inserted: usize,
    /// Time spent inside `insert_packet` and `get_audio` (the lock held, waiting for it not
    /// counted).
    pub busy: Duration,
    /// The latest an insert happened after its arrival time, ms.
    pub worst_insert_late_ms: f64,
    /// The latest a pull happened after its deadline, ms.
    pub worst_pull_late_ms: f64,
    /// Pulls whose frame the crate marked as concealment (`SpeechType::Expand`).
    pub expand_pulls: usize,
    /// The crate's target delay, averaged over the pulls, ms.
    pub mean_target_delay_ms: f64,
    /// The highest target delay it had at any pull, ms.
    pub peak_target_delay_ms: f64,
    /// Audio the crate cut out (accelerate) and added (pre-emptive expand), ms.
    pub shortened_ms: f64,
    /// See `shortened_ms`.
    pub lengthened_ms: f64,
    /// Audio the crate concealed, ms (its own lifetime counter).
    pub concealed_ms: f64,
}

/// Plays `arrivals` of `sent` (frames of `frame_ms`) through a fresh `neteq` instance in
/// real time for `duration_ms` of output. Takes `duration_ms` of wall time.
pub fn run(
    sent: &[Sent],
    arrivals: &[(f64, usize)],
    copies: CopyPolicy,
    decoder_complexity: u8,
    frame_ms: u32,
    duration_ms: f64,
) -> anyhow::Result<RealTimeRun> {
    let log = Arc::new(Mutex::new(Vec::with_capacity(sent.len() * 2)));
    let mut neteq = NetEq::new(NetEqConfig {
        sample_rate: SAMPLE_RATE,
        channels: 1,
        ..NetEqConfig::default()
    })
    .map_err(|e| anyhow!("creating the neteq instance: {e}"))?;
    let decoder = Adapter {
        decoder: OpusDecoder::with_complexity(decoder_complexity)?,
        pcm: vec![0; MAX_FRAME_SAMPLES],
        log: Arc::clone(&log),
    };
    neteq.register_decoder(PAYLOAD_TYPE, Box::new(decoder));
    let neteq = Mutex::new(neteq);
    let pulls = (duration_ms / 10.0).ceil() as usize;
    let start = Instant::now();
    let (inserted, pulled) = thread::scope(|scope| {
        let inserter = scope.spawn(|| insert_all(&neteq, sent, arrivals, copies, frame_ms, start));
        let pulled = pull_all(&neteq, pulls, start);
        let inserted = inserter
            .join()
            .map_err(|_| anyhow!("the neteq insert thread panicked"))?;
        anyhow::Ok((inserted?, pulled?))
    })?;
    let neteq = neteq.into_inner().unwrap_or_else(PoisonError::into_inner);
    let lifetime = neteq.get_statistics().lifetime;
    let ms = |samples: u64| samples as f64 / SAMPLES_PER_MS as f64;
    let decoded = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(RealTimeRun {
        samples: pulled.samples,
        decoded: source_timestamps(sent, &decoded),
        inserted: inserted.packets,
        busy: inserted.busy + pulled.busy,
        worst_insert_late_ms: inserted.worst_late_ms,
        worst_pull_late_ms: pulled.worst_late_ms,
        expand_pulls: pulled.expand,
        mean_target_delay_ms: pulled.target_sum_ms / pulls.max(1) as f64,
        peak_target_delay_ms: pulled.target_peak_ms,
        shortened_ms: ms(lifetime.removed_samples_for_acceleration),
        lengthened_ms: ms(lifetime.inserted_samples_for_deceleration),
        concealed_ms: ms(lifetime.concealed_samples),
    })
}

/// Our decoder behind the crate's trait: 48 kHz mono, f32 scaled to ±1.0. Keeps every
/// payload it decodes, in order, so the run can tell which frames played.
struct Adapter {
    decoder: OpusDecoder,
    pcm: Vec<i16>,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AudioDecoder for Adapter {
    fn sample_rate(&self) -> u32 {
        SAMPLE_RATE
    }

    fn channels(&self) -> u8 {
        1
    }

    fn decode(&mut self, encoded: &[u8]) -> neteq::Result<Vec<f32>> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(encoded.to_vec());
        let n = self
            .decoder
            .decode(encoded, &mut self.pcm)
            .map_err(|e| NetEqError::DecoderError(e.to_string()))?;
        Ok(self.pcm[..n]
            .iter()
            .map(|&s| f32::from(s) / 32768.0)
            .collect())
    }
}

/// What the insert thread did.
struct Inserted {
    packets: usize,
    busy: Duration,
    worst_late_ms: f64,
}

/// Inserts each arriving packet at its arrival time, then its copies (by `copies`). The
/// crate is told each packet's duration (`frame_ms`): it counts its buffer level from it.
fn insert_all(
    neteq: &Mutex<NetEq>,
    sent: &[Sent],
    arrivals: &[(f64, usize)],
    copies: CopyPolicy,
    frame_ms: u32,
    start: Instant,
) -> anyhow::Result<Inserted> {
    let mut done = Inserted {
        packets: 0,
        busy: Duration::ZERO,
        worst_late_ms: 0.0,
    };
    let mut seen: HashSet<u16> = HashSet::new();
    for &(arrive_ms, index) in arrivals {
        let packet = &sent[index];
        let late = sleep_until(start + Duration::from_secs_f64(arrive_ms.max(0.0) / 1000.0));
        done.worst_late_ms = done.worst_late_ms.max(late.as_secs_f64() * 1000.0);
        // The original first, then the copies nearest first, as they sit in the packet.
        let mut batch = Vec::with_capacity(1 + packet.copies.len());
        for (seq, timestamp, payload) in
            std::iter::once((packet.seq, packet.timestamp, &packet.payload)).chain(
                packet
                    .copies
                    .iter()
                    .map(|(seq, ts, payload)| (*seq, *ts, payload)),
            )
        {
            if seen.insert(seq) || copies == CopyPolicy::All {
                batch.push((seq, timestamp, payload));
            }
        }
        let mut neteq = neteq.lock().unwrap_or_else(PoisonError::into_inner);
        let began = Instant::now();
        for (seq, timestamp, payload) in batch {
            let header = RtpHeader::new(seq, timestamp, SSRC, PAYLOAD_TYPE, false);
            neteq
                .insert_packet(AudioPacket::new(
                    header,
                    payload.clone(),
                    SAMPLE_RATE,
                    1,
                    frame_ms,
                ))
                .map_err(|e| anyhow!("neteq refused packet {seq}: {e}"))?;
            done.packets += 1;
        }
        done.busy += began.elapsed();
    }
    Ok(done)
}

/// What the pull loop played.
struct Pulled {
    samples: Vec<i16>,
    busy: Duration,
    worst_late_ms: f64,
    expand: usize,
    target_sum_ms: f64,
    target_peak_ms: f64,
}

/// Pulls 10 ms every 10 ms, `pulls` times, on deadlines counted from `start`.
fn pull_all(neteq: &Mutex<NetEq>, pulls: usize, start: Instant) -> anyhow::Result<Pulled> {
    let mut done = Pulled {
        samples: Vec::with_capacity(pulls * PULL_SAMPLES),
        busy: Duration::ZERO,
        worst_late_ms: 0.0,
        expand: 0,
        target_sum_ms: 0.0,
        target_peak_ms: 0.0,
    };
    for tick in 0..pulls {
        let late = sleep_until(start + PULL_PERIOD * tick as u32);
        done.worst_late_ms = done.worst_late_ms.max(late.as_secs_f64() * 1000.0);
        let mut neteq = neteq.lock().unwrap_or_else(PoisonError::into_inner);
        let began = Instant::now();
        let frame = neteq
            .get_audio()
            .map_err(|e| anyhow!("neteq get_audio at {} ms: {e}", tick * 10))?;
        done.busy += began.elapsed();
        let target = f64::from(neteq.target_delay_ms());
        done.target_sum_ms += target;
        done.target_peak_ms = done.target_peak_ms.max(target);
        drop(neteq);
        if frame.speech_type == SpeechType::Expand {
            done.expand += 1;
        }
        // Exactly 10 ms per pull, so that output sample i is played at i / 48 ms.
        let mut pcm: Vec<i16> = frame
            .samples
            .iter()
            .map(|&x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        pcm.resize(PULL_SAMPLES, 0);
        done.samples.extend_from_slice(&pcm);
    }
    Ok(done)
}

/// Sleeps until `deadline`; returns how late it woke (zero if the deadline had not passed).
fn sleep_until(deadline: Instant) -> Duration {
    let now = Instant::now();
    if deadline > now {
        thread::sleep(deadline - now);
    }
    Instant::now().saturating_duration_since(deadline)
}

/// The source timestamp of each decoded payload: `None` when no sent frame, or more than
/// one, carried exactly those bytes.
fn source_timestamps(sent: &[Sent], decoded: &[Vec<u8>]) -> Vec<Option<u32>> {
    let mut by_payload: HashMap<&[u8], Option<u32>> = HashMap::new();
    for packet in sent {
        by_payload
            .entry(&packet.payload)
            .and_modify(|ts| *ts = None)
            .or_insert(Some(packet.timestamp));
    }
    decoded
        .iter()
        .map(|payload| by_payload.get(payload.as_slice()).copied().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_map_to_their_frames_and_shared_ones_to_none() {
        let packet = |seq: u16, payload: &[u8]| Sent {
            seq,
            timestamp: u32::from(seq) * 960,
            sent_ms: f64::from(seq) * 20.0,
            payload: payload.to_vec(),
            quiet: false,
            copies: Vec::new(),
        };
        let sent = [packet(0, b"a"), packet(1, b"b"), packet(2, b"b")];
        let decoded = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()];
        assert_eq!(source_timestamps(&sent, &decoded), [Some(0), None, None]);
    }
}
