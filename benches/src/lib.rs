//! Sotto's whole-system benchmarks.
//!
//! The `sotto-bench` binary (`src/main.rs`, modules under `src/signaling/`) holds the
//! signaling load benches today; the call-quality bench (netsim, scenarios, scoring) will
//! live in this library. Figures go to BENCHMARKS.md with their command and machine.
