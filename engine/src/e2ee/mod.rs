//! End-to-end encryption: what lets two people verify each other and what keys the media.
//!
//! - [`safety`]: safety numbers for two identities (digits to read out, a QR payload to
//!   scan).
//!
//! Nothing here talks to the network or reads a clock: time is passed in. Secrets are
//! zeroized when dropped and never printed by `Debug`.

pub mod safety;
