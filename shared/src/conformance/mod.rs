//! One conformance suite per port. Every backend runs the same suite: the embedded ones in
//! their unit tests, the AWS ones against the emulator in `tests/`. A backend that passes
//! its suite can be swapped for another without the engine noticing.

pub mod jobstore;
pub mod objstore;
pub mod queue;
