//! The E-model of ITU-T G.107 (06/2015): the transmission rating factor R and the MOS it
//! predicts, from a call's delay and packet loss and the terminal defaults. Written here
//! because no maintained crate implements it; the formulas follow the Recommendation's
//! section 3 in its order, each named as there.
//!
//! R = Ro − Is − Id − Ie,eff + A, with
//! - Ro, the basic signal-to-noise ratio (noise sources and loudness ratings);
//! - Is, impairments simultaneous with speech (loudness, sidetone, quantization);
//! - Id, delay impairments (talker echo, listener echo, absolute delay);
//! - Ie,eff, equipment impairment with packet loss (codec Ie, robustness Bpl, loss Ppl
//!   and its burstiness BurstR);
//! - A, the advantage factor.
//!
//! With every input at its default (Table 1), R = 93.2.

/// The inputs of Table 1 of G.107, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Send loudness rating, dB.
    pub slr: f64,
    /// Receive loudness rating, dB.
    pub rlr: f64,
    /// Sidetone masking rating, dB.
    pub stmr: f64,
    /// Listener sidetone rating, dB.
    pub lstr: f64,
    /// D-value of the telephone, send side.
    pub ds: f64,
    /// D-value of the telephone, receive side.
    pub dr: f64,
    /// Talker echo loudness rating, dB.
    pub telr: f64,
    /// Weighted echo path loss, dB.
    pub wepl: f64,
    /// Mean one-way delay of the echo path, ms.
    pub t: f64,
    /// Round-trip delay in a 4-wire loop, ms.
    pub tr: f64,
    /// Absolute delay in echo-free connections (mouth to ear), ms.
    pub ta: f64,
    /// Number of quantization distortion units.
    pub qdu: f64,
    /// Equipment impairment factor of the codec.
    pub ie: f64,
    /// Packet-loss robustness factor of the codec.
    pub bpl: f64,
    /// Random packet-loss probability, %.
    pub ppl: f64,
    /// Burst ratio (1 for random loss).
    pub burst_r: f64,
    /// Circuit noise referred to the 0 dBr point, dBm0p.
    pub nc: f64,
    /// Noise floor at the receive side, dBmp.
    pub nfor: f64,
    /// Room noise at the send side, dB(A).
    pub ps: f64,
    /// Room noise at the receive side, dB(A).
    pub pr: f64,
    /// Advantage factor.
    pub a: f64,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            slr: 8.0,
            rlr: 2.0,
            stmr: 15.0,
            lstr: 18.0,
            ds: 3.0,
            dr: 3.0,
            telr: 65.0,
            wepl: 110.0,
            t: 0.0,
            tr: 0.0,
            ta: 0.0,
            qdu: 1.0,
            ie: 0.0,
            bpl: 4.3,
            ppl: 0.0,
            burst_r: 1.0,
            nc: -70.0,
            nfor: -64.0,
            ps: 35.0,
            pr: 35.0,
            a: 0.0,
        }
    }
}

impl Inputs {
    /// A VoIP call with the default terminals: `delay_ms` mouth to ear (also the echo
    /// path's one-way delay; the round trip twice it), `loss_percent` packet loss with
    /// burst ratio `burst_r`, and the codec's `ie` and `bpl`.
    pub fn voip(delay_ms: f64, loss_percent: f64, burst_r: f64, ie: f64, bpl: f64) -> Inputs {
        Inputs {
            t: delay_ms,
            ta: delay_ms,
            tr: 2.0 * delay_ms,
            ppl: loss_percent,
            burst_r: burst_r.max(1.0),
            ie,
            bpl,
            ..Inputs::default()
        }
    }
}

/// R and its parts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// The transmission rating factor.
    pub r: f64,
    /// Basic signal-to-noise ratio.
    pub ro: f64,
    /// Simultaneous impairment factor.
    pub is: f64,
    /// Delay impairment factor.
    pub id: f64,
    /// Effective equipment impairment factor.
    pub ie_eff: f64,
}

impl Rating {
    /// The MOS (conversational quality, estimated) that R predicts (G.107 Annex B).
    pub fn mos(&self) -> f64 {
        mos_from_r(self.r)
    }
}

/// G.107 Annex B: MOS from R.
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6
    }
}

fn lg(x: f64) -> f64 {
    x.log10()
}

/// Computes R.
pub fn rating(i: &Inputs) -> Rating {
    // 3.3: basic signal-to-noise ratio.
    let olr = i.slr + i.rlr;
    let nfo = i.nfor + i.rlr;
    let pre = i.pr + 10.0 * lg(1.0 + 10f64.powf((10.0 - i.lstr) / 10.0));
    let nor = i.rlr - 121.0 + pre + 0.008 * (pre - 35.0).powi(2);
    let nos = i.ps - i.slr - i.ds - 100.0 + 0.004 * (i.ps - olr - i.ds - 14.0).powi(2);
    let no = 10.0
        * lg(10f64.powf(i.nc / 10.0)
            + 10f64.powf(nos / 10.0)
            + 10f64.powf(nor / 10.0)
            + 10f64.powf(nfo / 10.0));
    let ro = 15.0 - 1.5 * (i.slr + no);

    // 3.4: simultaneous impairment factor.
    let q = 37.0 - 15.0 * lg(i.qdu);
    let g = 1.07 + 0.258 * q + 0.0602 * q * q;
    let z = 46.0 / 30.0 - g / 40.0;
    let y = (ro - 100.0) / 15.0 + 46.0 / 8.4 - g / 9.0;
    let iq = 15.0 * lg(1.0 + 10f64.powf(y) + 10f64.powf(z));
    let stmro =
        -10.0 * lg(10f64.powf(-i.stmr / 10.0) + (-i.t / 4.0).exp() * 10f64.powf(-i.telr / 10.0));
    let ist = 12.0 * (1.0 + ((stmro - 13.0) / 6.0).powi(8)).powf(1.0 / 8.0)
        - 28.0 * (1.0 + ((stmro + 1.0) / 19.4).powi(35)).powf(1.0 / 35.0)
        - 13.0 * (1.0 + ((stmro - 3.0) / 33.0).powi(13)).powf(1.0 / 13.0)
        + 29.0;
    let xolr = olr + 0.2 * (64.0 + no - i.rlr);
    let iolr = 20.0 * ((1.0 + (xolr / 8.0).powi(8)).powf(1.0 / 8.0) - xolr / 8.0);
    let is = iolr + ist + iq;

    // 3.5: delay impairment factor.
    let mut terv = i.telr - 40.0 * lg((1.0 + i.t / 10.0) / (1.0 + i.t / 150.0))
        + 6.0 * (-0.3 * i.t * i.t).exp();
    if i.stmr < 9.0 {
        terv += ist / 2.0;
    }
    let roe = -1.5 * (no - i.rlr);
    let re = 80.0 + 2.5 * (terv - 14.0);
    let mut idte =
        ((roe - re) / 2.0 + ((roe - re).powi(2) / 4.0 + 100.0).sqrt() - 1.0) * (1.0 - (-i.t).exp());
    if i.stmr > 20.0 {
        let idtes = (idte * idte + ist * ist).sqrt();
        idte = idtes;
    }
    let rle = 10.5 * (i.wepl + 7.0) * (i.tr + 1.0).powf(-0.25);
    let idle = (ro - rle) / 2.0 + ((ro - rle).powi(2) / 4.0 + 169.0).sqrt();
    let idd = absolute_delay_impairment(i.ta);
    let id = idte + idle + idd;

    // 3.6: effective equipment impairment factor.
    let ie_eff = i.ie + (95.0 - i.ie) * i.ppl / (i.ppl / i.burst_r + i.bpl);

    Rating {
        r: ro - is - id - ie_eff + i.a,
        ro,
        is,
        id,
        ie_eff,
    }
}

/// Idd: the impairment of absolute delay `ta` ms (none up to 100 ms; mT = 100, sT = 1).
pub fn absolute_delay_impairment(ta: f64) -> f64 {
    if ta <= 100.0 {
        return 0.0;
    }
    let x = lg(ta / 100.0) / lg(2.0);
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_reference_r() {
        let rating = rating(&Inputs::default());
        // G.107 §3.1: "R = 93.2" with every parameter at its default.
        assert!((rating.r - 93.2).abs() < 0.05, "{rating:?}");
        // Its parts: Ro − Is − Id = 94.77 − 1.41 − 0.15 = 93.21.
        assert!((rating.ro - 94.77).abs() < 0.01, "{rating:?}");
        assert!((rating.is - 1.41).abs() < 0.01, "{rating:?}");
        assert!((rating.id - 0.15).abs() < 0.01, "{rating:?}");
        assert_eq!(rating.ie_eff, 0.0);
        assert!((rating.mos() - 4.41).abs() < 0.01, "{}", rating.mos());
    }

    #[test]
    fn absolute_delay_follows_the_formula() {
        assert_eq!(absolute_delay_impairment(100.0), 0.0);
        // Ta = 200 ms: X = 1, Idd = 25 (2^(1/6) − 3 (1 + 3^−6)^(1/6) + 2) ≈ 3.04.
        assert!((absolute_delay_impairment(200.0) - 3.04).abs() < 0.01);
        // Ta = 400 ms: X = 2.
        let x: f64 = 2.0;
        let expected = 25.0
            * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
                + 2.0);
        assert!((absolute_delay_impairment(400.0) - expected).abs() < 1e-9);
    }

    #[test]
    fn loss_and_delay_lower_r() {
        let clean = rating(&Inputs::voip(20.0, 0.0, 1.0, 0.0, 25.1)).r;
        let lossy = rating(&Inputs::voip(20.0, 5.0, 1.0, 0.0, 25.1)).r;
        let bursty = rating(&Inputs::voip(20.0, 5.0, 2.0, 0.0, 25.1)).r;
        let late = rating(&Inputs::voip(300.0, 0.0, 1.0, 0.0, 25.1)).r;
        assert!(clean > lossy && lossy > bursty, "{clean} {lossy} {bursty}");
        assert!(clean > late, "{clean} {late}");
        // Ie,eff at 5 % random loss with Bpl 25.1: 95 × 5 / 30.1.
        let ie_eff = rating(&Inputs::voip(20.0, 5.0, 1.0, 0.0, 25.1)).ie_eff;
        assert!((ie_eff - 95.0 * 5.0 / 30.1).abs() < 1e-9);
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
    }
}
