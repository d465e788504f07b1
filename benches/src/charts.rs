//! PNG charts of a `sotto-bench run` (plotters, bitmap backend): PESQ-WB against packet
//! loss, mouth-to-ear delay against jitter, and for each Sotto call its sender's bitrate
//! and its receiver's jitter-buffer delay over time. Text is drawn with DejaVu Sans, read
//! at run time (Debian's fonts-dejavu-core) so that no font system library is needed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use sotto_netsim::{Impairment, Loss};

use crate::quality::{CallResult, Peer};
use crate::scenario::Scenario;

/// Where the font comes from.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const SIZE: (u32, u32) = (900, 560);
const PEERS: [(Peer, RGBColor); 2] = [(Peer::Sotto, BLUE), (Peer::Chromium, RED)];

/// Draws every chart into `dir`; returns the files written.
pub fn draw_all(
    dir: &Path,
    scenarios: &[Scenario],
    results: &[CallResult],
) -> anyhow::Result<Vec<PathBuf>> {
    load_font()?;
    let mut written = Vec::new();
    let loss = |s: &Scenario| s.directions().0.loss.mean_rate() * 100.0;
    let without_schedule = |i: &Impairment| i.schedule.is_empty() && i.bandwidth.is_none();
    // PESQ-WB against loss: scenarios whose only impairment is uniform loss.
    let lossy: Vec<(f64, &Scenario)> = scenarios
        .iter()
        .filter(|s| {
            let (forward, _) = s.directions();
            forward.jitter.is_none()
                && without_schedule(&forward)
                && matches!(forward.loss, Loss::None | Loss::Uniform { .. })
        })
        .map(|s| (loss(s), s))
        .collect();
    let lines = series(&lossy, results, |r| r.pesq_wb);
    if has_a_line(&lines) {
        let path = dir.join("pesq-vs-loss.png");
        xy_chart(
            &path,
            "PESQ-WB against packet loss (mean over seeds)",
            ("uniform loss, %", "PESQ-WB"),
            &lines,
            Some((1.0, 4.6)),
        )?;
        written.push(path);
    }
    // Mouth-to-ear delay against jitter: scenarios with no loss and no schedule.
    let jittery: Vec<(f64, &Scenario)> = scenarios
        .iter()
        .filter(|s| {
            let (forward, _) = s.directions();
            matches!(forward.loss, Loss::None) && without_schedule(&forward)
        })
        .map(|s| {
            let sigma = s.directions().0.jitter.map_or(0.0, |j| j.std_dev_ms);
            (sigma, s)
        })
        .collect();
    let lines = series(&jittery, results, |r| r.mouth_to_ear_ms);
    if has_a_line(&lines) {
        let path = dir.join("delay-vs-jitter.png");
        xy_chart(
            &path,
            "Mouth-to-ear delay against jitter (mean over seeds)",
            ("jitter σ, ms", "mouth-to-ear delay, ms"),
            &lines,
            None,
        )?;
        written.push(path);
    }
    for result in results.iter().filter(|r| r.peer == Peer::Sotto) {
        if result.caller_timeline.is_empty() {
            continue;
        }
        let path = dir.join(format!(
            "timeline-{}-seed{}.png",
            result.scenario, result.seed
        ));
        timeline_chart(&path, result)?;
        written.push(path);
    }
    // Video over time: per scenario and seed, the first listener of each peer.
    let mut calls: Vec<(&str, u64)> = results
        .iter()
        .filter(|r| r.video.is_some())
        .map(|r| (r.scenario.as_str(), r.seed))
        .collect();
    calls.sort();
    calls.dedup();
    for (scenario, seed) in calls {
        let firsts: Vec<&CallResult> = PEERS
            .iter()
            .filter_map(|(peer, _)| {
                results.iter().find(|r| {
                    r.peer == *peer && r.scenario == scenario && r.seed == seed && r.video.is_some()
                })
            })
            .collect();
        let path = dir.join(format!(
            "video-{}-seed{seed}.png",
            scenario.replace('/', "-")
        ));
        video_chart(&path, scenario, seed, &firsts)?;
        written.push(path);
    }
    Ok(written)
}

/// Three panels over time, one line per peer: pictures shown per second, their height
/// (the layer, or the size a single stream was sent at), and what arrived (Sotto's
/// receiver counts it; the browser's pictures come without).
fn video_chart(
    path: &Path,
    scenario: &str,
    seed: u64,
    calls: &[&CallResult],
) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (SIZE.0, SIZE.1 * 3 / 2)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let panels = root.split_evenly((3, 1));
    type Pick = fn(&sotto_engine::call::video::VideoSecond) -> f64;
    let measures: [(&str, &str, Pick); 3] = [
        ("pictures shown", "per second", |s| f64::from(s.frames)),
        ("their height", "pixels", |s| f64::from(s.height)),
        ("video received", "kbit/s", |s| s.kbps),
    ];
    let lines = |pick: Pick| -> Vec<(Peer, Vec<(f64, f64)>)> {
        calls
            .iter()
            .filter_map(|call| {
                let video = call.video.as_ref()?;
                let line: Vec<(f64, f64)> = video
                    .received
                    .timeline
                    .iter()
                    .map(|s| (f64::from(s.t_s), pick(s)))
                    .collect();
                (line.iter().any(|p| p.1 > 0.0)).then_some((call.peer, line))
            })
            .collect()
    };
    let t_max = calls
        .iter()
        .filter_map(|c| c.video.as_ref())
        .map(|v| v.received.timeline.len() as f64)
        .fold(1.0, f64::max);
    for (index, (panel, (what, unit, pick))) in panels.iter().zip(measures).enumerate() {
        let lines = lines(pick);
        let y_max = lines
            .iter()
            .flat_map(|(_, l)| l.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.15;
        let caption = if index == 0 {
            format!("{scenario} seed {seed}: the received video, {what}")
        } else {
            what.to_owned()
        };
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(chart_error)?;
        mesh(&mut chart, ("s since the first packet", unit), 13)?;
        for (peer, line) in lines {
            let color = PEERS
                .iter()
                .find(|(p, _)| *p == peer)
                .map_or(BLACK, |(_, c)| *c);
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(2)))
                .map_err(chart_error)?
                .label(peer.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        legend(&mut chart, 13)?;
    }
    root.present().map_err(chart_error)?;
    Ok(())
}

fn load_font() -> anyhow::Result<()> {
    let bytes = std::fs::read(FONT)
        .with_context(|| format!("reading {FONT} (apt-get install fonts-dejavu-core)"))?;
    // plotters keeps fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a font plotters can read"))
}

/// Whether some peer has at least two points (a line worth drawing).
fn has_a_line(lines: &[(Peer, Vec<(f64, f64)>)]) -> bool {
    lines.iter().any(|(_, line)| line.len() >= 2)
}

/// Per peer, (x, mean of `metric` over seeds) for each scenario, sorted by x. Group runs
/// (`<scenario>/group<N>`) count for their scenario.
fn series(
    points: &[(f64, &Scenario)],
    results: &[CallResult],
    metric: impl Fn(&CallResult) -> Option<f64>,
) -> Vec<(Peer, Vec<(f64, f64)>)> {
    PEERS
        .iter()
        .map(|&(peer, _)| {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter_map(|(x, scenario)| {
                    let values: Vec<f64> = results
                        .iter()
                        .filter(|r| {
                            r.peer == peer
                                && r.scenario.split('/').next() == Some(scenario.name.as_str())
                        })
                        .filter_map(&metric)
                        .collect();
                    (!values.is_empty())
                        .then(|| (*x, values.iter().sum::<f64>() / values.len() as f64))
                })
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            (peer, line)
        })
        .filter(|(_, line)| !line.is_empty())
        .collect()
}

fn chart_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn mesh(chart: &mut Chart<'_, '_>, (x, y): (&str, &str), font: u32) -> anyhow::Result<()> {
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .label_style(("sans-serif", font))
        .draw()
        .map_err(chart_error)
}

fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, font: u32) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", font))
        .draw()
        .map_err(chart_error)
}

fn xy_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    lines: &[(Peer, Vec<(f64, f64)>)],
    y_range: Option<(f64, f64)>,
) -> anyhow::Result<()> {
    let points = lines.iter().flat_map(|(_, l)| l.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !(y_min.is_finite() && y_max.is_finite()) {
        return Err(anyhow!("no points to draw"));
    }
    let (y_min, y_max) = y_range.unwrap_or((0.0, (y_max * 1.15).max(y_min + 1.0)));
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.05, y_min..y_max)
        .map_err(chart_error)?;
    mesh(&mut chart, (x_label, y_label), 15)?;
    for (peer, line) in lines {
        let color = PEERS
            .iter()
            .find(|(p, _)| p == peer)
            .map_or(BLACK, |(_, c)| *c);
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(chart_error)?
            .label(peer.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(chart_error)?;
    }
    legend(&mut chart, 15)?;
    root.present().map_err(chart_error)?;
    Ok(())
}

fn timeline_chart(path: &Path, result: &CallResult) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let t_max = result
        .caller_timeline
        .iter()
        .chain(&result.callee_timeline)
        .map(|p| p.t_s)
        .fold(1.0, f64::max);

    let bitrate: Vec<(f64, f64)> = result
        .caller_timeline
        .iter()
        .map(|p| (p.t_s, f64::from(p.bitrate_bps) / 1000.0))
        .collect();
    let red: Vec<(f64, f64)> = result
        .caller_timeline
        .iter()
        .map(|p| (p.t_s, f64::from(p.red_depth) * 10.0))
        .collect();
    let frame: Vec<(f64, f64)> = result
        .caller_timeline
        .iter()
        .map(|p| (p.t_s, f64::from(p.frame_ms)))
        .collect();
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} seed {}: the caller's encoder",
                result.scenario, result.seed
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..70.0)
        .map_err(chart_error)?;
    mesh(&mut chart, ("s since connected", "kbit/s"), 14)?;
    chart
        .draw_series(LineSeries::new(bitrate, BLUE.stroke_width(2)))
        .map_err(chart_error)?
        .label("Opus bitrate, kbit/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(red, GREEN.stroke_width(2)))
        .map_err(chart_error)?
        .label("RED depth × 10")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(frame, MAGENTA.stroke_width(1)))
        .map_err(chart_error)?
        .label("frame, ms")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    legend(&mut chart, 13)?;

    let target: Vec<(f64, f64)> = result
        .callee_timeline
        .iter()
        .filter_map(|p| p.jitter_target_ms.map(|v| (p.t_s, v)))
        .collect();
    let current: Vec<(f64, f64)> = result
        .callee_timeline
        .iter()
        .filter_map(|p| p.jitter_current_ms.map(|v| (p.t_s, v)))
        .collect();
    let y_max = target
        .iter()
        .chain(&current)
        .map(|p| p.1)
        .fold(100.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("the callee's jitter buffer", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(chart_error)?;
    mesh(&mut chart, ("s since connected", "ms"), 14)?;
    chart
        .draw_series(LineSeries::new(target, RED.stroke_width(2)))
        .map_err(chart_error)?
        .label("target delay")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(current, BLACK.stroke_width(1)))
        .map_err(chart_error)?
        .label("buffered")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    legend(&mut chart, 13)?;
    root.present().map_err(chart_error)?;
    Ok(())
}
