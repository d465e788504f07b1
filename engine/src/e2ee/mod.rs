//! End-to-end encryption: what lets two people verify each other and what keys the media.
//!
//! - [`safety`]: safety numbers for two identities (digits to read out, a QR payload to
//!   scan).
//! - [`media`]: a call's SFrame state as the media pipeline uses it (seal, open, rekey).
//! - [`sframe_keys`]: SFrame (RFC 9605) media keys from an MLS epoch's exporter secret, a
//!   sender and a receiver with replay protection.
//!
//! Nothing here talks to the network or reads a clock: time is passed in. Secrets are
//! zeroized when dropped and never printed by `Debug`.

pub mod media;
pub mod safety;
pub mod sframe_keys;
