//! A network namespace with a veth pair to ours, for running Chromium where its ICE
//! candidates are usable (it ignores 127.0.0.1). Shared by the browser interop test and
//! `sotto-bench run --peer chromium`. Needs root and iproute2; owns nothing else.

use std::path::Path;
use std::process::Command;

/// Runs `ip ARGS`, with its stderr as the error.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace, removed on drop. Named `PREFIX-PID` (the veth ends `IFPREFIX PID h|n`),
/// so runs side by side do not meet; namespaces left by runs that died are removed first.
/// Our side of the pair is `10.SUBNET.N.1`, the namespace's `10.SUBNET.N.2` (N from the
/// process id).
pub struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub name: String,
    host_if: String,
    /// Our address on the pair.
    pub host_addr: String,
    /// The namespace's address on the pair.
    pub inner_addr: String,
}

impl Netns {
    /// Makes `PREFIX-PID` with a veth pair in 10.`subnet`.N.0/24. `if_prefix` is at most
    /// 7 bytes (interface names are at most 15: prefix, a pid of up to 7 digits, a letter).
    pub fn create(prefix: &str, if_prefix: &str, subnet: u8) -> Result<Netns, String> {
        Netns::remove_stale(prefix, if_prefix);
        let pid = std::process::id();
        let net = format!("10.{subnet}.{}", pid % 250 + 1);
        let netns = Netns {
            name: format!("{prefix}-{pid}"),
            host_if: format!("{if_prefix}{pid}h"),
            host_addr: format!("{net}.1"),
            inner_addr: format!("{net}.2"),
        };
        let inner_if = format!("{if_prefix}{pid}n");
        let (name, host_if) = (netns.name.as_str(), netns.host_if.as_str());
        ip(&["netns", "add", name])?;
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", &inner_if,
        ])?;
        ip(&["link", "set", &inner_if, "netns", name])?;
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{net}.2/24"), "dev", &inner_if])?;
        inside(&["link", "set", &inner_if, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Removes `PREFIX-PID` namespaces whose process is gone (deleting a namespace deletes
    /// the veth end inside it, and so the pair).
    fn remove_stale(prefix: &str, if_prefix: &str) {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(pid) = name.strip_prefix(&format!("{prefix}-")) else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = ip(&["netns", "del", name]);
                let _ = ip(&["link", "del", &format!("{if_prefix}{pid}h")]);
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
