//! The SFU's side of signaling: it connects as a registered SFU (the shared secret), takes
//! room membership from presence events, answers participants' offers, applies their
//! answers, and sends the core's SFU-side offers. The room id is the `call_id`.
//!
//! What the SFU sends goes through a [`Postman`]: each participant's signals in order on
//! a task of their own, so reading signaling never waits for a reply, one slow participant
//! never holds up the others, and a signal refused because the participant's queue at
//! signaling is full (`peer_busy`, common while a large room fills and everyone hears of
//! everyone joining) is sent again shortly instead of lost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sotto_signaling::client::{CallSignal, ClientError, Event, SignalingSender};
use sotto_signaling::protocol::{
    Answer, ErrorCode, Hangup, HangupReason, IdentityKey, Layers, Offer, PresenceState,
};
use tokio::sync::{Notify, mpsc};

use crate::core::SignalOut;
use crate::driver::SfuHandle;

/// Tries per signal refused as `peer_busy` or `rate_limited`, and the first wait between
/// them (doubling: about 6 s in all).
const DELIVERY_TRIES: u32 = 8;
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// A participant's delivery task ends after this long with nothing to send.
const QUEUE_IDLE: Duration = Duration::from_secs(5);

/// Runs until the signaling events end.
pub async fn run(
    sender: SignalingSender,
    mut events: mpsc::UnboundedReceiver<Event>,
    sfu: SfuHandle,
    mut signals: mpsc::UnboundedReceiver<SignalOut>,
) {
    let mut postman = Postman::new(sender);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => on_event(&mut postman, &sfu, event),
                None => return,
            },
            Some(signal) = signals.recv() => send_signal(&mut postman, signal),
        }
    }
}

/// Signals to participants, each participant's in order on its own task.
struct Postman {
    sender: SignalingSender,
    queues: HashMap<IdentityKey, Arc<Queue>>,
    /// Queue count at which ended queues are next swept from the map.
    sweep_at: usize,
}

/// One participant's signals waiting for its task. A `VecDeque` behind a lock rather than
/// a channel: a tokio channel allocates room for 32 signals (2.8 KB) at its first one,
/// and every participant of a filling room has a queue at once.
#[derive(Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    posted: Notify,
}

#[derive(Default)]
struct Waiting {
    signals: VecDeque<CallSignal>,
    /// Its task has ended (idle, with nothing waiting): posting starts another.
    ended: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Postman {
    fn new(sender: SignalingSender) -> Postman {
        Postman {
            sender,
            queues: HashMap::new(),
            sweep_at: 1024,
        }
    }

    /// Queues `signal` for `to`, after everything queued for it before.
    fn post(&mut self, to: IdentityKey, signal: CallSignal) {
        if let Some(queue) = self.queues.get(&to) {
            let mut waiting = queue.lock();
            if !waiting.ended {
                waiting.signals.push_back(signal);
                drop(waiting);
                queue.posted.notify_one();
                return;
            }
        }
        if self.queues.len() >= self.sweep_at {
            self.queues.retain(|_, queue| !queue.lock().ended);
            self.sweep_at = (self.queues.len() * 2).max(1024);
        }
        let queue = Arc::new(Queue::default());
        queue.lock().signals.push_back(signal);
        tokio::spawn(deliver(self.sender.clone(), to, queue.clone()));
        self.queues.insert(to, queue);
    }
}

/// Sends `to`'s signals in order until it has had nothing to send for [`QUEUE_IDLE`]. It
/// ends only with nothing waiting, under the queue's lock, so a signal is either taken by
/// this task or finds the queue ended and starts the next one: never two at once.
async fn deliver(sender: SignalingSender, to: IdentityKey, queue: Arc<Queue>) {
    loop {
        let next = queue.lock().signals.pop_front();
        match next {
            Some(signal) => deliver_one(&sender, to, signal).await,
            None => {
                if tokio::time::timeout(QUEUE_IDLE, queue.posted.notified())
                    .await
                    .is_err()
                {
                    let mut waiting = queue.lock();
                    if waiting.signals.is_empty() {
                        waiting.ended = true;
                        return;
                    }
                }
            }
        }
    }
}

async fn deliver_one(sender: &SignalingSender, to: IdentityKey, signal: CallSignal) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=DELIVERY_TRIES {
        match sender.send_call_signal(to, signal.clone()).await {
            Ok(()) => return,
            Err(ClientError::Server {
                code: ErrorCode::PeerBusy | ErrorCode::RateLimited,
                ..
            }) if attempt < DELIVERY_TRIES => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => {
                tracing::debug!(%err, signal = signal_name(&signal), "a signal did not reach its participant");
                return;
            }
        }
    }
}

fn signal_name(signal: &CallSignal) -> &'static str {
    match signal {
        CallSignal::Offer(_) => "offer",
        CallSignal::Answer(_) => "answer",
        CallSignal::Candidate(_) => "candidate",
        CallSignal::Hangup(_) => "hangup",
        CallSignal::RestartRequest(_) => "restart_request",
        CallSignal::Subscription(_) => "subscription",
        CallSignal::Layers(_) => "layers",
    }
}

fn on_event(postman: &mut Postman, sfu: &SfuHandle, event: Event) {
    match event {
        Event::Presence {
            room_id,
            participant,
            state,
        } => {
            let who = participant.identity.to_string();
            match state {
                PresenceState::Joined => sfu.with(|s| s.participant_joined(&room_id.0, &who)),
                PresenceState::Left => {
                    sfu.with(|s| s.participant_left(&room_id.0, &who, Instant::now()));
                }
            }
        }
        Event::Call { from, signal } => on_call_signal(postman, sfu, from, signal),
        _ => {}
    }
}

fn on_call_signal(postman: &mut Postman, sfu: &SfuHandle, from: IdentityKey, signal: CallSignal) {
    let who = from.to_string();
    match signal {
        CallSignal::Offer(offer) => {
            let room = offer.call_id.clone();
            let answered = sfu.with(|s| s.handle_offer(&room, &who, &offer.sdp, Instant::now()));
            let reply = match answered {
                Ok(sdp) => CallSignal::Answer(Answer {
                    call_id: room.clone(),
                    sdp,
                    e2ee: None,
                }),
                Err(err) => {
                    tracing::debug!(%err, "an offer was refused");
                    CallSignal::Hangup(Hangup {
                        call_id: room,
                        reason: HangupReason::Failed,
                    })
                }
            };
            postman.post(from, reply);
        }
        CallSignal::Answer(answer) => {
            let applied =
                sfu.with(|s| s.handle_answer(&answer.call_id, &who, &answer.sdp, Instant::now()));
            if let Err(err) = applied {
                tracing::debug!(%err, "an answer was refused");
            }
        }
        // ICE-lite: the participant's address is learned from its connectivity checks;
        // `layers` goes from SFUs to publishers, never to an SFU; a participant's ICE
        // restart is its own offer (an ICE-lite SFU never starts one).
        CallSignal::Candidate(_) | CallSignal::Layers(_) | CallSignal::RestartRequest(_) => {}
        CallSignal::Hangup(hangup) => {
            sfu.with(|s| s.end_leg(&hangup.call_id, &who, Instant::now()));
        }
        CallSignal::Subscription(wish) => {
            let applied = sfu.with(|s| {
                let now = Instant::now();
                if let Some(quality) = wish.max_quality {
                    s.set_max_quality(&wish.call_id, &who, &wish.track, quality, now)?;
                }
                if let Some(paused) = wish.paused {
                    s.set_paused(&wish.call_id, &who, &wish.track, paused, now)?;
                }
                Ok::<(), crate::core::CoreError>(())
            });
            if let Err(err) = applied {
                tracing::debug!(%err, "a subscription request was refused");
            }
        }
    }
}

fn send_signal(postman: &mut Postman, signal: SignalOut) {
    match signal {
        SignalOut::Offer { room, to, sdp } => {
            let Ok(to) = to.parse::<IdentityKey>() else {
                return;
            };
            let offer = CallSignal::Offer(Offer {
                call_id: room,
                sdp,
                ice_restart: false,
                e2ee: None,
            });
            postman.post(to, offer);
        }
        SignalOut::Layers {
            room,
            to,
            mid,
            active,
        } => {
            let Ok(to) = to.parse::<IdentityKey>() else {
                return;
            };
            let layers = CallSignal::Layers(Layers {
                call_id: room,
                mid,
                active,
            });
            postman.post(to, layers);
        }
    }
}
