//! Commit ordering for MLS groups. The server keeps, per group id, the current epoch and
//! the member list the last accepted commit declared, nothing else. A commit is accepted
//! when it was built on the current epoch and its sender is a current member; the commit
//! and the welcome are then queued in every recipient's mailbox in the same transaction,
//! so either everyone gets them or nobody does. The bytes stay opaque.

use rusqlite::{OptionalExtension as _, params};

use super::{MailboxFull, Store, StoreError, push_envelope};
use crate::protocol::IdentityKey;

/// One envelope of an accepted commit: who gets which bytes.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The recipient.
    pub to: &'a IdentityKey,
    /// The commit or the welcome.
    pub envelope: &'a [u8],
}

/// Why a commit was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitRefused {
    /// Built on an older epoch: another commit won the race.
    StaleEpoch {
        /// The group's epoch now.
        current: u64,
    },
    /// The sender is not in the group's current member list.
    NotMember,
    /// One recipient's mailbox is full; nothing was queued.
    MailboxFull,
}

impl Store {
    /// Accept `sender`'s commit on `epoch` of `group` if it is current, then queue every
    /// delivery. Returns the group's new epoch.
    #[allow(clippy::too_many_arguments)]
    pub fn group_commit(
        &self,
        sender: &IdentityKey,
        group: &[u8],
        epoch: u64,
        members: &[IdentityKey],
        deliveries: &[Delivery<'_>],
        hour: i64,
        cap: u64,
    ) -> Result<Result<u64, CommitRefused>, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction()?;
        let row: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT epoch, members FROM mls_groups WHERE group_id = ?1",
                params![group],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((current, stored)) = row {
            let current = u64::try_from(current).unwrap_or(0);
            if !stored.chunks_exact(32).any(|m| m == sender.as_bytes()) {
                return Ok(Err(CommitRefused::NotMember));
            }
            if current != epoch {
                return Ok(Err(CommitRefused::StaleEpoch { current }));
            }
        }
        // A group the server has not seen starts at whatever epoch its first commit is
        // built on: a server that lost its store must not lock existing groups out.
        let next = epoch.saturating_add(1);
        let packed: Vec<u8> = members.iter().flat_map(|m| m.as_bytes().to_vec()).collect();
        tx.execute(
            "INSERT INTO mls_groups (group_id, epoch, members, updated_hour)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch,
                 members = excluded.members, updated_hour = excluded.updated_hour",
            params![group, i64::try_from(next).unwrap_or(i64::MAX), packed, hour],
        )?;
        for delivery in deliveries {
            if let Err(MailboxFull) = push_envelope(&tx, delivery.to, delivery.envelope, hour, cap)?
            {
                return Ok(Err(CommitRefused::MailboxFull));
            }
        }
        tx.commit()?;
        Ok(Ok(next))
    }

    /// The group's epoch as the server knows it (`None` if it has seen no commit).
    pub fn group_epoch(&self, group: &[u8]) -> Result<Option<u64>, StoreError> {
        let conn = self.lock()?;
        let epoch: Option<i64> = conn
            .query_row(
                "SELECT epoch FROM mls_groups WHERE group_id = ?1",
                params![group],
                |r| r.get(0),
            )
            .optional()?;
        Ok(epoch.map(|e| u64::try_from(e).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> IdentityKey {
        IdentityKey([n; 32])
    }

    fn depth(store: &Store, who: &IdentityKey) -> u64 {
        store.mailbox_depth(who).expect("depth")
    }

    #[test]
    fn commits_are_ordered_per_group_and_delivered_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let group = b"group-1";

        // Alice adds Bob: the first commit the server sees sets the epoch.
        let welcome = [Delivery {
            to: &bob,
            envelope: b"welcome",
        }];
        let accepted = store
            .group_commit(&alice, group, 0, &[alice, bob], &welcome, 1, 10)
            .expect("store");
        assert_eq!(accepted, Ok(1));
        assert_eq!(depth(&store, &bob), 1);

        // Bob and Alice race on epoch 1: Bob wins, Alice's is stale and queues nothing.
        let to_alice = [Delivery {
            to: &alice,
            envelope: b"bob's commit",
        }];
        let members = [alice, bob, carol];
        assert_eq!(
            store
                .group_commit(&bob, group, 1, &members, &to_alice, 1, 10)
                .expect("store"),
            Ok(2)
        );
        let to_bob = [Delivery {
            to: &bob,
            envelope: b"alice's commit",
        }];
        assert_eq!(
            store
                .group_commit(&alice, group, 1, &members, &to_bob, 1, 10)
                .expect("store"),
            Err(CommitRefused::StaleEpoch { current: 2 })
        );
        assert_eq!(depth(&store, &bob), 1, "a refused commit queues nothing");

        // Someone outside the member list cannot advance the epoch.
        assert_eq!(
            store
                .group_commit(&key(9), group, 2, &[key(9)], &[], 1, 10)
                .expect("store"),
            Err(CommitRefused::NotMember)
        );
        assert_eq!(store.group_epoch(group).expect("epoch"), Some(2));

        // A full mailbox refuses the whole commit: neither recipient gets anything and
        // the epoch stays.
        let full = Store::open(dir.path()).expect("reopen");
        let both = [
            Delivery {
                to: &alice,
                envelope: b"c",
            },
            Delivery {
                to: &carol,
                envelope: b"c",
            },
        ];
        assert_eq!(
            full.group_commit(&bob, group, 2, &members, &both, 1, 1)
                .expect("store"),
            Err(CommitRefused::MailboxFull)
        );
        assert_eq!(depth(&full, &carol), 0);
        assert_eq!(full.group_epoch(group).expect("epoch"), Some(2));
    }
}
