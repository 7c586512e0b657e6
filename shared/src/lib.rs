//! bucketclone's shared library: the domain ([`model`]), the errors ([`error`]), the key-range
//! arithmetic ([`keyrange`]), the message formats ([`wire`]), the three ports ([`queue`],
//! [`jobstore`], [`objstore`]) and their backends ([`backend`]), and one conformance suite
//! per port ([`conformance`]) that every backend must pass, and the metrics' names and
//! exporter ([`telemetry`]).
//!
//! Nothing here knows about a binary, and no type outside `backend::aws` names an AWS SDK type.

pub mod backend;
pub mod conformance;
pub mod error;
pub mod faults;
pub mod filter;
pub mod jobstore;
pub mod keyrange;
pub mod model;
pub mod objstore;
pub mod queue;
pub mod stats;
pub mod telemetry;
pub mod wire;

pub use error::{Error, Result};
