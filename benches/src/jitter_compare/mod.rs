//! `sotto-bench jitter-compare`: our receive side against the crates.io `neteq` crate on
//! the same packet traces (issue 18, deliverable 2: keep the better jitter buffer).
//!
//! For each speech file, path and seed: the speech is encoded as our sender does
//! ([`replay::encode`]: Opus, DTX, two RFC 2198 copies on lossy paths), the path gives
//! each packet an arrival time ([`replay::arrivals`]), and the same `sent` and arrivals go
//! through both receive sides: ours by [`replay::replay`] on a virtual clock (the buffer is
//! sans-IO and takes `now` as an argument, so this is what it would do in real time), and
//! `neteq` in real time ([`neteq_side`], it reads the wall clock itself). Both outputs are
//! written as WAV files and scored the same way by `benches/userstyle/score.py` (PESQ-WB,
//! lag, how the delay moved during speech).
//!
//! Owns: the traces, the runs, the scoring, DIR/jitter-compare.json and
//! DIR/jitter-compare.md. Must not touch: the engine's buffer or sender (it only calls
//! `audio::replay`).

mod neteq_side;
mod report;
mod scoring;

pub use neteq_side::CopyPolicy;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;
use sotto_engine::audio::codec::{DEFAULT_DECODER_COMPLEXITY, EncoderConfig};
use sotto_engine::audio::jitter::JitterConfig;
use sotto_engine::audio::replay::{self, PlayedFrame, Sent};
use sotto_engine::audio::{SAMPLE_RATE, SAMPLES_PER_MS};

use scoring::{score, write_wav};

/// The fixed one-way delay of every path, ms.
pub const PATH_DELAY_MS: f64 = 30.0;
/// Copies of earlier frames each packet carries on a lossy path (our sender's RED depth).
pub const RED_DEPTH: usize = 2;
/// Output played after the end of the source, ms: room for the buffers' delay.
const TAIL_MS: f64 = 1000.0;
/// Each output is also scored from this far into the source on (and into the output, so
/// the lag is still mouth to ear): past `neteq`'s start-up, when its target delay is 2 s
/// until the first update of its delay histogram, 500 ms after the first packet, and the
/// backlog that built up meanwhile is accelerated away (about 3 s in the traces here).
pub const SETTLED_MS: f64 = 4000.0;

/// One network path of the comparison.
#[derive(Debug, Clone, Copy)]
pub struct TracePath {
    /// Its name in the report.
    pub name: &'static str,
    /// Share of packets lost, 0..1.
    pub loss: f64,
    /// The most extra delay, ms (uniform, so packets may be reordered).
    pub jitter_ms: f64,
}

/// The paths, all with [`PATH_DELAY_MS`] of fixed delay.
pub const PATHS: [TracePath; 5] = [
    TracePath {
        name: "clean",
        loss: 0.0,
        jitter_ms: 0.0,
    },
    TracePath {
        name: "5% loss",
        loss: 0.05,
        jitter_ms: 0.0,
    },
    TracePath {
        name: "10% loss",
        loss: 0.10,
        jitter_ms: 0.0,
    },
    TracePath {
        name: "20% loss",
        loss: 0.20,
        jitter_ms: 0.0,
    },
    TracePath {
        name: "10% loss, 20 ms jitter",
        loss: 0.10,
        jitter_ms: 20.0,
    },
];

/// What to compare.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the WAV files, jitter-compare.json and jitter-compare.md go.
    pub out: PathBuf,
    /// Speech files, 48 kHz mono.
    pub speech: Vec<PathBuf>,
    /// Seeds per speech file and path (1..=N).
    pub seeds: u64,
    /// A Python with the scoring packages (`benches/setup-scoring.sh`).
    pub python: PathBuf,
    /// How the `neteq` side gets the RFC 2198 copies; one `neteq` run per policy.
    pub neteq_copies: Vec<CopyPolicy>,
}

/// Whose receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// Ours: `audio::jitter` and `audio::playout` through `audio::replay`.
    Sotto,
    /// The `neteq` crate, every copy inserted.
    Neteq,
    /// The `neteq` crate, only frames not inserted before.
    NeteqUnseen,
}

impl Engine {
    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Sotto => "sotto",
            Engine::Neteq => "neteq",
            Engine::NeteqUnseen => "neteq (unseen copies)",
        }
    }

    fn for_policy(policy: CopyPolicy) -> Engine {
        match policy {
            CopyPolicy::All => Engine::Neteq,
            CopyPolicy::Unseen => Engine::NeteqUnseen,
        }
    }
}

/// One run of one engine: a speech file, a path and a seed.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The speech file's name.
    pub speech: String,
    /// The path's name.
    pub path: &'static str,
    /// Its loss, 0..1.
    pub loss: f64,
    /// Its jitter, ms.
    pub jitter_ms: f64,
    /// The seed.
    pub seed: u64,
    /// Whose receive side.
    pub engine: Engine,
    /// The output, relative to the out dir.
    pub wav: String,
    /// PESQ-WB of the output against the source.
    pub pesq_wb: Option<f64>,
    /// Where the source starts in the output: mouth to ear, the path's delay included, ms.
    pub lag_ms: Option<f64>,
    /// The widest spread of the delay inside one stretch of speech, ms (score.py).
    pub delay_spread_widest_ms: Option<f64>,
    /// The median spread over stretches of speech, ms (score.py).
    pub delay_spread_median_ms: Option<f64>,
    /// Steps of 20 ms or more between neighbouring 200 ms windows of speech (score.py).
    pub delay_steps_20ms: Option<u32>,
    /// Share of the source's loud 100 ms windows that came through (score.py).
    pub speech_windows_heard: Option<f64>,
    /// PESQ-WB from [`SETTLED_MS`] on, source and output cut at the same time.
    pub settled_pesq_wb: Option<f64>,
    /// Mouth to ear from [`SETTLED_MS`] on, ms.
    pub settled_lag_ms: Option<f64>,
    /// Frames the sender sent.
    pub frames_sent: usize,
    /// Frames that reached the receiver, as original or copy.
    pub frames_received: usize,
    /// Distinct frames played (decoded) from a packet or a copy.
    pub frames_played: usize,
    /// Frames played again after they had played.
    pub frames_repeated: usize,
    /// Frames played for the first time after a later frame had played.
    pub frames_out_of_order: usize,
    /// Time spent in the receive side per second of audio, ms: ours the whole virtual-clock
    /// replay, `neteq` the time inside `insert_packet` and `get_audio` (decoding included
    /// in both).
    pub busy_ms_per_s: f64,
    /// Audio cut out by time-stretching, ms.
    pub shortened_ms: f64,
    /// Audio added by time-stretching, ms.
    pub lengthened_ms: f64,
    /// Audio concealed, ms (each engine's own count; not comparable one to one).
    pub concealed_ms: f64,
    /// `neteq` only: its mean target delay, ms.
    pub target_delay_ms: Option<f64>,
    /// `neteq` only: its highest target delay, ms.
    pub peak_target_delay_ms: Option<f64>,
    /// `neteq` only: packets inserted, originals and copies.
    pub packets_inserted: Option<usize>,
    /// `neteq` only: 10 ms pulls it marked as concealment, in ms.
    pub expand_ms: Option<f64>,
    /// `neteq` only: the latest an insert or a pull woke after its time, ms (how well
    /// the real-time run kept to the trace).
    pub worst_wake_late_ms: Option<f64>,
}

/// Runs the comparison, writes DIR/jitter-compare.json and DIR/jitter-compare.md, and
/// returns the report.
pub fn run(options: &Options) -> anyhow::Result<String> {
    if !options.python.exists() {
        bail!(
            "{} not found: the comparison needs PESQ (run `bash benches/setup-scoring.sh`)",
            options.python.display()
        );
    }
    if options.speech.is_empty() || options.seeds == 0 {
        bail!("nothing to compare: no speech files or no seeds");
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("userstyle/score.py");
    let runs = options.speech.len() * PATHS.len() * options.seeds as usize;
    eprintln!(
        "jitter-compare: {runs} traces; the neteq side runs in real time ({} run(s) of each \
         trace's length)",
        options.neteq_copies.len()
    );
    let mut records = Vec::new();
    for file in &options.speech {
        let source = sotto_engine::audio::wav::read_48k_mono(file)
            .with_context(|| format!("reading {}", file.display()))?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "speech".into());
        let reference = options.out.join(format!("{stem}-source.wav"));
        write_wav(&reference, &source)?;
        let settled = (SETTLED_MS as usize * SAMPLES_PER_MS).min(source.len());
        let reference_settled = options.out.join(format!("{stem}-source-settled.wav"));
        write_wav(&reference_settled, &source[settled..])?;
        let references = [reference.as_path(), reference_settled.as_path()];
        for path in &PATHS {
            let lossy = path.loss > 0.0;
            let config = if lossy {
                EncoderConfig {
                    fec: false,
                    loss_percent: (path.loss * 100.0).round() as u8,
                    ..EncoderConfig::default()
                }
            } else {
                EncoderConfig::default()
            };
            let frame_ms = config.frame.millis();
            let sent = replay::encode(&source, &config, if lossy { RED_DEPTH } else { 0 })
                .with_context(|| format!("encoding {}", file.display()))?;
            for seed in 1..=options.seeds {
                let trace = Trace {
                    stem: &stem,
                    path,
                    seed,
                    source: &source,
                    sent: &sent,
                    arrivals: replay::arrivals(
                        &sent,
                        &replay::Path {
                            loss: path.loss,
                            delay_ms: PATH_DELAY_MS,
                            jitter_ms: path.jitter_ms,
                            seed,
                            change: None,
                        },
                    ),
                    frame_ms,
                };
                let mut these = vec![trace.ours(&options.out)?];
                for &policy in &options.neteq_copies {
                    these.push(trace.neteq(policy, &options.out)?);
                }
                for record in &mut these {
                    score(record, &options.python, &script, references, &options.out)?;
                }
                eprintln!(
                    "{stem}, {}, seed {seed}: {}",
                    path.name,
                    these
                        .iter()
                        .map(|r| format!(
                            "{} PESQ-WB {:?} lag {:?} ms spread {:?} ms",
                            r.engine.label(),
                            r.pesq_wb,
                            r.lag_ms,
                            r.delay_spread_widest_ms
                        ))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
                records.extend(these);
            }
        }
    }
    let json = options.out.join("jitter-compare.json");
    std::fs::write(&json, serde_json::to_string_pretty(&records)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let markdown = report::markdown(&records, options);
    let md = options.out.join("jitter-compare.md");
    std::fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    eprintln!("wrote {} and {}", json.display(), md.display());
    Ok(markdown)
}

/// One trace: what was sent and when each packet arrived.
struct Trace<'a> {
    stem: &'a str,
    path: &'a TracePath,
    seed: u64,
    source: &'a [i16],
    sent: &'a [Sent],
    arrivals: Vec<(f64, usize)>,
    frame_ms: u32,
}

impl Trace<'_> {
    fn duration_ms(&self) -> f64 {
        self.source.len() as f64 / SAMPLES_PER_MS as f64 + TAIL_MS
    }

    /// Frames that reached the receiver, as original or copy.
    fn frames_received(&self) -> usize {
        let mut seqs = HashSet::new();
        for &(_, index) in &self.arrivals {
            let packet = &self.sent[index];
            seqs.insert(packet.seq);
            seqs.extend(packet.copies.iter().map(|(seq, _, _)| *seq));
        }
        seqs.len()
    }

    fn wav_name(&self, engine: Engine) -> String {
        let path = self.path.name.replace([' ', ','], "").replace('%', "pc");
        let engine = match engine {
            Engine::Sotto => "sotto",
            Engine::Neteq => "neteq",
            Engine::NeteqUnseen => "neteq-unseen",
        };
        format!("{}-{path}-s{}-{engine}.wav", self.stem, self.seed)
    }

    fn record(&self, engine: Engine, played: &[Option<u32>], busy_ms: f64) -> Record {
        let order = play_order(played);
        Record {
            speech: self.stem.to_owned(),
            path: self.path.name,
            loss: self.path.loss,
            jitter_ms: self.path.jitter_ms,
            seed: self.seed,
            engine,
            wav: self.wav_name(engine),
            pesq_wb: None,
            lag_ms: None,
            delay_spread_widest_ms: None,
            delay_spread_median_ms: None,
            delay_steps_20ms: None,
            speech_windows_heard: None,
            settled_pesq_wb: None,
            settled_lag_ms: None,
            frames_sent: self.sent.len(),
            frames_received: self.frames_received(),
            frames_played: order.distinct,
            frames_repeated: order.repeated,
            frames_out_of_order: order.out_of_order,
            busy_ms_per_s: busy_ms / (self.source.len() as f64 / SAMPLE_RATE as f64),
            shortened_ms: 0.0,
            lengthened_ms: 0.0,
            concealed_ms: 0.0,
            target_delay_ms: None,
            peak_target_delay_ms: None,
            packets_inserted: None,
            expand_ms: None,
            worst_wake_late_ms: None,
        }
    }

    /// Ours, on the virtual clock.
    fn ours(&self, out: &Path) -> anyhow::Result<Record> {
        let began = Instant::now();
        let replayed = replay::replay(
            self.sent,
            &self.arrivals,
            JitterConfig::default(),
            DEFAULT_DECODER_COMPLEXITY,
            self.duration_ms(),
        )
        .context("replaying through our receive side")?;
        let busy_ms = began.elapsed().as_secs_f64() * 1000.0;
        let played: Vec<Option<u32>> = replayed
            .played
            .iter()
            .map(|p: &PlayedFrame| u32::try_from(p.source).ok())
            .collect();
        let mut record = self.record(Engine::Sotto, &played, busy_ms);
        record.shortened_ms = replayed.stats.shortened_ms;
        record.lengthened_ms = replayed.stats.lengthened_ms;
        record.concealed_ms = replayed.stats.concealed_ms;
        write_wav(&out.join(&record.wav), &replayed.samples)?;
        Ok(record)
    }

    /// `neteq`, in real time.
    fn neteq(&self, policy: CopyPolicy, out: &Path) -> anyhow::Result<Record> {
        let run = neteq_side::run(
            self.sent,
            &self.arrivals,
            policy,
            DEFAULT_DECODER_COMPLEXITY,
            self.frame_ms,
            self.duration_ms(),
        )
        .context("replaying through neteq")?;
        let mut record = self.record(
            Engine::for_policy(policy),
            &run.decoded,
            run.busy.as_secs_f64() * 1000.0,
        );
        record.shortened_ms = run.shortened_ms;
        record.lengthened_ms = run.lengthened_ms;
        record.concealed_ms = run.concealed_ms;
        record.target_delay_ms = Some(run.mean_target_delay_ms);
        record.peak_target_delay_ms = Some(run.peak_target_delay_ms);
        record.packets_inserted = Some(run.inserted);
        record.expand_ms = Some(run.expand_pulls as f64 * 10.0);
        record.worst_wake_late_ms = Some(run.worst_insert_late_ms.max(run.worst_pull_late_ms));
        let unknown = run.decoded.iter().filter(|ts| ts.is_none()).count();
        if unknown > 0 {
            eprintln!(
                "note: {unknown} of {} frames neteq decoded could not be told apart by payload",
                run.decoded.len()
            );
        }
        write_wav(&out.join(&record.wav), &run.samples)?;
        Ok(record)
    }
}

/// How the frames played, in order of play: distinct frames, frames played again, and
/// frames first played after a later one.
#[derive(Debug, PartialEq, Eq)]
struct PlayOrder {
    distinct: usize,
    repeated: usize,
    out_of_order: usize,
}

fn play_order(played: &[Option<u32>]) -> PlayOrder {
    let mut seen = HashSet::new();
    let mut latest: Option<u32> = None;
    let mut order = PlayOrder {
        distinct: 0,
        repeated: 0,
        out_of_order: 0,
    };
    for &ts in played.iter().flatten() {
        if !seen.insert(ts) {
            order.repeated += 1;
            continue;
        }
        order.distinct += 1;
        if latest.is_some_and(|latest| ts < latest) {
            order.out_of_order += 1;
        }
        latest = latest.max(Some(ts));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn play_order_counts_repeats_and_late_frames() {
        let played = [Some(0), Some(960), Some(2880), Some(960), Some(1920), None];
        assert_eq!(
            play_order(&played),
            PlayOrder {
                distinct: 4,
                repeated: 1,
                out_of_order: 1,
            }
        );
    }
}
