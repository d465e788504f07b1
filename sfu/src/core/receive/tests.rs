use std::time::{Duration, Instant};

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

use super::*;
use crate::core::rtp::{Header, RtpView, write_forwarded};

const VIDEO: u32 = 0x1000;
const AUDIO: u32 = 0x2000;

fn packet(ssrc: u32, seq: u16, twcc: u16, payload_type: u8) -> Vec<u8> {
    let mut out = Vec::new();
    write_forwarded(
        &mut out,
        Header {
            payload_type,
            seq,
            timestamp: u32::from(seq) * 3000,
            ssrc,
            marker: false,
        },
        &[(3, &twcc.to_be_bytes())],
        &[0xAB; 20],
    )
    .expect("written");
    out
}

/// Every RTCP packet the side emits over `span`, stepping its timers.
fn drain(side: &mut ReceiveSide, from: Instant, span: Duration) -> Vec<Box<dyn rtc::rtcp::Packet>> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= from + span {
        side.handle_timeout(now);
        while let Some(raw) = side.poll_rtcp(now) {
            out.extend(rtc::rtcp::packet::unmarshal(&mut &raw[..]).expect("our RTCP parses"));
        }
        now += Duration::from_millis(10);
    }
    out
}

fn side() -> ReceiveSide {
    let mut side = ReceiveSide::new(Some(3));
    side.bind(Stream {
        ssrc: VIDEO,
        clock_rate: 90_000,
        nack: true,
        rtx: Some((VIDEO + 1, 97)),
        payload_type: 96,
    });
    side.bind(Stream {
        ssrc: AUDIO,
        clock_rate: 48_000,
        nack: false,
        rtx: None,
        payload_type: 111,
    });
    side
}

#[test]
fn a_gap_in_video_is_nacked_and_reports_and_transport_feedback_follow() {
    let start = Instant::now();
    let mut side = side();
    let mut twcc = 0u16;
    let mut now = start;
    let mut rtcp = Vec::new();
    // Video 100..120 without 105; audio 0..50 without 10 and 11; timers run meanwhile.
    for seq in 100..120u16 {
        if seq != 105 {
            side.on_rtp(now, &packet(VIDEO, seq, twcc, 96));
        }
        twcc += 1;
        rtcp.extend(drain(&mut side, now, Duration::from_millis(9)));
        now += Duration::from_millis(10);
    }
    side.set_listener_loss(AUDIO, 128, now + Duration::from_secs(5));
    for seq in 0..50u16 {
        if seq != 10 && seq != 11 {
            side.on_rtp(now, &packet(AUDIO, seq, twcc, 111));
        }
        twcc += 1;
        rtcp.extend(drain(&mut side, now, Duration::from_millis(19)));
        now += Duration::from_millis(20);
    }
    rtcp.extend(drain(&mut side, now, Duration::from_millis(1500)));
    let nacked: Vec<u16> = rtcp
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
        .filter(|n| n.media_ssrc == VIDEO)
        .flat_map(|n| n.nacks.iter().flat_map(|pair| pair.packet_list()))
        .collect();
    assert!(nacked.contains(&105), "{nacked:?}");
    assert!(
        rtcp.iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .all(|n| n.media_ssrc != AUDIO),
        "no NACKs for audio"
    );
    assert!(
        rtcp.iter()
            .any(|p| p.as_any().downcast_ref::<TransportLayerCc>().is_some()),
        "transport-wide feedback"
    );
    let blocks: Vec<_> = rtcp
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
        .flat_map(|r| r.reports.iter().cloned())
        .collect();
    let audio = blocks
        .iter()
        .find(|b| b.ssrc == AUDIO)
        .expect("a report on the audio");
    assert_eq!(audio.fraction_lost, 128, "raised to what listeners lose");
    assert!(blocks.iter().any(|b| b.ssrc == VIDEO));
}

#[test]
fn rtx_is_unwrapped_in_place_and_other_packets_are_left_alone() {
    let side = side();
    // RTX for video seq 105: OSN first, then the payload; padded.
    let mut rtx = Vec::new();
    let mut body = vec![0, 105];
    body.extend_from_slice(&[0xCD; 10]);
    write_forwarded(
        &mut rtx,
        Header {
            payload_type: 97,
            seq: 9,
            timestamp: 315_000,
            ssrc: VIDEO + 1,
            marker: true,
        },
        &[(3, &[0, 1])],
        &body,
    )
    .expect("written");
    rtx[0] |= 0x20;
    rtx.extend_from_slice(&[0, 0, 3]);
    assert!(side.is_rtx(VIDEO + 1));
    assert!(side.unwrap_rtx(&mut rtx));
    let view = RtpView::parse(&rtx).expect("parses");
    assert_eq!(
        (view.ssrc(), view.payload_type(), view.seq()),
        (VIDEO, 96, 105)
    );
    assert_eq!(view.payload(), &[0xCD; 10]);
    assert!(view.marker());
    assert_eq!(view.extension(3), Some(&[0, 1][..]));

    let mut media = packet(VIDEO, 7, 0, 96);
    let before = media.clone();
    assert!(!side.unwrap_rtx(&mut media));
    assert_eq!(media, before);
    // RTX without an original sequence number (a padding probe), and junk.
    let mut probe = Vec::new();
    write_forwarded(
        &mut probe,
        Header {
            payload_type: 97,
            seq: 10,
            timestamp: 0,
            ssrc: VIDEO + 1,
            marker: false,
        },
        &[],
        &[1],
    )
    .expect("written");
    assert!(!side.unwrap_rtx(&mut probe));
    let mut junk = vec![0x80, 97, 0];
    assert!(!side.unwrap_rtx(&mut junk));
}
