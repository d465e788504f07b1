//! Sotto SFU: skeleton.
