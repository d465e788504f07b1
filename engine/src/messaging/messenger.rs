//! The messenger: drives [`Conversations`] over a signaling connection. It publishes and
//! replenishes key packages, drains the mailbox (processing each envelope, then
//! acknowledging it), sends application messages to every other member's mailbox, and
//! submits commits with `group_commit`, rebuilding a commit that lost the race on the new
//! epoch. The only I/O of encrypted messaging lives here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sotto_signaling::protocol::{Blob, ErrorCode, GroupCommit, IdentityKey};

use super::content::Body;
use super::conversations::{
    ConversationError, Conversations, GroupId, Outgoing, ReceiveError, Received,
};
use super::mls::{self, CommitOut};
use crate::files::{self, BlobClient, FileError, FileOffer, Transfer, UploadState};
use crate::store::StoreError;
use crate::{ClientConfig, ClientError, Event, Identity, SignalingClient};

/// One-time key packages kept in the directory.
const KEY_PACKAGE_STOCK: u32 = 20;
/// Replenish when fewer than this are left.
const KEY_PACKAGE_LOW: u32 = 5;
/// Attempts for a commit that keeps losing races.
const COMMIT_ATTEMPTS: usize = 5;
/// How long a losing committer waits for the winning commit to arrive.
const CATCH_UP: Duration = Duration::from_secs(10);

/// Publishes key packages for `core`'s identity on `client` when the directory holds few
/// (fewer than 5 one-time ones, or no last-resort one): every command that connects does
/// this, so that others can start a conversation with someone who has only ever run
/// `sotto check` or taken a call.
pub async fn replenish_key_packages(
    client: &SignalingClient,
    core: &Conversations,
) -> Result<(), MessengerError> {
    let (regular, last_resort) = client.key_package_count().await?;
    if regular >= KEY_PACKAGE_LOW && last_resort {
        return Ok(());
    }
    let missing = KEY_PACKAGE_STOCK.saturating_sub(regular) as usize;
    let (packages, last) = core.key_packages(missing)?;
    client.publish_key_packages(packages, Some(last)).await?;
    Ok(())
}

/// A messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MessengerError {
    /// The person has no key package in the server's directory: they have never
    /// connected with a Sotto client (key packages are published on an identity's first
    /// connection), or their packages ran out while they were away.
    #[error(
        "{0} has no key package on this server yet: they have to connect once (any sotto command that connects, e.g. `sotto check --server URL`) before a conversation with them can start"
    )]
    NoKeyPackage(IdentityKey),
    /// Signaling failed or refused.
    #[error(transparent)]
    Signaling(#[from] ClientError),
    /// The conversation layer refused.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A commit kept losing races.
    #[error("the group kept changing under this commit ({0} attempts); try again")]
    Contended(usize),
    /// The winning commit did not arrive in time.
    #[error("another member's change to the group has not arrived; try again")]
    CatchUpTimeout,
    /// A file transfer failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The saved state of an interrupted upload could not be used.
    #[error("upload state {path}: {why}")]
    UploadState {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

impl From<mls::MlsError> for MessengerError {
    fn from(e: mls::MlsError) -> Self {
        MessengerError::Conversation(e.into())
    }
}

impl From<rusqlite::Error> for MessengerError {
    fn from(e: rusqlite::Error) -> Self {
        MessengerError::Conversation(e.into())
    }
}

/// One processed envelope: what it did, or why it was refused.
pub type Delivery = Result<Received, ReceiveError>;

/// Conversations connected to a signaling server.
pub struct Messenger {
    client: SignalingClient,
    core: Conversations,
    /// Envelopes announced at connect that have not arrived yet.
    backlog: u64,
    /// The blob store beside the signaling server.
    blobs: BlobClient,
    /// Where interrupted uploads keep their state.
    uploads: PathBuf,
}

impl Messenger {
    /// Open the local store in `data_dir`, connect as `identity`, and make sure the
    /// directory holds key packages for others to start conversations with.
    pub async fn connect(
        config: ClientConfig,
        identity: Arc<Identity>,
        data_dir: &Path,
    ) -> Result<Self, MessengerError> {
        let core = Conversations::open(data_dir, identity.clone())?;
        let blobs = BlobClient::for_signaling_url(&config.url)?;
        let client = SignalingClient::connect(config, identity).await?;
        let backlog = client.mailbox_depth_at_connect();
        let mut messenger = Messenger {
            client,
            core,
            backlog,
            blobs,
            uploads: data_dir.join("uploads"),
        };
        messenger.replenish_key_packages().await?;
        Ok(messenger)
    }

    /// The conversation core (history, contacts, members).
    pub fn core(&self) -> &Conversations {
        &self.core
    }

    /// The signaling connection.
    pub fn client(&self) -> &SignalingClient {
        &self.client
    }

    /// Publish key packages when the directory runs low.
    pub async fn replenish_key_packages(&mut self) -> Result<(), MessengerError> {
        replenish_key_packages(&self.client, &self.core).await
    }

    /// One key package of `who` from the directory, or [`MessengerError::NoKeyPackage`].
    async fn fetch_key_package(&self, who: IdentityKey) -> Result<Vec<u8>, MessengerError> {
        match self.client.fetch_key_package(who).await {
            Ok((package, _last_resort)) => Ok(package),
            Err(ClientError::Server {
                code: ErrorCode::NoKeyPackage,
                ..
            }) => Err(MessengerError::NoKeyPackage(who)),
            Err(err) => Err(err.into()),
        }
    }

    /// Process everything waiting in the mailbox: the backlog announced at connect, then
    /// whatever arrives until nothing has for `quiet`.
    pub async fn sync(&mut self, quiet: Duration) -> Result<Vec<Delivery>, MessengerError> {
        let mut out = Vec::new();
        loop {
            let wait = if self.backlog > 0 { CATCH_UP } else { quiet };
            match self.next_within(wait).await? {
                Some(delivery) => out.push(delivery),
                None => return Ok(out),
            }
        }
    }

    /// Wait up to `limit` for the next envelope and process it. `None`: nothing came.
    pub async fn next_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<Delivery>, MessengerError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.client.next_event_within(left).await {
                None => return Ok(None),
                Some(Event::Envelope {
                    message_id,
                    envelope,
                }) => {
                    self.backlog = self.backlog.saturating_sub(1);
                    let delivery = self.core.receive(&envelope);
                    // Acknowledge even a refused envelope: delivering it again would
                    // not make it valid.
                    self.client.mailbox_ack(message_id).await?;
                    return Ok(Some(delivery));
                }
                Some(_) => continue,
            }
        }
    }

    /// Send `body` to every other member of a conversation.
    pub async fn send(&mut self, group: &GroupId, body: Body) -> Result<Outgoing, MessengerError> {
        let out = self.core.send(group, body)?;
        for to in &out.to {
            self.client.mailbox_send(*to, out.bytes.clone()).await?;
        }
        Ok(out)
    }

    /// Encrypt and upload the file at `path`, then send its offer to a conversation. An
    /// upload interrupted before (a crash, a lost connection) resumes where it stopped:
    /// its state is kept under the data dir until the offer is sent.
    pub async fn send_file(
        &mut self,
        group: &GroupId,
        path: &Path,
        progress: impl FnMut(&Transfer),
    ) -> Result<Outgoing, MessengerError> {
        let state_path = self.upload_state_path(path)?;
        let mut state = match read_state(&state_path)? {
            Some(state) => state,
            None => {
                let state = files::create_upload(&self.client, path, None).await?;
                write_state(&state_path, &state)?;
                state
            }
        };
        let offer = files::upload(&self.blobs, &mut state, progress).await?;
        let offer_json = serde_json::to_value(&offer).map_err(|e| MessengerError::UploadState {
            path: state_path.clone(),
            why: e.to_string(),
        })?;
        let out = self.send(group, Body::File { offer: offer_json }).await?;
        let _ = std::fs::remove_file(&state_path);
        Ok(out)
    }

    /// Download and decrypt a file offered in a conversation into `dir` (resuming a
    /// partial download there).
    pub async fn fetch_file(
        &self,
        offer: &FileOffer,
        dir: &Path,
        progress: impl FnMut(&Transfer),
    ) -> Result<PathBuf, MessengerError> {
        Ok(files::fetch(&self.blobs, offer, dir, progress).await?)
    }

    fn upload_state_path(&self, file: &Path) -> Result<PathBuf, MessengerError> {
        use sha2::{Digest as _, Sha256};
        let canonical = std::fs::canonicalize(file).map_err(|e| FileError::Io {
            path: file.to_owned(),
            source: e,
        })?;
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.uploads.join(format!("{name}.json")))
    }

    /// The direct conversation with `peer`, started if there is none yet.
    pub async fn direct(&mut self, peer: &IdentityKey) -> Result<GroupId, MessengerError> {
        if let Some(group) = self.core.direct_with(peer)? {
            return Ok(group);
        }
        let package = self.fetch_key_package(*peer).await?;
        let out = self.core.start_direct(peer, &package)?;
        // A new group: the server has not seen it, so it cannot lose a race.
        self.submit_once(&out).await?;
        Ok(GroupId(out.group_id))
    }

    /// Create a room with these members (their key packages come from the directory).
    pub async fn create_room(
        &mut self,
        title: Option<&str>,
        members: &[IdentityKey],
    ) -> Result<GroupId, MessengerError> {
        let group = self.core.create_room(title)?;
        if !members.is_empty() {
            self.add(&group, members).await?;
        }
        if let Some(title) = title {
            self.send(
                &group,
                Body::Title {
                    title: title.to_owned(),
                },
            )
            .await?;
        }
        Ok(group)
    }

    /// Add members to a room.
    pub async fn add(
        &mut self,
        group: &GroupId,
        who: &[IdentityKey],
    ) -> Result<(), MessengerError> {
        let mut packages = Vec::with_capacity(who.len());
        for member in who {
            packages.push((*member, self.fetch_key_package(*member).await?));
        }
        self.commit(group, |core| core.add(group, &packages)).await
    }

    /// Remove members from a room.
    pub async fn remove(
        &mut self,
        group: &GroupId,
        who: &[IdentityKey],
    ) -> Result<(), MessengerError> {
        self.commit(group, |core| core.remove(group, who)).await
    }

    /// Refresh this identity's keys in a conversation with an update commit.
    pub async fn update(&mut self, group: &GroupId) -> Result<(), MessengerError> {
        self.commit(group, |core| core.update(group)).await
    }

    /// Refresh this identity's keys in every conversation where it has not committed for
    /// `max_age` (see [`Conversations::stale`]); returns how many it refreshed.
    pub async fn refresh_keys(&mut self, max_age: Duration) -> Result<usize, MessengerError> {
        let stale = self
            .core
            .stale(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX))?;
        for group in &stale {
            self.update(group).await?;
        }
        Ok(stale.len())
    }

    /// Build a commit, submit it, and on `stale_epoch` catch up and rebuild.
    async fn commit(
        &mut self,
        group: &GroupId,
        build: impl Fn(&Conversations) -> Result<CommitOut, ConversationError>,
    ) -> Result<(), MessengerError> {
        for _ in 0..COMMIT_ATTEMPTS {
            let out = build(&self.core)?;
            match self.submit_once(&out).await {
                Ok(()) => return Ok(()),
                Err(MessengerError::Signaling(e)) if e.code() == Some(ErrorCode::StaleEpoch) => {
                    self.core.commit_refused(&out)?;
                    self.catch_up(group, out.epoch).await?;
                }
                Err(e) => {
                    self.core.commit_refused(&out)?;
                    return Err(e);
                }
            }
        }
        Err(MessengerError::Contended(COMMIT_ATTEMPTS))
    }

    async fn submit_once(&mut self, out: &CommitOut) -> Result<(), MessengerError> {
        let commit = GroupCommit {
            group: Blob(out.group_id.clone()),
            epoch: out.epoch,
            members: out.members.clone(),
            commit: Blob(out.commit.clone()),
            to: out.to.clone(),
            welcome: out.welcome.clone().map(Blob),
            welcome_to: out.welcome_to.clone(),
        };
        self.client.group_commit(commit).await?;
        self.core.commit_accepted(out)?;
        Ok(())
    }

    /// Process the mailbox until the group has moved past `epoch`.
    async fn catch_up(&mut self, group: &GroupId, epoch: u64) -> Result<(), MessengerError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while mls::epoch(self.core.conn(), &group.0)? <= epoch {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.next_within(left).await?.is_none() {
                return Err(MessengerError::CatchUpTimeout);
            }
        }
        Ok(())
    }

    /// Close the connection.
    pub async fn close(self) {
        self.client.close().await;
    }
}

/// An interrupted upload's saved state, if there is one.
fn read_state(path: &Path) -> Result<Option<UploadState>, MessengerError> {
    let bad = |why: String| MessengerError::UploadState {
        path: path.to_owned(),
        why,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Save an upload's state (it holds the file key: mode 0600, like the identity).
fn write_state(path: &Path, state: &UploadState) -> Result<(), MessengerError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let bad = |why: String| MessengerError::UploadState {
        path: path.to_owned(),
        why,
    };
    if let Some(dir) = path.parent() {
        crate::data_dir::create_private_dir(dir).map_err(|e| bad(e.to_string()))?;
    }
    let bytes = serde_json::to_vec(state).map_err(|e| bad(e.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| bad(e.to_string()))
}
