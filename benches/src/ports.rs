//! Ports to hand to a process that binds them later (the callee behind the relay, the
//! SFU the load bench starts).
//!
//! Binding port 0 and releasing it races every other bind on the machine: the kernel hands
//! the same ephemeral port to the next socket that asks, and one of the engine's own
//! sockets took it once in CI ("no udp_sockets or tcp_listeners available"). The ports here
//! come from below the kernel's ephemeral range, where no port-0 bind can land.

use std::net::{TcpListener, UdpSocket};

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A datagram port.
    Udp,
    /// A stream port.
    Tcp,
}

/// The lowest port tried.
const LOWEST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port that is free now and that no port-0 bind will take: chosen at random
/// below the ephemeral range and checked by binding it (then released).
pub fn unused_port(proto: Proto) -> std::io::Result<u16> {
    let high = ephemeral_start().max(LOWEST + 1_000);
    for _ in 0..200 {
        let port = rand::random_range(LOWEST..high);
        let free = match proto {
            Proto::Udp => UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            Proto::Tcp => TcpListener::bind(("127.0.0.1", port)).is_ok(),
        };
        if free {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free {proto:?} port in {LOWEST}..{high} after 200 tries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_below_the_ephemeral_range_and_bindable() {
        let port = unused_port(Proto::Udp).expect("a free port");
        assert!(port >= LOWEST && port < ephemeral_start().max(LOWEST + 1_000));
        UdpSocket::bind(("127.0.0.1", port)).expect("still free");
        let port = unused_port(Proto::Tcp).expect("a free port");
        TcpListener::bind(("127.0.0.1", port)).expect("still free");
    }
}
