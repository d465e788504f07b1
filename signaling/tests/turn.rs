//! The TURN relay behind `--turn-listen`: credentials from `turn_credentials` allocate a
//! relayed address; garbage, wrong, expired and foreign credentials and floods of
//! unauthenticated requests are refused or dropped, counted in `/metrics`, and the relay
//! keeps serving.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytecodec::{DecodeExt as _, EncodeExt as _};
use common::{Client, TestServer, http_get, key, metric};
use medea_turn::attr::{
    Attribute, ErrorCode, MessageIntegrity, Nonce, Realm, RequestedTransport, Username,
    XorRelayAddress,
};
use sotto_signaling::protocol::{ClientMessage, ServerMessage};
use stun_codec::rfc5766::methods::ALLOCATE;
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};
use tokio::net::UdpSocket;

/// Failure guard for waits, never a speed assertion.
const WAIT: Duration = Duration::from_secs(2);

async fn relay_server() -> TestServer {
    TestServer::start_with(|config| {
        config.turn_listen = Some("127.0.0.1:0".parse().unwrap());
        config.turn_ports = (43_000, 43_999);
    })
    .await
}

/// The relay's UDP address and a user name and password from `turn_credentials`.
async fn credentials(server: &TestServer) -> (SocketAddr, String, String) {
    let mut client = Client::login(&server.url(), &key(1), None).await;
    let reply = client.request(ClientMessage::TurnCredentials {}).await;
    let ServerMessage::TurnCredentials { servers, expires } = reply.message else {
        panic!("not credentials: {reply:?}");
    };
    assert!(expires > 0);
    let server = servers.into_iter().next().expect("one relay");
    let udp = server
        .urls
        .iter()
        .find_map(|url| url.strip_prefix("turn:")?.strip_suffix("?transport=udp"))
        .expect("a UDP URL");
    assert!(
        server
            .urls
            .iter()
            .any(|url| url.ends_with("?transport=tcp"))
    );
    (udp.parse().unwrap(), server.username, server.credential)
}

fn allocate() -> Message<Attribute> {
    let mut message = Message::new(
        MessageClass::Request,
        ALLOCATE,
        TransactionId::new(rand::random()),
    );
    message.add_attribute(RequestedTransport::new(17));
    message
}

/// An allocation request signed with `username` and `password` under `nonce`.
fn signed(username: &str, password: &str, nonce: &str) -> Message<Attribute> {
    let mut message = allocate();
    let username = Username::new(username.to_owned()).unwrap();
    let realm = Realm::new("sotto".to_owned()).unwrap();
    message.add_attribute(username.clone());
    message.add_attribute(realm.clone());
    message.add_attribute(Nonce::new(nonce.to_owned()).unwrap());
    let integrity =
        MessageIntegrity::new_long_term_credential(&message, &username, &realm, password).unwrap();
    message.add_attribute(integrity);
    message
}

async fn exchange(
    socket: &UdpSocket,
    relay: SocketAddr,
    message: Message<Attribute>,
) -> Message<Attribute> {
    let bytes = MessageEncoder::new().encode_into_bytes(message).unwrap();
    socket.send_to(&bytes, relay).await.unwrap();
    let mut buf = vec![0; 1500];
    let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("the relay answers")
        .unwrap();
    MessageDecoder::<Attribute>::new()
        .decode_from_bytes(&buf[..n])
        .unwrap()
        .unwrap()
}

/// The same over TCP (STUN messages back to back on the stream, RFC 8656 §3.1).
async fn exchange_tcp(
    stream: &mut tokio::net::TcpStream,
    message: Message<Attribute>,
) -> Message<Attribute> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let bytes = MessageEncoder::new().encode_into_bytes(message).unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut header = [0; 20];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("the relay answers")
        .unwrap();
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut whole = header.to_vec();
    whole.resize(20 + length, 0);
    stream.read_exact(&mut whole[20..]).await.unwrap();
    MessageDecoder::<Attribute>::new()
        .decode_from_bytes(&whole)
        .unwrap()
        .unwrap()
}

fn error_code(message: &Message<Attribute>) -> Option<u16> {
    message.get_attribute::<ErrorCode>().map(ErrorCode::code)
}

/// The nonce from the relay's challenge to an unsigned request.
async fn challenge(socket: &UdpSocket, relay: SocketAddr) -> String {
    let answer = exchange(socket, relay, allocate()).await;
    assert_eq!(answer.class(), MessageClass::ErrorResponse);
    assert_eq!(error_code(&answer), Some(401));
    answer.get_attribute::<Nonce>().unwrap().value().to_owned()
}

async fn turn_metric(server: &TestServer, name: &str, reason: &str) -> f64 {
    let (_, text) = http_get(server.addr(), "/metrics").await;
    metric(
        &text,
        &format!("sotto_signaling_{name}_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn minted_credentials_allocate_and_bad_ones_are_refused_and_counted() {
    let server = relay_server().await;
    let (relay, username, password) = credentials(&server).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // The right credentials: a relayed address on the relay's host.
    let nonce = challenge(&socket, relay).await;
    let answer = exchange(&socket, relay, signed(&username, &password, &nonce)).await;
    assert_eq!(answer.class(), MessageClass::SuccessResponse, "{answer:?}");
    let relayed = answer.get_attribute::<XorRelayAddress>().unwrap().address();
    assert_eq!(relayed.ip(), relay.ip());
    assert!((43_000..=43_999).contains(&relayed.port()));

    // Over TCP too (for clients behind firewalls that pass no UDP).
    let mut stream = tokio::net::TcpStream::connect(relay).await.unwrap();
    let challenged = exchange_tcp(&mut stream, allocate()).await;
    let nonce = challenged
        .get_attribute::<Nonce>()
        .unwrap()
        .value()
        .to_owned();
    let answer = exchange_tcp(&mut stream, signed(&username, &password, &nonce)).await;
    assert_eq!(answer.class(), MessageClass::SuccessResponse, "{answer:?}");

    // A wrong password, an expired user name and one that is not ours: each refused.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let nonce = challenge(&other, relay).await;
    let wrong = exchange(&other, relay, signed(&username, "not the password", &nonce)).await;
    assert_eq!(wrong.class(), MessageClass::ErrorResponse);
    let tag = username.split_once(':').unwrap().1;
    let expired = exchange(
        &other,
        relay,
        signed(&format!("1000:{tag}"), &password, &nonce),
    )
    .await;
    assert_eq!(expired.class(), MessageClass::ErrorResponse);
    let foreign = exchange(&other, relay, signed("alice", &password, &nonce)).await;
    assert_eq!(foreign.class(), MessageClass::ErrorResponse);
    assert_eq!(turn_metric(&server, "turn_refused", "expired").await, 1.0);
    assert_eq!(turn_metric(&server, "turn_refused", "bad_user").await, 1.0);
    let (_, text) = http_get(server.addr(), "/metrics").await;
    let refused_responses: f64 = text
        .lines()
        .filter(|line| line.starts_with("sotto_signaling_turn_refused_total{reason=\"error_"))
        .filter_map(|line| line.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(refused_responses >= 3.0, "{text}");
    assert_eq!(
        metric(&text, "sotto_signaling_turn_credentials_minted_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn garbage_and_floods_are_dropped_and_counted_and_the_relay_keeps_serving() {
    let server = relay_server().await;
    let (relay, username, password) = credentials(&server).await;
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Garbage: random bytes, truncated STUN, a channel-data header with nothing after.
    let mut garbage: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            (0..(i * 7 % 300 + 1))
                .map(|_| rand::random::<u8>())
                .collect()
        })
        .collect();
    let whole = MessageEncoder::new().encode_into_bytes(allocate()).unwrap();
    garbage.push(whole[..whole.len() - 3].to_vec());
    garbage.push(vec![0x40, 0x00, 0x00, 0xff]);
    for datagram in &garbage {
        attacker.send_to(datagram, relay).await.unwrap();
    }
    // A flood of unsigned allocation requests from one source: a burst is answered (each
    // with a nonce), the rest dropped.
    let flood = 500;
    for _ in 0..flood {
        let bytes = MessageEncoder::new().encode_into_bytes(allocate()).unwrap();
        attacker.send_to(&bytes, relay).await.unwrap();
    }
    let mut answered = 0;
    let mut buf = vec![0; 1500];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), attacker.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    assert!(answered < flood / 5, "{answered} of {flood} answered");
    let malformed = turn_metric(&server, "turn_dropped", "malformed").await;
    assert!(malformed >= 45.0, "{malformed} malformed counted");
    // (The kernel may drop some of the flood itself when the socket's buffer is full.)
    let rate = turn_metric(&server, "turn_dropped", "rate").await;
    assert!(
        rate >= f64::from(flood / 2),
        "{rate} dropped for rate, {answered} answered"
    );

    // After the source's allowance refills, a real client from it allocates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let nonce = challenge(&client, relay).await;
    let answer = exchange(&client, relay, signed(&username, &password, &nonce)).await;
    assert_eq!(answer.class(), MessageClass::SuccessResponse, "{answer:?}");
}
