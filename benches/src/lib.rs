//! Sotto's whole-system benchmarks.
//!
//! The `sotto-bench` binary (`src/main.rs`, modules under `src/signaling/`) holds the
//! signaling and SFU load benches; the call-quality bench grows in this library:
//! [`scenario`] (the TOML files in `benches/scenarios/`, impairments from
//! `sotto-netsim`) and [`emodel`] (ITU-T G.107) so far. Figures go to BENCHMARKS.md with
//! their command and machine.

pub mod charts;
pub mod chromium;
pub mod emodel;
pub mod netns;
pub mod quality;
pub mod relay;
pub mod scenario;
