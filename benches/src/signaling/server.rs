//! The server under test: the real `sotto-signaling` binary as a child process (pinned to
//! one CPU with `taskset`), its address, its memory and CPU time from `/proc`, and its
//! Prometheus `/metrics`. Owns the child's lifetime (SIGTERM at the end, SIGKILL if it
//! hangs or the bench fails) and its temporary data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::procfs::{self, ProcStatus};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Path of the `sotto-signaling` binary.
    pub bin: PathBuf,
    /// CPU list for `taskset -c` (e.g. `"0"`); `None` runs it unpinned.
    pub cpu: Option<String>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--rate-per-sec` (per connection).
    pub rate_per_sec: u32,
    /// `--rate-burst` (per connection).
    pub rate_burst: u32,
    /// `--ws-buffer-bytes`, if not the server's default.
    pub ws_buffer_bytes: Option<usize>,
    /// More arguments, passed as they are.
    pub extra_args: Vec<String>,
}

impl ServerSpec {
    /// The arguments after the binary (without the per-run `--data-dir`).
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--max-connections".to_owned(),
            self.max_connections.to_string(),
            "--rate-per-sec".to_owned(),
            self.rate_per_sec.to_string(),
            "--rate-burst".to_owned(),
            self.rate_burst.to_string(),
        ];
        if let Some(bytes) = self.ws_buffer_bytes {
            args.push("--ws-buffer-bytes".to_owned());
            args.push(bytes.to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The command line, for reports (`<tmp>` stands for the data directory).
    pub fn command_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cpu) = &self.cpu {
            parts.extend(["taskset".to_owned(), "-c".to_owned(), cpu.clone()]);
        }
        parts.push(self.bin.display().to_string());
        parts.extend(self.args());
        parts.extend(["--data-dir".to_owned(), "<tmp>".to_owned()]);
        parts.join(" ")
    }
}

/// A running `sotto-signaling` child process.
pub struct ServerProcess {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// Kept open so the server never writes to a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    dir: TempDir,
}

impl ServerProcess {
    /// Start the server and wait until it prints its address.
    pub async fn start(spec: &ServerSpec) -> anyhow::Result<ServerProcess> {
        if !spec.bin.is_file() {
            bail!(
                "no server binary at {} (build it: cargo build --release -p sotto-signaling)",
                spec.bin.display()
            );
        }
        let dir = TempDir::new("sotto-bench-signaling")?;
        let log = std::fs::File::create(dir.path().join("server.log"))
            .context("creating the server log")?;
        let mut command = match &spec.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(&spec.bin);
                c
            }
            None => Command::new(&spec.bin),
        };
        command
            .args(spec.args())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.command_line()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => parse_listening(&line)
                .with_context(|| format!("unexpected first line from the server: {line:?}"))?,
            Ok(Ok(None)) => bail!(
                "the server exited before listening; its log:\n{}",
                log_tail(dir.path())
            ),
            Ok(Err(e)) => return Err(e).context("reading the server's stdout"),
            Err(_) => bail!(
                "the server did not print its address within 30 s; its log:\n{}",
                log_tail(dir.path())
            ),
        };
        Ok(ServerProcess {
            child,
            pid,
            addr,
            _stdout: lines,
            dir,
        })
    }

    /// The process id (`taskset` execs the server, so this is the server itself).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Memory and threads now.
    pub fn status(&self) -> anyhow::Result<ProcStatus> {
        procfs::status(&self.pid.to_string())
    }

    /// CPU time used so far.
    pub fn cpu_time(&self, ticks_per_sec: u64) -> anyhow::Result<Duration> {
        procfs::cpu_time(&self.pid.to_string(), ticks_per_sec)
    }

    /// The CPUs the server may run on.
    pub fn cpus_allowed(&self) -> anyhow::Result<String> {
        procfs::cpus_allowed(&self.pid.to_string())
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
            let request = format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.addr
            );
            stream.write_all(request.as_bytes()).await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .context("GET /metrics timed out")?
            .context("GET /metrics")?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("GET /metrics: no header end")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET /metrics: {}", head.lines().next().unwrap_or_default());
        }
        if head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
        {
            bail!("GET /metrics: chunked responses are not supported here");
        }
        Ok(Metrics(body.to_owned()))
    }

    /// Stop with SIGTERM (graceful: every connection gets `shutting_down`), SIGKILL after
    /// `grace`. Returns how long the graceful stop took, if it finished in time.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<Option<Duration>> {
        let started = std::time::Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("running kill -TERM")?;
        if sent.success()
            && let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await
        {
            let status = status.context("waiting for the server")?;
            if !status.success() {
                eprintln!(
                    "warning: the server exited with {status}; its log:\n{}",
                    log_tail(self.dir.path())
                );
            }
            return Ok(Some(started.elapsed()));
        }
        self.child.start_kill().context("killing the server")?;
        self.child.wait().await.context("waiting for the server")?;
        Ok(None)
    }
}

/// `/metrics` exposition text.
pub struct Metrics(String);

impl Metrics {
    /// The value of an unlabelled sample, e.g. `sotto_signaling_authenticated_connections`.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next()? == name).then_some(())?;
            parts.next()?.parse().ok()
        })
    }

    /// The sum over every label set of `name` (0 when absent).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).fold(0.0, |sum, (_, v)| sum + v)
    }

    /// `(labels, value)` of each sample of `name`; labels as written, e.g.
    /// `code="peer_busy"`, empty for an unlabelled sample.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(labelled) = rest.strip_prefix('{') {
                let (labels, value) = labelled.split_once('}')?;
                (labels, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None;
            };
            Some((labels, value.split_whitespace().next()?.parse().ok()?))
        })
    }
}

/// The address in `listening on ws://127.0.0.1:PORT/v1/ws`.
fn parse_listening(line: &str) -> anyhow::Result<SocketAddr> {
    let url = line
        .trim()
        .strip_prefix("listening on ws://")
        .context("expected 'listening on ws://ADDR/v1/ws'")?;
    let addr = url.strip_suffix("/v1/ws").unwrap_or(url);
    addr.parse()
        .with_context(|| format!("not a socket address: {addr:?}"))
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_listening_line() {
        let addr = parse_listening("listening on ws://127.0.0.1:41234/v1/ws\n").unwrap();
        assert_eq!(
            addr,
            "127.0.0.1:41234".parse::<std::net::SocketAddr>().unwrap()
        );
        assert!(parse_listening("ready").is_err());
    }

    #[test]
    fn reads_metric_samples() {
        let m = Metrics(
            "# HELP x\nsotto_signaling_authenticated_connections 10000\n\
             sotto_signaling_authenticated_connections_total 3\n\
             sotto_signaling_errors_total{code=\"peer_busy\"} 2\n\
             sotto_signaling_errors_total{code=\"rate_limited\"} 5\n# EOF\n"
                .to_owned(),
        );
        assert_eq!(
            m.value("sotto_signaling_authenticated_connections"),
            Some(10000.0)
        );
        assert_eq!(m.value("sotto_signaling_connections"), None);
        assert_eq!(m.sum("sotto_signaling_errors_total"), 7.0);
        let codes: Vec<&str> = m
            .samples("sotto_signaling_errors_total")
            .map(|s| s.0)
            .collect();
        assert_eq!(codes, ["code=\"peer_busy\"", "code=\"rate_limited\""]);
    }

    #[test]
    fn command_line_shows_the_pinning() {
        let spec = ServerSpec {
            bin: "target/release/sotto-signaling".into(),
            cpu: Some("0".into()),
            max_connections: 20000,
            rate_per_sec: 50,
            rate_burst: 100,
            ws_buffer_bytes: None,
            extra_args: vec![],
        };
        assert!(spec.command_line().starts_with(
            "taskset -c 0 target/release/sotto-signaling --listen 127.0.0.1:0 --max-connections 20000"
        ));
    }
}
