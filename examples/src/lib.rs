//! Runnable examples of Sotto. Each example's logic lives here as a function so the
//! tests in `examples/tests/` run exactly what `cargo run --example ...` runs.

pub mod chat_demo;
pub mod group_demo;
pub mod signaling_demo;
pub mod voice_demo;
