//! This process's CPU time from `/proc/self/stat`: what `sotto call` and `sotto answer`
//! report as a call's share of a core, and what the examples measure with.

/// User plus system CPU time of this process so far, in seconds; `None` where there is no
/// `/proc` (not Linux) or it does not parse. Fields 14 and 15, in clock ticks of 1/100 s
/// (Linux's `USER_HZ` for `/proc`).
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat_cpu_seconds(&stat)
}

fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses; the fields after the
    // last `)` do not. They start at field 3 (state), so utime and stime are at 11 and 12.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_any_command_name() {
        let stat = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0 100";
        assert_eq!(stat_cpu_seconds(stat), Some(1.75));
        assert_eq!(stat_cpu_seconds("4242 (x) S 1 2"), None);
        assert_eq!(stat_cpu_seconds("no name at all"), None);
        let own = process_cpu_seconds().expect("this process's /proc/self/stat");
        assert!(own >= 0.0);
    }
}
