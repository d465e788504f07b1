//! `sotto answer` and `sotto call` as a user runs them on two hosts: each in its own
//! network namespace with no default route (so no multicast DNS either), joined by a
//! bridge on which the test's signaling server listens; the caller's host has a second
//! interface that leads nowhere. The call connects on the default
//! wildcard bind; then each end in turn moves to another network mid-call (a new address
//! comes, the one the call used goes), and the call restarts ICE and goes on: the caller
//! on its own, the callee by asking the caller.
//!
//! Needs root, iproute2 (`ip netns`) and nftables (`nft`, both installed by
//! scripts/setup.sh); SOTTO_SKIP_NETNS=1 skips it where root is not available.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::new_identity;
use sotto_signaling::server::{Config, start};

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(30);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge in our namespace (the signaling server's side) and two namespaces on it, `a`
/// at `.2` and `b` at `.3`, with no route but their own /24. Removed on drop.
struct Hosts {
    bridge: String,
    a: String,
    b: String,
    net: String,
}

impl Hosts {
    /// `test` (one lower-case letter) keeps the names and subnets of tests that run at
    /// once apart.
    fn up(test: char) -> Hosts {
        let pid = std::process::id();
        let hosts = Hosts {
            bridge: format!("sn{test}{}", pid % 1_000_000),
            a: format!("sotto-{test}-a-{pid}"),
            b: format!("sotto-{test}-b-{pid}"),
            net: format!("10.{}.{}", 90 + u32::from(test) % 8, pid % 250 + 1),
        };
        hosts.down();
        ip(&["link", "add", &hosts.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", hosts.net),
            "dev",
            &hosts.bridge,
        ]);
        ip(&["link", "set", &hosts.bridge, "up"]);
        for (ns, last, side) in [(&hosts.a, 2, 'a'), (&hosts.b, 3, 'b')] {
            let outer = format!("{}{side}", hosts.bridge);
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // The old address goes after the new one came: the new one, a secondary, must
            // then take its place instead of going with it.
            ip(&[
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/conf/all/promote_secondaries",
            ]);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", "e0", "netns", ns,
            ]);
            ip(&["link", "set", &outer, "master", &hosts.bridge, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}.{last}/24", hosts.net),
                "dev",
                "e0",
            ]);
            ip(&["-n", ns, "link", "set", "e0", "up"]);
        }
        // The caller's host has a second interface that leads nowhere (a VPN that is down,
        // a docker bridge): its candidates fail their checks and the call goes on the other.
        ip(&[
            "-n", &hosts.a, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ]);
        ip(&["-n", &hosts.a, "link", "set", "d1", "up"]);
        ip(&[
            "-n",
            &hosts.a,
            "addr",
            "add",
            &format!("10.{}.{}.2/24", 98 + u32::from(test) % 8, pid % 250 + 1),
            "dev",
            "d0",
        ]);
        ip(&["-n", &hosts.a, "link", "set", "d0", "up"]);
        hosts
    }

    /// Moves `ns` from `.{from}` to `.{to}`: the new address first, then the old one goes
    /// (as a handover does), so the host is never without one.
    fn move_host(&self, ns: &str, from: u8, to: u8) {
        let address = |last: u8| format!("{}.{last}/24", self.net);
        ip(&["-n", ns, "addr", "add", &address(to), "dev", "e0"]);
        ip(&["-n", ns, "addr", "del", &address(from), "dev", "e0"]);
    }

    fn down(&self) {
        // Our ends of the pairs first: a namespace whose TCP connections lost their
        // address lingers until they time out, and with it the pairs, unless cut here.
        for side in ['a', 'b'] {
            let outer = format!("{}{side}", self.bridge);
            let _ = Command::new("ip").args(["link", "del", &outer]).output();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.down();
    }
}

/// The hosts for test `test` (see [`Hosts::up`]); `None` when SOTTO_SKIP_NETNS is set.
/// Without root or iproute2 the test fails and says why.
fn hosts_unless_skipped(test: char) -> Option<Hosts> {
    if std::env::var_os("SOTTO_SKIP_NETNS").is_some() {
        println!("skipped: SOTTO_SKIP_NETNS is set (network namespace test not run)");
        return None;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    let iproute = Command::new("ip").arg("-V").output().is_ok();
    assert!(
        root && iproute,
        "network namespaces need root and iproute2 (set SOTTO_SKIP_NETNS=1 to skip)"
    );
    Some(Hosts::up(test))
}

/// `sotto` inside namespace `ns`.
fn sotto_in(ns: &str, data: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_sotto"))
        .env_remove("SOTTO_DATA_DIR")
        .env_remove("SOTTO_SERVER")
        .arg("--data-dir")
        .arg(data);
    cmd
}

/// Reads the caller's JSON state lines until it is connected; the rest of its stderr is
/// read on a thread, which returns every line.
fn until_connected(stderr: ChildStderr) -> std::thread::JoinHandle<Vec<String>> {
    let (connected_tx, connected_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"connected\"") {
                let _ = connected_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    connected_rx
        .recv_timeout(WAIT)
        .expect("the call connects across the namespaces");
    reader
}

fn summary(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stderr)))
}

/// The loudest 100 ms (RMS) of the recording's last `seconds`.
fn loudness_at_end(wav: &PathBuf, seconds: f64) -> f64 {
    let mut reader = hound::WavReader::open(wav).unwrap();
    let rate = reader.spec().sample_rate as usize;
    let samples: Vec<f64> = reader
        .samples::<i16>()
        .map(|s| f64::from(s.unwrap()))
        .collect();
    let tail = &samples[samples
        .len()
        .saturating_sub((seconds * rate as f64) as usize)..];
    tail.chunks(rate / 10)
        .map(|chunk| (chunk.iter().map(|s| s * s).sum::<f64>() / chunk.len() as f64).sqrt())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_hosts_with_no_default_route_survives_each_end_changing_network() {
    let Some(hosts) = hosts_unless_skipped('m') else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("{}.1:0", hosts.net).parse().unwrap();
    let server = start(Config::new(listen, dir.path().join("server")))
        .await
        .unwrap();
    let url = server.ws_url();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    new_identity(&alice);
    let bob_id = new_identity(&bob);
    let heard = dir.path().join("heard.wav");

    // Both on the default bind: every interface but loopback, a wildcard the engine
    // watches.
    let answer = sotto_in(&hosts.b, &bob)
        .args(["answer", "--server", &url, "--input", "tone:660"])
        .args(["--wait", "60s", "--json", "--output"])
        .arg(&heard)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut caller = loop {
        let mut caller = sotto_in(&hosts.a, &alice)
            .args(["call", &bob_id, "--server", &url, "--output", "null"])
            .args(["--input", "tone:440", "--duration", "14s", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The answerer listens once its signaling connection is up; a call before that
        // ends at once (peer offline): try again.
        std::thread::sleep(Duration::from_millis(500));
        if caller.try_wait().unwrap().is_none() {
            break caller;
        }
        assert!(started.elapsed() < WAIT, "the answerer never listened");
    };
    let stderr = caller.stderr.take().unwrap();
    let stderr = tokio::task::spawn_blocking(move || until_connected(stderr))
        .await
        .unwrap();

    // The caller's host moves, then the callee's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    hosts.move_host(&hosts.a, 2, 4);
    tokio::time::sleep(Duration::from_secs(4)).await;
    hosts.move_host(&hosts.b, 3, 5);

    let caller = tokio::task::spawn_blocking(move || caller.wait_with_output().unwrap())
        .await
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || answer.wait_with_output().unwrap())
        .await
        .unwrap();
    let states = stderr.join().unwrap();
    let (caller_summary, callee_summary) = (summary(&caller), summary(&answer));
    let what = format!(
        "caller {caller_summary}\ncaller states {states:?}\ncallee {callee_summary}\n{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    assert!(caller.status.success() && answer.status.success(), "{what}");
    assert_eq!(caller_summary["connected"], true, "{what}");
    assert_eq!(
        caller_summary["end"]["detail"], "the call reached its duration",
        "{what}"
    );
    // Each end saw its own move once, and each move was a restart.
    assert_eq!(caller_summary["address_changes"], 1, "{what}");
    assert_eq!(callee_summary["address_changes"], 1, "{what}");
    assert!(
        caller_summary["ice_restarts"].as_u64().unwrap() >= 2,
        "{what}"
    );
    assert!(
        callee_summary["ice_restarts"].as_u64().unwrap() >= 2,
        "{what}"
    );
    // Each end went to reconnecting on its own move and came back to connected (the
    // caller restarts at the callee's request without waiting for its media to stop).
    let callee_states: Vec<String> = String::from_utf8_lossy(&answer.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    for states in [&states, &callee_states] {
        let states: Vec<&String> = states
            .iter()
            .filter(|s| s.starts_with("{\"state\""))
            .collect();
        assert!(states.iter().any(|s| s.contains("reconnecting")), "{what}");
        assert!(
            states.last().is_some_and(|s| s.contains("\"connected\"")),
            "{what}"
        );
    }
    // Media went on: most of the call's packets arrived each way (14 s of 20 ms frames,
    // less what the two moves cost), and the callee still heard the tone at the end.
    for side in [&caller_summary, &callee_summary] {
        let packets = side["received"]["packets"].as_u64().unwrap();
        assert!(packets >= 500, "{packets} packets: {what}");
    }
    assert!(loudness_at_end(&heard, 3.0) > 1000.0, "{what}");
    server.shutdown().await.unwrap();
}

/// `nft` inside namespace `ns`, reading the ruleset from `rules`.
fn nft_in(ns: &str, rules: &str) {
    use std::io::Write as _;
    let mut nft = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    let out = nft.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_direct_path_blocked_the_call_goes_through_the_servers_turn_relay() {
    let Some(hosts) = hosts_unless_skipped('t') else {
        return;
    };
    // Each host drops everything it would send the other: only the server's address
    // (signaling and its TURN relay) is reachable from both.
    for (ns, other) in [(&hosts.a, 3), (&hosts.b, 2)] {
        nft_in(
            ns,
            &format!(
                "table inet no_direct {{\n chain out {{\n type filter hook output priority 0; policy accept;\n ip daddr {}.{other} drop\n }}\n}}\n",
                hosts.net
            ),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(
        format!("{}.1:0", hosts.net).parse().unwrap(),
        dir.path().join("server"),
    );
    config.turn_listen = Some(format!("{}.1:0", hosts.net).parse().unwrap());
    config.turn_ports = (42_000, 42_999);
    let server = start(config).await.unwrap();
    let url = server.ws_url();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    new_identity(&alice);
    let bob_id = new_identity(&bob);
    // No --stun or --turn: the relay comes from the signaling server.
    let answer = sotto_in(&hosts.b, &bob)
        .args(["answer", "--server", &url, "--input", "tone:660"])
        .args(["--wait", "60s", "--json", "--output", "null"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let caller = loop {
        let out = tokio::task::spawn_blocking({
            let (alice, url, bob_id, ns) =
                (alice.clone(), url.clone(), bob_id.clone(), hosts.a.clone());
            move || {
                sotto_in(&ns, &alice)
                    .args(["call", &bob_id, "--server", &url, "--output", "null"])
                    .args(["--input", "tone:440", "--duration", "4s", "--json"])
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        // The answerer listens once its signaling connection is up: try again until then.
        if out.status.success()
            || !String::from_utf8_lossy(&out.stderr).contains("could not be reached")
        {
            break out;
        }
        assert!(started.elapsed() < WAIT, "the answerer never listened");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let answer = tokio::task::spawn_blocking(move || answer.wait_with_output().unwrap())
        .await
        .unwrap();
    let (caller_summary, callee_summary) = (summary(&caller), summary(&answer));
    let what = format!(
        "caller {caller_summary}\n{}\ncallee {callee_summary}\n{}",
        String::from_utf8_lossy(&caller.stderr),
        String::from_utf8_lossy(&answer.stderr)
    );
    assert_eq!(caller_summary["connected"], true, "{what}");
    assert_eq!(
        caller_summary["end"]["detail"], "the call reached its duration",
        "{what}"
    );
    // Both ends say the media went through the relay, and it went.
    assert_eq!(caller_summary["media_path"], "relay", "{what}");
    assert_eq!(callee_summary["media_path"], "relay", "{what}");
    for side in [&caller_summary, &callee_summary] {
        let packets = side["received"]["packets"].as_u64().unwrap();
        assert!(packets >= 150, "{packets} packets: {what}");
    }
    server.shutdown().await.unwrap();
}
