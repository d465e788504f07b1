//! Sequence-number rewriting per forwarded stream, sans-IO: packets the SFU chooses not to
//! forward (last-N, a paused subscription, later a simulcast layer not selected) must not
//! look like loss to the subscriber, so the outgoing sequence skips over them; packets the
//! network lost upstream stay gaps, so the subscriber still conceals or asks for them.

/// One forwarded stream's rewriter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqRewriter {
    /// How many sequence numbers the SFU withheld so far (mod 2^16).
    withheld: u16,
}

impl SeqRewriter {
    /// The SFU withholds this packet from the subscriber.
    pub fn withhold(&mut self) {
        self.withheld = self.withheld.wrapping_add(1);
    }

    /// The sequence number to send for incoming `seq`.
    pub fn rewrite(&self, seq: u16) -> u16 {
        seq.wrapping_sub(self.withheld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_packets_leave_no_gap_and_lost_ones_do() {
        let mut r = SeqRewriter::default();
        let mut out = Vec::new();
        for seq in 65_530u16..=65_535 {
            out.push(r.rewrite(seq));
        }
        // 0..=4 withheld (last-N), 5 lost upstream (never seen), 6.. forwarded again.
        for _ in 0u16..=4 {
            r.withhold();
        }
        for seq in 6u16..9 {
            out.push(r.rewrite(seq));
        }
        assert_eq!(
            out,
            vec![65_530, 65_531, 65_532, 65_533, 65_534, 65_535, 1, 2, 3]
        );
        // The upstream loss of 5 shows as the gap 65535 -> 1 (0 is missing).
    }
}
