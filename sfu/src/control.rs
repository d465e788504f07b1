//! The SFU's side of signaling: it connects as a registered SFU (the shared secret), takes
//! room membership from presence events, answers participants' offers, applies their
//! answers, and sends the core's SFU-side offers. The room id is the `call_id`.

use std::time::Instant;

use sotto_signaling::client::{CallSignal, Event, SignalingSender};
use sotto_signaling::protocol::{Answer, HangupReason, IdentityKey, Layers, Offer, PresenceState};
use tokio::sync::mpsc;

use crate::core::SignalOut;
use crate::driver::SfuHandle;

/// Runs until the signaling events end.
pub async fn run(
    sender: SignalingSender,
    mut events: mpsc::UnboundedReceiver<Event>,
    sfu: SfuHandle,
    mut signals: mpsc::UnboundedReceiver<SignalOut>,
) {
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => on_event(&sender, &sfu, event).await,
                None => return,
            },
            Some(signal) = signals.recv() => send_signal(&sender, signal).await,
        }
    }
}

async fn on_event(sender: &SignalingSender, sfu: &SfuHandle, event: Event) {
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
        Event::Call { from, signal } => on_call_signal(sender, sfu, from, signal).await,
        _ => {}
    }
}

async fn on_call_signal(
    sender: &SignalingSender,
    sfu: &SfuHandle,
    from: IdentityKey,
    signal: CallSignal,
) {
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
                    let _ = sender.hang_up(from, &room, HangupReason::Failed).await;
                    return;
                }
            };
            if let Err(err) = sender.send_call_signal(from, reply).await {
                tracing::debug!(%err, "an answer did not reach its participant");
            }
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

async fn send_signal(sender: &SignalingSender, signal: SignalOut) {
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
            if let Err(err) = sender.send_call_signal(to, offer).await {
                tracing::debug!(%err, "an SFU offer did not reach its participant");
            }
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
            if let Err(err) = sender.send_call_signal(to, layers).await {
                tracing::debug!(%err, "a layers message did not reach its publisher");
            }
        }
    }
}
