//! jitter-compare.md: means per path, the engines side by side in each cell.

use std::fmt::Write as _;

use super::{Engine, Options, PATH_DELAY_MS, PATHS, RED_DEPTH, Record, SETTLED_MS};

/// The report of `records`.
pub fn markdown(records: &[Record], options: &Options) -> String {
    let mut engines = vec![Engine::Sotto];
    engines.extend(options.neteq_copies.iter().map(|&p| Engine::for_policy(p)));
    let names: Vec<&str> = engines.iter().map(|e| e.label()).collect();
    let files: Vec<&str> = {
        let mut files: Vec<&str> = records.iter().map(|r| r.speech.as_str()).collect();
        files.dedup();
        files
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Jitter buffers on the same traces: {}\n",
        names.join(" vs ")
    );
    let _ = writeln!(
        md,
        "{} speech file(s) ({}) x {} paths x {} seed(s). Each trace: the speech encoded as our \
         sender does (Opus 32 kbit/s, 20 ms, DTX; on lossy paths {RED_DEPTH} RFC 2198 copies, \
         in-band FEC off, the loss expected), {PATH_DELAY_MS} ms fixed delay, the path's loss \
         and jitter. Ours replays it on a virtual clock (the buffer takes `now` as an argument, \
         so this is what it does in real time); `neteq` 0.9 runs in real time (it reads the \
         wall clock), inserting each packet at its arrival and pulling 10 ms every 10 ms. Both \
         decode with our Opus decoder (complexity 7). Every output is scored by \
         `benches/userstyle/score.py`. Cells: {}.\n",
        files.len(),
        files.join(", "),
        PATHS.len(),
        options.seeds,
        names.join(" / ")
    );
    let _ = writeln!(
        md,
        "| Path | PESQ-WB | PESQ-WB from {} s | Mouth to ear, ms | Mouth to ear from {} s, ms | \
         Widest delay spread in speech, ms | Median spread, ms | Delay steps >= 20 ms | \
         Busy, ms per s of audio |",
        SETTLED_MS / 1000.0,
        SETTLED_MS / 1000.0,
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for path in &PATHS {
        let cell = |metric: fn(&Record) -> Option<f64>, places: usize| {
            side_by_side(records, &engines, |r| r.path == path.name, metric, places)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            path.name,
            cell(|r| r.pesq_wb, 2),
            cell(|r| r.settled_pesq_wb, 2),
            cell(|r| r.lag_ms, 0),
            cell(|r| r.settled_lag_ms, 0),
            cell(|r| r.delay_spread_widest_ms, 0),
            cell(|r| r.delay_spread_median_ms, 0),
            cell(|r| r.delay_steps_20ms.map(f64::from), 1),
            cell(|r| Some(r.busy_ms_per_s), 2),
        );
    }
    let _ = writeln!(
        md,
        "\nFrames (means per trace): what reached the receiver and what played.\n\n\
         | Path | Sent | Received | Played | Played again | Played after a later one | \
         Cut by stretching, ms | Added by stretching, ms |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for path in &PATHS {
        let cell = |metric: fn(&Record) -> Option<f64>, places: usize| {
            side_by_side(records, &engines, |r| r.path == path.name, metric, places)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            path.name,
            cell(|r| Some(r.frames_sent as f64), 0),
            cell(|r| Some(r.frames_received as f64), 0),
            cell(|r| Some(r.frames_played as f64), 0),
            cell(|r| Some(r.frames_repeated as f64), 1),
            cell(|r| Some(r.frames_out_of_order as f64), 1),
            cell(|r| Some(r.shortened_ms), 0),
            cell(|r| Some(r.lengthened_ms), 0),
        );
    }
    let _ = writeln!(
        md,
        "\nPESQ-WB per speech file (mean over seeds).\n\n| Speech | {} |",
        PATHS.map(|p| p.name).join(" | ")
    );
    let _ = writeln!(md, "|---|{}", "---|".repeat(PATHS.len()));
    for file in &files {
        let cells: Vec<String> = PATHS
            .iter()
            .map(|path| {
                side_by_side(
                    records,
                    &engines,
                    |r| r.path == path.name && r.speech == *file,
                    |r| r.pesq_wb,
                    2,
                )
            })
            .collect();
        let _ = writeln!(md, "| {file} | {} |", cells.join(" | "));
    }
    let neteq: Vec<&Record> = records
        .iter()
        .filter(|r| r.engine != Engine::Sotto)
        .collect();
    if !neteq.is_empty() {
        let mut late: Vec<f64> = neteq.iter().filter_map(|r| r.worst_wake_late_ms).collect();
        late.sort_by(f64::total_cmp);
        let median = late.get(late.len() / 2).copied().unwrap_or(0.0);
        let worst = late.last().copied().unwrap_or(0.0);
        let over = late.iter().filter(|&&l| l > 10.0).count();
        let target = mean(neteq.iter().filter_map(|r| r.target_delay_ms));
        let peak = neteq
            .iter()
            .filter_map(|r| r.peak_target_delay_ms)
            .fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "\nHow well the real-time runs kept to the trace: the latest any insert or pull \
             woke after its time was {median:.1} ms in the median run, over 10 ms in {over} of \
             {} runs, {worst:.1} ms at worst. `neteq`'s target delay: {} on average, at most \
             {peak:.0} ms.",
            late.len(),
            target.map_or("-".into(), |t| format!("{t:.0} ms"))
        );
    }
    md
}

/// The mean of `metric` over the records `select` picks, per engine, joined by " / ".
fn side_by_side(
    records: &[Record],
    engines: &[Engine],
    select: impl Fn(&Record) -> bool,
    metric: fn(&Record) -> Option<f64>,
    places: usize,
) -> String {
    engines
        .iter()
        .map(|&engine| {
            mean(
                records
                    .iter()
                    .filter(|r| r.engine == engine && select(r))
                    .filter_map(metric),
            )
            .map_or("-".into(), |m| format!("{m:.places$}"))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}
