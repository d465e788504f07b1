//! The handle applications hold: typed requests in, events out. Requests go to the driver
//! task over a channel and wait for their reply with a timeout.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{
    Blob, ClientMessage, GroupCommit, Hangup, HangupReason, IdentityKey, InviteToken, Participant,
    RoomId, ServerMessage,
};
use tokio::sync::{mpsc, oneshot};

use super::Authenticator;
use super::driver::{Command, Driver, open};
use super::{CallSignal, ClientConfig, ClientError, Event, RoomInvite};

/// The sending half: cheap to clone and share between tasks.
#[derive(Clone)]
pub struct SignalingSender {
    commands: mpsc::Sender<Command>,
    identity: IdentityKey,
    server_id: Arc<str>,
    request_timeout: Duration,
}

/// A connected, authenticated signaling client. Methods of [`SignalingSender`] are
/// available on it directly; [`SignalingClient::next_event`] yields what the server pushes.
pub struct SignalingClient {
    sender: SignalingSender,
    events: mpsc::UnboundedReceiver<Event>,
    mailbox_depth: u64,
}

impl std::ops::Deref for SignalingClient {
    type Target = SignalingSender;
    fn deref(&self) -> &SignalingSender {
        &self.sender
    }
}

impl SignalingClient {
    /// Connect and authenticate as `identity`; returns once the server said `welcome`.
    pub async fn connect(
        config: ClientConfig,
        identity: Arc<dyn Authenticator>,
    ) -> Result<Self, ClientError> {
        let session = open(&config, identity.as_ref()).await?;
        let (command_tx, command_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let sender = SignalingSender {
            commands: command_tx,
            identity: identity.public(),
            server_id: session.server_id.as_str().into(),
            request_timeout: config.request_timeout,
        };
        let mailbox_depth = session.mailbox_depth;
        tokio::spawn(Driver::new(config, identity, command_rx, event_tx).run(session));
        Ok(SignalingClient {
            sender,
            events: event_rx,
            mailbox_depth,
        })
    }

    /// Envelopes that were waiting when this client first connected.
    pub fn mailbox_depth_at_connect(&self) -> u64 {
        self.mailbox_depth
    }

    /// The next pushed event; `None` once the client is closed for good.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event within `limit`, else `None`.
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// A clonable sender for other tasks.
    pub fn sender(&self) -> SignalingSender {
        self.sender.clone()
    }

    /// Split into the sender and the event stream.
    pub fn split(self) -> (SignalingSender, mpsc::UnboundedReceiver<Event>) {
        (self.sender, self.events)
    }

    /// Close the connection; pending requests fail with `Disconnected`.
    pub async fn close(self) {
        let _ = self.sender.commands.send(Command::Close).await;
    }
}

impl SignalingSender {
    /// Drops the connection and opens a new one at once (what happens anyway, with
    /// backoff, when it drops). For a host whose network changed: the connection's local
    /// address may be gone, and a dead TCP connection would only be noticed once the
    /// server had been silent for longer than its idle timeout. Requests in flight fail
    /// with `Disconnected`.
    pub async fn reconnect(&self) {
        let _ = self.commands.send(Command::Reconnect).await;
    }

    /// This client's identity.
    pub fn identity(&self) -> IdentityKey {
        self.identity
    }

    /// The server's id (pin it to detect a different server next time).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    async fn request(&self, message: ClientMessage) -> Result<ServerMessage, ClientError> {
        let (reply, wait) = oneshot::channel();
        self.commands
            .send(Command::Request { message, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(self.request_timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }

    /// Create a room (this client joins it).
    pub async fn create_room(
        &self,
        max_participants: Option<u32>,
    ) -> Result<RoomInvite, ClientError> {
        self.create_room_with(max_participants, false).await
    }

    /// Create a room whose media an SFU hosts (a group call); `no_sfu` when the server has
    /// none registered.
    pub async fn create_group_room(
        &self,
        max_participants: Option<u32>,
    ) -> Result<RoomInvite, ClientError> {
        self.create_room_with(max_participants, true).await
    }

    async fn create_room_with(
        &self,
        max_participants: Option<u32>,
        sfu: bool,
    ) -> Result<RoomInvite, ClientError> {
        match self
            .request(ClientMessage::RoomCreate {
                max_participants,
                sfu,
            })
            .await?
        {
            ServerMessage::RoomCreated {
                room_id,
                invite_token,
                max_participants,
                sfu,
            } => Ok(RoomInvite {
                room_id,
                invite_token,
                max_participants,
                sfu,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Join a room; returns everyone in it, this client included.
    pub async fn join_room(
        &self,
        room_id: &RoomId,
        invite_token: &InviteToken,
    ) -> Result<Vec<Participant>, ClientError> {
        let message = ClientMessage::RoomJoin {
            room_id: room_id.clone(),
            invite_token: invite_token.clone(),
        };
        match self.request(message).await? {
            ServerMessage::RoomJoined { participants, .. } => Ok(participants),
            other => Err(unexpected(other)),
        }
    }

    /// Join a room and learn its SFU too (group rooms name one).
    pub async fn join_group_room(
        &self,
        room_id: &RoomId,
        invite_token: &InviteToken,
    ) -> Result<(Vec<Participant>, Option<IdentityKey>), ClientError> {
        let message = ClientMessage::RoomJoin {
            room_id: room_id.clone(),
            invite_token: invite_token.clone(),
        };
        match self.request(message).await? {
            ServerMessage::RoomJoined {
                participants, sfu, ..
            } => Ok((participants, sfu)),
            other => Err(unexpected(other)),
        }
    }

    /// Leave a room.
    pub async fn leave_room(&self, room_id: &RoomId) -> Result<(), ClientError> {
        let message = ClientMessage::RoomLeave {
            room_id: room_id.clone(),
        };
        match self.request(message).await? {
            ServerMessage::RoomLeft { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Send call setup to `to`; returns once it is queued on their connection.
    pub async fn send_call_signal(
        &self,
        to: IdentityKey,
        signal: CallSignal,
    ) -> Result<(), ClientError> {
        match self.request(signal.into_message(to)).await? {
            ServerMessage::Relayed {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Hang up a call with `to`.
    pub async fn hang_up(
        &self,
        to: IdentityKey,
        call_id: &str,
        reason: HangupReason,
    ) -> Result<(), ClientError> {
        let hangup = Hangup {
            call_id: call_id.to_owned(),
            reason,
        };
        self.send_call_signal(to, CallSignal::Hangup(hangup)).await
    }

    /// Publish key packages; returns the stock after publishing.
    pub async fn publish_key_packages(
        &self,
        key_packages: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<(u32, bool), ClientError> {
        let message = ClientMessage::KeyPackagesPublish {
            key_packages: key_packages.into_iter().map(Blob).collect(),
            last_resort: last_resort.map(Blob),
        };
        stock(self.request(message).await?)
    }

    /// This identity's remaining key packages: (one-time count, has last resort).
    pub async fn key_package_count(&self) -> Result<(u32, bool), ClientError> {
        stock(self.request(ClientMessage::KeyPackageCount {}).await?)
    }

    /// Take one key package of `identity`: (bytes, is the last-resort one).
    pub async fn fetch_key_package(
        &self,
        identity: IdentityKey,
    ) -> Result<(Vec<u8>, bool), ClientError> {
        match self
            .request(ClientMessage::KeyPackageFetch { identity })
            .await?
        {
            ServerMessage::KeyPackage {
                key_package,
                last_resort,
                ..
            } => Ok((key_package.0, last_resort)),
            other => Err(unexpected(other)),
        }
    }

    /// Queue an opaque envelope for `to`; returns its message id once it is durable.
    pub async fn mailbox_send(
        &self,
        to: IdentityKey,
        envelope: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let message = ClientMessage::MailboxSend {
            to,
            envelope: Blob(envelope),
        };
        match self.request(message).await? {
            ServerMessage::MailboxAccepted { message_id } => Ok(message_id),
            other => Err(unexpected(other)),
        }
    }

    /// Submit an MLS commit for ordering; returns the group's new epoch. A commit built on
    /// an old epoch fails with the `stale_epoch` code: process the mailbox and rebuild.
    pub async fn group_commit(&self, commit: GroupCommit) -> Result<u64, ClientError> {
        match self.request(ClientMessage::GroupCommit(commit)).await? {
            ServerMessage::CommitAccepted { epoch } => Ok(epoch),
            other => Err(unexpected(other)),
        }
    }

    /// Acknowledge envelopes up to `up_to` (they are deleted); returns how many went.
    pub async fn mailbox_ack(&self, up_to: u64) -> Result<u64, ClientError> {
        match self.request(ClientMessage::MailboxAck { up_to }).await? {
            ServerMessage::MailboxAcked { removed, .. } => Ok(removed),
            other => Err(unexpected(other)),
        }
    }

    /// Open a blob of `size` ciphertext bytes in `chunks` chunks in the server's blob
    /// store; returns its id (the read capability) and the token that uploads its chunks.
    pub async fn blob_create(
        &self,
        size: u64,
        chunks: u32,
    ) -> Result<(crate::protocol::BlobId, crate::protocol::UploadToken), ClientError> {
        match self
            .request(ClientMessage::BlobCreate { size, chunks })
            .await?
        {
            ServerMessage::BlobCreated {
                blob_id,
                upload_token,
            } => Ok((blob_id, upload_token)),
            other => Err(unexpected(other)),
        }
    }

    /// Short-lived credentials for the server's TURN relay (none when it runs none).
    pub async fn turn_credentials(&self) -> Result<Vec<crate::protocol::IceServer>, ClientError> {
        match self.request(ClientMessage::TurnCredentials {}).await? {
            ServerMessage::TurnCredentials { servers, .. } => Ok(servers),
            other => Err(unexpected(other)),
        }
    }
}

fn stock(message: ServerMessage) -> Result<(u32, bool), ClientError> {
    match message {
        ServerMessage::KeyPackagesStored {
            regular,
            last_resort,
        } => Ok((regular, last_resort)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(message: ServerMessage) -> ClientError {
    ClientError::Protocol(format!("unexpected reply: {message:?}"))
}
