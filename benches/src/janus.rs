//! Janus 1.1 (Debian's `janus` package) as the SFU that `sotto-bench sfu-load --janus`
//! measures beside ours: a configuration folder written for the run, the process started
//! the way ours is (same namespace, same pinned CPU), and a client for its VideoRoom
//! plugin over the Janus HTTP API.
//!
//! Janus is set up as close to ours as it goes: ICE-lite (it answers connectivity checks
//! and sends none), its host candidate on the one address ours listens on, only the
//! VideoRoom plugin and the HTTP transport loaded, and by default one event loop for every
//! handle (`event_loops = 1`), so its media runs on one thread as our one worker does;
//! Janus's own default, a thread per handle (`--janus-loops 0`), runs 2,000 threads on the
//! one pinned core.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Where Debian installs Janus's plugins.
const LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";

/// Plugins and transports Janus would load that the bench does not use.
const UNUSED_PLUGINS: &str = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
    libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,\
    libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so";
const UNUSED_TRANSPORTS: &str = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,\
    libjanus_rabbitmq.so,libjanus_websockets.so";

/// The files of a Janus configuration folder: ICE-lite on `ip` (media ports from
/// `rtp_ports`), the HTTP API on `ip:http_port`, handles shared among `loops` event loops
/// (0: a thread per handle, Janus's default).
pub fn config_files(
    folder: &str,
    ip: IpAddr,
    http_port: u16,
    rtp_ports: (u16, u16),
    loops: u16,
) -> Vec<(&'static str, String)> {
    let loops = if loops == 0 {
        String::new()
    } else {
        format!("\n  event_loops = {loops}")
    };
    let general = format!(
        "general: {{\n  configs_folder = \"{folder}\"\n  plugins_folder = \"{LIB}/plugins\"\n  \
         transports_folder = \"{LIB}/transports\"\n  events_folder = \"{LIB}/events\"\n  \
         loggers_folder = \"{LIB}/loggers\"\n  debug_level = 3\n  session_timeout = 600{loops}\n}}\n\
         media: {{ rtp_port_range = \"{}-{}\" }}\n\
         nat: {{ nice_debug = false\n  ice_lite = true\n  ice_enforce_list = \"{ip}\" }}\n\
         plugins: {{ disable = \"{UNUSED_PLUGINS}\" }}\n\
         transports: {{ disable = \"{UNUSED_TRANSPORTS}\" }}\n\
         events: {{ broadcast = false }}\n",
        rtp_ports.0, rtp_ports.1
    );
    let http = format!(
        "general: {{ json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n  \
         port = {http_port}\n  ip = \"{ip}\"\n  https = false }}\nadmin: {{ admin_http = false }}\n"
    );
    vec![
        ("janus.jcfg", general),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.videoroom.jcfg", "general: { }\n".to_owned()),
    ]
}

/// This machine's first IPv4 address other than loopback: where Janus can listen when
/// the bench runs on one host (its ICE ignores `lo`).
pub fn own_address() -> anyhow::Result<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .context("running ip")?;
    // "2: eth0    inet 192.0.2.2/24 brd ...": the fourth field, without its prefix length.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .context("this machine has no IPv4 address but loopback, where Janus cannot gather ICE candidates; run with --veth")
}

/// One HTTP/1.0 request with a JSON body (or none): the response body of a 200.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: no body in the response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!("{method} {path}: HTTP {status}");
    }
    Ok(body.to_owned())
}

/// Events for each handle, by handle id.
type Waiters = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Value>>>>;

/// One Janus session, shared by every participant of the bench (each has a handle of its
/// own); one long poll delivers every handle's events.
pub struct Session {
    http: SocketAddr,
    id: u64,
    waiters: Waiters,
    poll: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poll.abort();
    }
}

/// A transaction id.
fn transaction() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// POSTs a Janus API request, filling in the transaction; the response, or Janus's error.
async fn request(http_addr: SocketAddr, path: &str, mut body: Value) -> anyhow::Result<Value> {
    body["transaction"] = json!(transaction());
    let text = http(http_addr, "POST", path, Some(&body.to_string())).await?;
    let response: Value = serde_json::from_str(&text).context("Janus's response")?;
    if response["janus"] == "error" {
        bail!("Janus: {}", response["error"]);
    }
    Ok(response)
}

impl Session {
    /// Creates a session on the Janus at `http_addr`, retrying while it starts.
    pub async fn create(http_addr: SocketAddr) -> anyhow::Result<Session> {
        let mut last = None;
        for _ in 0..100 {
            match request(http_addr, "/janus", json!({"janus": "create"})).await {
                Ok(response) => {
                    let id = response["data"]["id"]
                        .as_u64()
                        .context("no session id from Janus")?;
                    let waiters = Waiters::default();
                    let poll = tokio::spawn(long_poll(http_addr, id, waiters.clone()));
                    return Ok(Session {
                        http: http_addr,
                        id,
                        waiters,
                        poll,
                    });
                }
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("Janus did not answer")))
            .context("creating a Janus session")
    }

    /// A new handle on the VideoRoom plugin.
    pub async fn attach(&self) -> anyhow::Result<Handle> {
        let response = request(
            self.http,
            &format!("/janus/{}", self.id),
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await?;
        let id = response["data"]["id"]
            .as_u64()
            .context("no handle id from Janus")?;
        let (tx, events) = mpsc::unbounded_channel();
        self.waiters
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(id, tx);
        Ok(Handle {
            http: self.http,
            path: format!("/janus/{}/{id}", self.id),
            events,
        })
    }
}

/// Fetches the session's events until dropped, handing each to its handle.
async fn long_poll(http_addr: SocketAddr, session: u64, waiters: Waiters) {
    let path = format!("/janus/{session}?maxev=100");
    loop {
        let Ok(text) = http(http_addr, "GET", &path, None).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let events = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(events)) => events,
            Ok(event) => vec![event],
            Err(_) => continue,
        };
        let Ok(waiters) = waiters.lock() else { return };
        for event in events {
            if let Some(tx) = event["sender"].as_u64().and_then(|h| waiters.get(&h)) {
                let _ = tx.send(event);
            }
        }
    }
}

/// A VideoRoom handle.
pub struct Handle {
    http: SocketAddr,
    path: String,
    events: mpsc::UnboundedReceiver<Value>,
}

impl Handle {
    /// Sends a plugin message (with an SDP of `kind`, "offer" or "answer"): the plugin's
    /// reply, at once (synchronous requests) or as the handle's next plugin event: the
    /// SDP that came with it, if any.
    pub async fn message(
        &mut self,
        body: Value,
        jsep: Option<(&str, &str)>,
    ) -> anyhow::Result<Option<String>> {
        let mut message = json!({"janus": "message", "body": body});
        if let Some((kind, sdp)) = jsep {
            message["jsep"] = json!({"type": kind, "sdp": sdp});
        }
        let mut response = request(self.http, &self.path, message).await?;
        if response["janus"] == "ack" {
            response = loop {
                let event = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                    .await
                    .context("no reply from Janus's VideoRoom in 60 s")?
                    .context("Janus's event poll ended")?;
                if event["janus"] == "event" {
                    break event;
                }
            };
        }
        if let Some(error) = response["plugindata"]["data"].get("error") {
            bail!("Janus VideoRoom: {error}");
        }
        Ok(response["jsep"]["sdp"].as_str().map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_ice_lite_on_one_address_with_one_loop() {
        let files = config_files(
            "/tmp/x",
            "10.78.3.2".parse().unwrap(),
            8123,
            (30000, 40000),
            1,
        );
        let general = &files[0].1;
        assert!(general.contains("ice_lite = true"));
        assert!(general.contains("ice_enforce_list = \"10.78.3.2\""));
        assert!(general.contains("event_loops = 1"));
        assert!(general.contains("rtp_port_range = \"30000-40000\""));
        assert!(
            !general.contains("libjanus_videoroom"),
            "VideoRoom stays loaded"
        );
        assert!(files[1].1.contains("port = 8123"));
        let own_threads = config_files("/tmp/x", "10.0.0.1".parse().unwrap(), 1, (1, 2), 0);
        assert!(!own_threads[0].1.contains("event_loops"));
        assert!(!files[1].1.contains("libjanus_http"));
    }
}
