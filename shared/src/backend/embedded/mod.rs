//! Embedded backends: a durable SQLite queue and job store, and a local-directory object
//! store. One machine, nothing deployed.

pub mod local_dir;
pub mod sqlite_jobstore;
pub mod sqlite_queue;
