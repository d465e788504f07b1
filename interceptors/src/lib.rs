//! rtc interceptors shared by the SFU's legs (`sotto-sfu`) and the engine's peer
//! connections (`sotto-engine`): both stacks are rtc underneath, and both answer NACKs
//! from rtc's responder, which needs the same bound on either side; the engine reads
//! feedback through a tap. Also the one payload format both read: RED (RFC 2198).

pub mod lost_feedback;
pub mod nack;
pub mod red;
pub mod rtcp_tap;
pub mod rtx_budget;
