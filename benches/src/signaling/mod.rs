//! Signaling load benches: the real `sotto-signaling` binary as a child process pinned to
//! one CPU, driven over loopback by this process (pinned by the caller, see
//! `benches/signaling.sh`).
//!
//! * [`idle`]: how many idle authenticated connections one server process holds, and its
//!   resident memory per connection.
//! * [`relay`]: call-setup relay latency between two clients at a steady message rate,
//!   optionally while many idle connections are held.
//!
//! Nothing here asserts on speed; the binary prints figures for BENCHMARKS.md.

pub mod client;
pub mod idle;
pub mod procfs;
pub mod relay;
pub mod server;
pub mod stats;

use server::ServerProcess;

/// Which CPUs the server and the bench may run on (from `/proc/<pid>/status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pinning {
    /// The server's `Cpus_allowed_list`.
    pub server_cpus: String,
    /// This process's `Cpus_allowed_list`.
    pub bench_cpus: String,
}

impl Pinning {
    /// Read both.
    pub fn read(server: &ServerProcess) -> anyhow::Result<Pinning> {
        Ok(Pinning {
            server_cpus: server.cpus_allowed()?,
            bench_cpus: procfs::cpus_allowed("self")?,
        })
    }
}

impl std::fmt::Display for Pinning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "server on CPU {}, bench on CPU {}{}",
            self.server_cpus,
            self.bench_cpus,
            if self.server_cpus == self.bench_cpus {
                " (NOT separated: run the bench under taskset -c 1)"
            } else {
                ""
            }
        )
    }
}

/// KiB to MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
