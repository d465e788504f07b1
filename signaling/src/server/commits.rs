//! `group_commit`: checks the request's shape, then lets the store order the commit
//! against the group's epoch and queue its envelopes atomically (see `store::groups`).
//! Wakes the recipients that are online. Never reads the commit or the welcome.

use super::connection::{Conn, Flow};
use super::current_hour;
use super::store::{CommitRefused, Delivery};
use crate::protocol::{ErrorCode, GroupCommit, IdentityKey, ServerMessage};

/// Longest group id accepted (MLS group ids are random; Sotto uses 16 bytes).
pub(crate) const MAX_GROUP_ID_BYTES: usize = 64;
/// Most members a group may declare. The frame size limit usually binds first: a
/// welcome carries the whole ratchet tree.
pub(crate) const MAX_GROUP_MEMBERS: usize = 1000;

type Reply = Result<ServerMessage, (ErrorCode, String)>;

impl Conn {
    /// Handle `group_commit` from `me`.
    pub(crate) async fn group_commit(
        &self,
        me: IdentityKey,
        commit: GroupCommit,
    ) -> Result<Reply, Flow> {
        if let Err(why) = check_shape(&me, &commit) {
            return Ok(Err((ErrorCode::InvalidMessage, why.into())));
        }
        let cap = self.shared.config.mailbox_max_envelopes;
        let hour = current_hour();
        let GroupCommit {
            group,
            epoch,
            members,
            commit,
            to,
            welcome,
            welcome_to,
        } = commit;
        let recipients: Vec<IdentityKey> = to.iter().chain(&welcome_to).cloned().collect();
        let outcome = self
            .db(move |s| {
                let welcome = welcome.as_ref().map(|w| w.0.as_slice()).unwrap_or_default();
                let deliveries: Vec<Delivery<'_>> = to
                    .iter()
                    .map(|to| Delivery {
                        to,
                        envelope: &commit.0,
                    })
                    .chain(welcome_to.iter().map(|to| Delivery {
                        to,
                        envelope: welcome,
                    }))
                    .collect();
                s.group_commit(&me, &group.0, epoch, &members, &deliveries, hour, cap)
            })
            .await?;
        Ok(match outcome {
            Ok(epoch) => {
                self.shared
                    .metrics
                    .mailbox_depth
                    .inc_by(i64::try_from(recipients.len()).unwrap_or(0));
                if let Ok(hub) = self.shared.hub.lock() {
                    for to in &recipients {
                        hub.poke_mailbox(to);
                    }
                }
                Ok(ServerMessage::CommitAccepted { epoch })
            }
            Err(CommitRefused::StaleEpoch { current }) => Err((
                ErrorCode::StaleEpoch,
                format!(
                    "the group is at epoch {current}; process the mailbox, rebuild the commit and retry"
                ),
            )),
            Err(CommitRefused::NotMember) => Err((
                ErrorCode::NotGroupMember,
                "only a current member of the group may commit".into(),
            )),
            Err(CommitRefused::MailboxFull) => Err((
                ErrorCode::MailboxFull,
                "a recipient's mailbox is full; nothing was queued".into(),
            )),
        })
    }
}

/// The request must make sense before the store looks at it.
fn check_shape(me: &IdentityKey, commit: &GroupCommit) -> Result<(), &'static str> {
    if commit.group.is_empty() || commit.group.len() > MAX_GROUP_ID_BYTES {
        return Err("the group id must be 1 to 64 bytes");
    }
    if commit.commit.is_empty() {
        return Err("the commit may not be empty");
    }
    if !commit.members.contains(me) {
        return Err("the members after the commit must include the sender");
    }
    if commit.members.len() > MAX_GROUP_MEMBERS
        || commit.to.len() > MAX_GROUP_MEMBERS
        || commit.welcome_to.len() > MAX_GROUP_MEMBERS
    {
        return Err("a group has at most 1000 members");
    }
    if commit.to.contains(me) || commit.welcome_to.contains(me) {
        return Err("the sender does not send itself its own commit");
    }
    if has_duplicates(&commit.to) || has_duplicates(&commit.welcome_to) {
        return Err("a recipient is listed twice");
    }
    match (&commit.welcome, commit.welcome_to.is_empty()) {
        (Some(w), false) if !w.is_empty() => Ok(()),
        (None, true) => Ok(()),
        _ => Err("a welcome needs its recipients, and recipients need a non-empty welcome"),
    }
}

fn has_duplicates(keys: &[IdentityKey]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    !keys.iter().all(|k| seen.insert(k.as_bytes()))
}
