//! Per-subscription RTP rewriting, sans-IO. A subscriber sees one SSRC per forwarded source
//! whose sequence numbers and timestamps run on without jumps, whatever the SFU does
//! upstream of it:
//! - packets it withholds (last-N, a paused subscription) leave no gap, so they do not look
//!   like loss;
//! - packets the network lost upstream stay gaps, so the subscriber still NACKs or conceals;
//! - a switch to another simulcast layer (another SSRC with its own sequence and timestamp
//!   bases) continues where the previous layer stopped: the next sequence number, and a
//!   timestamp advanced by the wall-clock time since the last packet.

use std::time::Instant;

/// Whether sequence number `a` comes after `b` (RFC 1982 serial arithmetic).
pub fn seq_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// How far behind the newest packet the stale-packet floor may lag: far beyond any
/// reordering or retransmission, well inside half the sequence space.
const FLOOR_REACH: u16 = 0x4000;

/// One forwarded source's rewriter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewriter {
    /// Added to an incoming sequence number.
    seq_offset: u16,
    /// Added to an incoming timestamp.
    ts_offset: u32,
    /// The first incoming sequence number of the current layer: older ones are stale.
    floor: Option<u16>,
    /// The highest outgoing sequence number and its timestamp, and when it was sent.
    last: Option<(u16, u32, Instant)>,
    /// The highest incoming sequence number of the current layer, forwarded or withheld.
    newest: Option<u16>,
}

impl Rewriter {
    /// The SFU withholds the packet `seq` of the current layer: later ones close up over
    /// it. Only a packet newer than all before shifts the numbering; and from then on a
    /// late packet from before it is stale (the shifted numbering would give it an
    /// outgoing number already sent, and SRTP would encrypt a second payload under that
    /// index). A late packet withheld changes nothing: it was a gap already.
    pub fn withhold(&mut self, seq: u16) {
        if self.newest.is_none_or(|newest| seq_after(seq, newest)) {
            self.seq_offset = self.seq_offset.wrapping_sub(1);
            self.newest = Some(seq);
            self.floor = Some(seq.wrapping_add(1));
        }
    }

    /// The next packet forwarded comes from a new layer (or the first layer), starting at
    /// incoming `seq` and `ts`, with `clock_rate` ticks per second. Outgoing numbering
    /// continues from the last packet sent.
    pub fn switch(&mut self, seq: u16, ts: u32, now: Instant, clock_rate: u32) {
        self.floor = Some(seq);
        self.newest = None;
        let Some((last_seq, last_ts, at)) = self.last else {
            // The first layer: its own numbering.
            self.seq_offset = 0;
            self.ts_offset = 0;
            return;
        };
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        let ticks = ((elapsed * f64::from(clock_rate)) as u32).max(1);
        self.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
        self.ts_offset = last_ts.wrapping_add(ticks).wrapping_sub(ts);
    }

    /// The outgoing sequence number and timestamp for an incoming packet of the current
    /// layer, or `None` when it is older than the layer's start (a late packet whose
    /// number the previous layer already used).
    pub fn rewrite(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        if let Some(floor) = self.floor
            && seq_after(floor, seq)
        {
            return None;
        }
        if self.newest.is_none_or(|newest| seq_after(seq, newest)) {
            self.newest = Some(seq);
            // The floor trails the newest packet by at most FLOOR_REACH: a floor left at
            // the layer's start would, half a sequence cycle later, read every new packet
            // as older than it (forwarding stopped after 32,768 packets of one layer, 11
            // minutes of audio, before this).
            if let Some(floor) = self.floor
                && seq.wrapping_sub(floor) > FLOOR_REACH
            {
                self.floor = Some(seq.wrapping_sub(FLOOR_REACH));
            }
        }
        let out = (
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        );
        if self.last.is_none_or(|(last, _, _)| seq_after(out.0, last)) {
            self.last = Some((out.0, out.1, now));
        }
        Some(out)
    }

    /// The last outgoing sequence number.
    pub fn last_seq(&self) -> Option<u16> {
        self.last.map(|(seq, _, _)| seq)
    }

    /// The newest outgoing timestamp and when its packet was sent.
    pub fn last_sent(&self) -> Option<(u32, Instant)> {
        self.last.map(|(_, ts, at)| (ts, at))
    }

    /// The outgoing sequence number and timestamp of a packet of the current layer that
    /// went out already (a retransmission), without moving any state; `None` when it is
    /// older than the layer's start.
    pub fn rewrite_stale(&self, seq: u16, ts: u32) -> Option<(u16, u32)> {
        if let Some(floor) = self.floor
            && seq_after(floor, seq)
        {
            return None;
        }
        Some((
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        ))
    }

    /// The incoming sequence number of the current layer that went out as `out` (a
    /// subscriber's NACK names outgoing numbers), or `None` when `out` was not sent under
    /// the current numbering (before a switch or a withheld packet, or not yet).
    pub fn original(&self, out: u16) -> Option<u16> {
        let seq = out.wrapping_sub(self.seq_offset);
        let floor = self.floor?;
        let newest = self.newest?;
        (!seq_after(floor, seq) && !seq_after(seq, newest)).then_some(seq)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_layer_forwarded_for_hours_keeps_being_forwarded_across_sequence_wraps() {
        let now = Instant::now();
        let mut rewriter = Rewriter::default();
        rewriter.switch(100, 0, now, 48_000);
        for i in 0..200_000u32 {
            let seq = (100 + i) as u16;
            let out = rewriter.rewrite(seq, i * 960, now);
            assert_eq!(out.map(|(s, _)| s), Some(seq), "packet {i}");
            if i > 20_000 {
                // A packet 16,000 old is still only late, one from the layer's start stale.
                assert_eq!(
                    rewriter.original(seq.wrapping_sub(3)),
                    Some(seq.wrapping_sub(3))
                );
            }
        }
    }

    #[test]
    fn withheld_packets_leave_no_gap_and_lost_ones_do() {
        let now = Instant::now();
        let mut r = Rewriter::default();
        r.switch(65_530, 0, now, 48_000);
        let mut out = Vec::new();
        for seq in 65_530u16..=65_535 {
            out.push(r.rewrite(seq, 0, now).unwrap().0);
        }
        // 0..=4 withheld (last-N), 5 lost upstream (never seen), 6.. forwarded again.
        for seq in 0u16..=4 {
            r.withhold(seq);
        }
        for seq in 6u16..9 {
            out.push(r.rewrite(seq, 0, now).unwrap().0);
        }
        assert_eq!(
            out,
            vec![65_530, 65_531, 65_532, 65_533, 65_534, 65_535, 1, 2, 3]
        );
        // The upstream loss of 5 shows as the gap 65535 -> 1 (0 is missing).
    }

    #[test]
    fn no_outgoing_number_is_used_twice_around_withheld_packets() {
        let now = Instant::now();
        let mut r = Rewriter::default();
        r.switch(100, 0, now, 48_000);
        let mut sent = vec![r.rewrite(100, 0, now).unwrap().0];
        sent.push(r.rewrite(102, 0, now).unwrap().0);
        // 103 withheld; then 101 comes late, and is withheld too: no shift for it.
        r.withhold(103);
        r.withhold(101);
        sent.push(r.rewrite(104, 0, now).unwrap().0);
        // 101 or 103 forwarded late now would take a number already sent.
        assert_eq!(r.rewrite(101, 0, now), None);
        assert_eq!(r.rewrite(103, 0, now), None);
        sent.push(r.rewrite(105, 0, now).unwrap().0);
        let mut distinct = sent.clone();
        distinct.dedup();
        assert_eq!(sent, distinct);
        assert_eq!(sent, vec![100, 102, 103, 104]);
    }

    #[test]
    fn a_layer_switch_continues_the_sequence_and_the_clock() {
        let start = Instant::now();
        let mut r = Rewriter::default();
        // Layer "f": sequence from 1000, timestamps from 90_000, 30 frames a second.
        r.switch(1000, 90_000, start, 90_000);
        let mut at = start;
        for i in 0..10u16 {
            at = start + Duration::from_millis(33 * u64::from(i));
            let (seq, ts) = r
                .rewrite(1000 + i, 90_000 + 2970 * u32::from(i), at)
                .unwrap();
            assert_eq!((seq, ts), (1000 + i, 90_000 + 2970 * u32::from(i)));
        }
        // Switch to layer "q", whose numbering is unrelated, 33 ms after the last packet.
        let later = at + Duration::from_millis(33);
        r.switch(7, 5_000_000, later, 90_000);
        let (seq, ts) = r.rewrite(7, 5_000_000, later).unwrap();
        assert_eq!(seq, 1010, "the next sequence number");
        assert_eq!(
            ts,
            90_000 + 2970 * 9 + 2970,
            "33 ms later on a 90 kHz clock"
        );
        assert_eq!(r.rewrite(8, 5_002_970, later).unwrap(), (1011, ts + 2970));
        // A late packet of the new layer from before the switch is stale; so is anything
        // of the old layer's numbering.
        assert_eq!(r.rewrite(6, 4_997_030, later), None);
        assert_eq!(r.last_seq(), Some(1011));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let now = Instant::now();
        let mut r = Rewriter::default();
        r.switch(10, 0, now, 90_000);
        r.rewrite(10, 0, now).unwrap();
        r.switch(65_535, 0, now, 90_000);
        assert_eq!(r.rewrite(65_535, 0, now).unwrap().0, 11);
        assert_eq!(r.rewrite(0, 0, now).unwrap().0, 12);
        assert!(seq_after(0, 65_535) && !seq_after(65_535, 0));
    }
}
