//! Readings from Linux `/proc`: a process's memory (`VmRSS`, `VmHWM`), thread count, CPU
//! time and allowed CPUs. Owns parsing only; it never changes a process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// What `/proc/<pid>/status` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProcStatus {
    /// Resident set size now, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size ("high water mark"), in KiB.
    pub hwm_kib: u64,
    /// Threads.
    pub threads: u64,
}

/// Read `/proc/<pid>/status` (`pid` may be `"self"`).
pub fn status(pid: &str) -> anyhow::Result<ProcStatus> {
    let path = Path::new("/proc").join(pid).join("status");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_status(&text).with_context(|| format!("parsing {}", path.display()))
}

fn parse_status(text: &str) -> anyhow::Result<ProcStatus> {
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .with_context(|| format!("no {name} line"))?;
        let number = line
            .split_whitespace()
            .next()
            .with_context(|| format!("{name} has no value"))?;
        number
            .parse()
            .with_context(|| format!("{name} is not a number: {number:?}"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
        threads: field("Threads")?,
    })
}

/// The CPUs a process may run on, as `/proc/<pid>/status` lists them (e.g. `"0"`, `"0-1"`).
pub fn cpus_allowed(pid: &str) -> anyhow::Result<String> {
    let path = Path::new("/proc").join(pid).join("status");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("no Cpus_allowed_list in {}", path.display()))
}

/// User plus system CPU time a process has used so far.
pub fn cpu_time(pid: &str, ticks_per_sec: u64) -> anyhow::Result<Duration> {
    let path = Path::new("/proc").join(pid).join("stat");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_sec.max(1) as f64,
    ))
}

/// User plus system CPU time of each thread of a process so far, with the thread's name
/// (`/proc/<pid>/task/<tid>/comm`), by thread id.
pub fn thread_cpu_times(
    pid: &str,
    ticks_per_sec: u64,
) -> anyhow::Result<std::collections::BTreeMap<String, (String, Duration)>> {
    let tasks = Path::new("/proc").join(pid).join("task");
    let mut threads = std::collections::BTreeMap::new();
    for entry in
        std::fs::read_dir(&tasks).with_context(|| format!("reading {}", tasks.display()))?
    {
        let dir = entry?.path();
        // A thread may end between the listing and the reads.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        let ticks =
            parse_stat_ticks(&stat).with_context(|| format!("parsing {}", dir.display()))?;
        let tid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        threads.insert(
            tid,
            (
                comm.trim().to_owned(),
                Duration::from_secs_f64(ticks as f64 / ticks_per_sec.max(1) as f64),
            ),
        );
    }
    Ok(threads)
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat_ticks(text: &str) -> anyhow::Result<u64> {
    let Some((_, rest)) = text.rsplit_once(')') else {
        bail!("no ')' after the command name");
    };
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| -> anyhow::Result<u64> {
        let f = fields
            .get(i)
            .with_context(|| format!("field {} missing", i + 3))?;
        f.parse()
            .with_context(|| format!("field {} is not a number: {f:?}", i + 3))
    };
    Ok(get(11)? + get(12)?)
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 if unknown).
pub fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text =
            "Name:\tsotto-signaling\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n";
        let s = parse_status(text).unwrap();
        assert_eq!(
            s,
            ProcStatus {
                rss_kib: 10240,
                hwm_kib: 20480,
                threads: 3
            }
        );
        assert!(parse_status("VmRSS: 1 kB\n").is_err());
    }

    #[test]
    fn parses_stat_with_odd_command_names() {
        let text = "4242 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(text).unwrap(), 300);
        assert!(parse_stat_ticks("4242 (x").is_err());
    }

    #[test]
    fn reads_this_process() {
        let s = status("self").unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.threads >= 1);
        assert!(!cpus_allowed("self").unwrap().is_empty());
        cpu_time("self", ticks_per_sec()).unwrap();
    }
}
