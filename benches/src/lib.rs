//! Sotto's whole-system benchmarks.
//!
//! The `sotto-bench` binary (`src/main.rs`, modules under `src/signaling/`) holds the
//! signaling and SFU load benches; the call-quality bench lives in this library:
//! [`scenario`] (the TOML files in `benches/scenarios/`, impairments from
//! `sotto-netsim`), [`relay`] (the impairments as a UDP relay), [`quality`] (Sotto calls
//! through it, and the scoring), [`chromium`] (the same between two Chromium pages, in a
//! [`netns`]), [`ports`], [`emodel`] (ITU-T G.107), [`visqol`] and [`charts`]; and
//! [`jitter_compare`] (our jitter buffer against the `neteq` crate on the same traces).
//! Figures go to BENCHMARKS.md with their command and machine.

pub mod charts;
pub mod chromium;
pub mod emodel;
pub mod group;
pub mod jitter_compare;
pub mod netns;
pub mod ports;
pub mod quality;
pub mod relay;
pub mod scenario;
pub mod visqol;
