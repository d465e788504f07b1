//! Rooms and presence, in memory and sans-IO: plain state changes that return who must
//! be told. The caller supplies random ids and tokens and does all sending. Nothing here
//! survives a restart, by design (rooms are ephemeral meeting points).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use subtle::ConstantTimeEq;

use crate::protocol::{ErrorCode, IdentityKey, InviteToken, Participant, RoomId};

/// A refused room operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomError {
    /// Stable code for the client.
    pub code: ErrorCode,
    /// Human sentence.
    pub message: &'static str,
}

const INVITE_INVALID: RoomError = RoomError {
    code: ErrorCode::InviteInvalid,
    message: "no room has that id and invite token",
};

struct Room {
    token: InviteToken,
    cap: u32,
    members: BTreeMap<IdentityKey, Option<String>>,
    /// The SFU hosting the room's media; it hears every join and leave.
    sfu: Option<IdentityKey>,
}

impl Room {
    fn participants(&self) -> Vec<Participant> {
        self.members
            .iter()
            .map(|(identity, display_name)| Participant {
                identity: *identity,
                display_name: display_name.clone(),
            })
            .collect()
    }

    /// Who hears of `me` joining or leaving: the other members, and the room's SFU.
    fn others(&self, me: &IdentityKey) -> Vec<IdentityKey> {
        self.members
            .keys()
            .filter(|k| *k != me)
            .copied()
            .chain(self.sfu)
            .collect()
    }
}

/// The result of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Everyone now in the room, the joiner included.
    pub participants: Vec<Participant>,
    /// Who must get a `presence: joined` (empty when the joiner was already in).
    pub notify: Vec<IdentityKey>,
    /// The room's SFU, if it has one.
    pub sfu: Option<IdentityKey>,
}

/// All rooms of one server.
pub struct Rooms {
    rooms: HashMap<RoomId, Room>,
    memberships: HashMap<IdentityKey, BTreeSet<RoomId>>,
    /// Registered SFUs and how many rooms each hosts.
    sfus: BTreeMap<IdentityKey, usize>,
    max_participants: u32,
    max_rooms_per_identity: usize,
}

impl Rooms {
    /// No rooms yet.
    pub fn new(max_participants: u32, max_rooms_per_identity: usize) -> Self {
        Rooms {
            rooms: HashMap::new(),
            memberships: HashMap::new(),
            sfus: BTreeMap::new(),
            max_participants,
            max_rooms_per_identity,
        }
    }

    /// Number of live rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// True when no room exists.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    fn check_room_quota(&self, who: &IdentityKey) -> Result<(), RoomError> {
        let count = self.memberships.get(who).map_or(0, BTreeSet::len);
        if count >= self.max_rooms_per_identity {
            return Err(RoomError {
                code: ErrorCode::RoomFull,
                message: "this identity is already in as many rooms as the server allows",
            });
        }
        Ok(())
    }

    /// Registers an SFU (its connection proved the shared secret).
    pub fn register_sfu(&mut self, sfu: IdentityKey) {
        self.sfus.entry(sfu).or_insert(0);
    }

    /// Forgets an SFU (its connection is gone). Rooms it hosted keep its id: their
    /// members see the SFU as offline until it registers again.
    pub fn unregister_sfu(&mut self, sfu: &IdentityKey) {
        self.sfus.remove(sfu);
    }

    /// The rooms `sfu` hosts and who is in each (to bring an SFU that registers again up
    /// to date).
    pub fn rooms_of_sfu(&self, sfu: &IdentityKey) -> Vec<(RoomId, Vec<Participant>)> {
        self.rooms
            .iter()
            .filter(|(_, room)| room.sfu.as_ref() == Some(sfu))
            .map(|(id, room)| (id.clone(), room.participants()))
            .collect()
    }

    /// The registered SFU hosting the fewest rooms.
    fn pick_sfu(&self) -> Option<IdentityKey> {
        self.sfus
            .iter()
            .min_by_key(|(_, rooms)| **rooms)
            .map(|(sfu, _)| *sfu)
    }

    /// Create a room with the given (random) id and token; the creator joins it. With
    /// `with_sfu`, the least busy registered SFU hosts it (`no_sfu` when none is). Returns
    /// the room's cap and its SFU.
    pub fn create(
        &mut self,
        creator: Participant,
        room_id: RoomId,
        token: InviteToken,
        cap: Option<u32>,
        with_sfu: bool,
    ) -> Result<(u32, Option<IdentityKey>), RoomError> {
        self.check_room_quota(&creator.identity)?;
        let sfu = if with_sfu {
            Some(self.pick_sfu().ok_or(RoomError {
                code: ErrorCode::NoSfu,
                message: "no SFU is available for a group call on this server",
            })?)
        } else {
            None
        };
        let cap = cap
            .unwrap_or(self.max_participants)
            .clamp(1, self.max_participants);
        if self.rooms.contains_key(&room_id) {
            // 128 random bits collided: treat as an internal error, never merge rooms.
            return Err(RoomError {
                code: ErrorCode::Internal,
                message: "room id collision; try again",
            });
        }
        let mut members = BTreeMap::new();
        members.insert(creator.identity, creator.display_name);
        self.memberships
            .entry(creator.identity)
            .or_default()
            .insert(room_id.clone());
        self.rooms.insert(
            room_id,
            Room {
                token,
                cap,
                members,
                sfu,
            },
        );
        if let Some(count) = sfu.and_then(|sfu| self.sfus.get_mut(&sfu)) {
            *count += 1;
        }
        Ok((cap, sfu))
    }

    /// Join with an invite token. A wrong token and a missing room look the same.
    pub fn join(
        &mut self,
        who: Participant,
        room_id: &RoomId,
        token: &InviteToken,
    ) -> Result<Joined, RoomError> {
        let Some(room) = self.rooms.get(room_id) else {
            return Err(INVITE_INVALID);
        };
        let token_ok: bool = room.token.0.as_bytes().ct_eq(token.0.as_bytes()).into();
        if !token_ok {
            return Err(INVITE_INVALID);
        }
        if room.members.contains_key(&who.identity) {
            return Ok(Joined {
                participants: room.participants(),
                notify: Vec::new(),
                sfu: room.sfu,
            });
        }
        if room.members.len() >= room.cap as usize {
            return Err(RoomError {
                code: ErrorCode::RoomFull,
                message: "the room is at its participant cap",
            });
        }
        self.check_room_quota(&who.identity)?;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return Err(INVITE_INVALID);
        };
        let notify = room.others(&who.identity);
        room.members.insert(who.identity, who.display_name);
        self.memberships
            .entry(who.identity)
            .or_default()
            .insert(room_id.clone());
        Ok(Joined {
            participants: room.participants(),
            notify,
            sfu: room.sfu,
        })
    }

    /// Leave a room; returns who must get a `presence: left` and the leaver's entry.
    pub fn leave(
        &mut self,
        who: &IdentityKey,
        room_id: &RoomId,
    ) -> Result<(Participant, Vec<IdentityKey>), RoomError> {
        let not_in_room = RoomError {
            code: ErrorCode::NotInRoom,
            message: "you are not in that room",
        };
        let room = self.rooms.get_mut(room_id).ok_or(not_in_room.clone())?;
        let display_name = room.members.remove(who).ok_or(not_in_room)?;
        let notify = room.others(who);
        if room.members.is_empty() {
            let sfu = room.sfu;
            self.rooms.remove(room_id);
            if let Some(count) = sfu.and_then(|sfu| self.sfus.get_mut(&sfu)) {
                *count = count.saturating_sub(1);
            }
        }
        if let Some(set) = self.memberships.get_mut(who) {
            set.remove(room_id);
            if set.is_empty() {
                self.memberships.remove(who);
            }
        }
        let me = Participant {
            identity: *who,
            display_name,
        };
        Ok((me, notify))
    }

    /// Leave every room (the connection is gone). Returns, per room, who to tell.
    pub fn leave_all(&mut self, who: &IdentityKey) -> Vec<(RoomId, Participant, Vec<IdentityKey>)> {
        let rooms: Vec<RoomId> = self
            .memberships
            .get(who)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        rooms
            .into_iter()
            .filter_map(|room_id| {
                let (me, notify) = self.leave(who, &room_id).ok()?;
                Some((room_id, me, notify))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u8) -> Participant {
        Participant {
            identity: IdentityKey([n; 32]),
            display_name: Some(format!("p{n}")),
        }
    }

    fn room(rooms: &mut Rooms, creator: u8, cap: Option<u32>) -> (RoomId, InviteToken) {
        let id = RoomId(format!("room-{creator}"));
        let token = InviteToken(format!("token-{creator}"));
        rooms
            .create(p(creator), id.clone(), token.clone(), cap, false)
            .unwrap();
        (id, token)
    }

    #[test]
    fn join_needs_the_token_and_tells_the_others() {
        let mut rooms = Rooms::new(10, 4);
        let (id, token) = room(&mut rooms, 1, None);
        let wrong = InviteToken("token-x".into());
        assert_eq!(
            rooms.join(p(2), &id, &wrong).unwrap_err().code,
            ErrorCode::InviteInvalid
        );
        let missing = RoomId("nope".into());
        assert_eq!(
            rooms.join(p(2), &missing, &token).unwrap_err(),
            INVITE_INVALID
        );
        let joined = rooms.join(p(2), &id, &token).unwrap();
        assert_eq!(joined.participants, vec![p(1), p(2)]);
        assert_eq!(joined.notify, vec![p(1).identity]);
        // Joining twice is harmless and tells nobody.
        assert!(rooms.join(p(2), &id, &token).unwrap().notify.is_empty());
    }

    #[test]
    fn caps_are_enforced() {
        let mut rooms = Rooms::new(3, 2);
        let (id, token) = room(&mut rooms, 1, Some(2));
        rooms.join(p(2), &id, &token).unwrap();
        assert_eq!(
            rooms.join(p(3), &id, &token).unwrap_err().code,
            ErrorCode::RoomFull
        );
        // The creator may not raise the cap above the server's.
        let id9 = RoomId("nine".into());
        let cap = rooms.create(p(9), id9, InviteToken("t".into()), Some(1000), false);
        assert_eq!(cap, Ok((3, None)));
        // Per-identity room quota.
        room(&mut rooms, 2, None);
        let third = rooms.create(
            p(2),
            RoomId("x".into()),
            InviteToken("y".into()),
            None,
            false,
        );
        assert_eq!(third.unwrap_err().code, ErrorCode::RoomFull);
    }

    #[test]
    fn leaving_tells_the_others_and_empty_rooms_vanish() {
        let mut rooms = Rooms::new(10, 4);
        let (id, token) = room(&mut rooms, 1, None);
        rooms.join(p(2), &id, &token).unwrap();
        let (me, notify) = rooms.leave(&p(1).identity, &id).unwrap();
        assert_eq!(me, p(1));
        assert_eq!(notify, vec![p(2).identity]);
        assert_eq!(
            rooms.leave(&p(1).identity, &id).unwrap_err().code,
            ErrorCode::NotInRoom
        );
        let gone = rooms.leave_all(&p(2).identity);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].2.is_empty());
        assert!(rooms.is_empty());
        assert_eq!(
            rooms.join(p(3), &id, &token).unwrap_err().code,
            ErrorCode::InviteInvalid
        );
    }

    #[test]
    fn sfu_rooms_go_to_the_least_busy_sfu_which_hears_every_join_and_leave() {
        let mut rooms = Rooms::new(10, 4);
        let none = rooms.create(
            p(1),
            RoomId("a".into()),
            InviteToken("t".into()),
            None,
            true,
        );
        assert_eq!(none.unwrap_err().code, ErrorCode::NoSfu);

        let (sfu_a, sfu_b) = (p(100).identity, p(101).identity);
        rooms.register_sfu(sfu_a);
        rooms.register_sfu(sfu_b);
        let token = InviteToken("t".into());
        let (_, first) = rooms
            .create(p(1), RoomId("r1".into()), token.clone(), None, true)
            .unwrap();
        let (_, second) = rooms
            .create(p(2), RoomId("r2".into()), token.clone(), None, true)
            .unwrap();
        assert_ne!(first, second, "the second room goes to the idle SFU");
        let sfu = first.unwrap();

        let joined = rooms.join(p(3), &RoomId("r1".into()), &token).unwrap();
        assert_eq!(joined.sfu, Some(sfu));
        assert_eq!(joined.notify, vec![p(1).identity, sfu]);
        assert!(!joined.participants.iter().any(|m| m.identity == sfu));
        let (_, notify) = rooms.leave(&p(3).identity, &RoomId("r1".into())).unwrap();
        assert_eq!(notify, vec![p(1).identity, sfu]);
        // The last member leaving still tells the SFU, and frees its slot.
        let (_, notify) = rooms.leave(&p(1).identity, &RoomId("r1".into())).unwrap();
        assert_eq!(notify, vec![sfu]);
        let (_, third) = rooms
            .create(p(4), RoomId("r3".into()), token, None, true)
            .unwrap();
        assert_eq!(third, Some(sfu));

        rooms.unregister_sfu(&sfu_a);
        rooms.unregister_sfu(&sfu_b);
        let gone = rooms.create(
            p(5),
            RoomId("r4".into()),
            InviteToken("t".into()),
            None,
            true,
        );
        assert_eq!(gone.unwrap_err().code, ErrorCode::NoSfu);
    }
}
