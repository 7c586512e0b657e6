//! The work-queue port: at-least-once delivery of opaque text messages with leases.
//!
//! A pulled message is invisible to other consumers until its lease expires (SQS standard
//! queues may, rarely, still hand one message to two consumers); the consumer renews the
//! lease while it works and acks (deletes) the message when done. A message whose lease
//! expires is delivered again, so every consumer must be idempotent. Receipt handles
//! and other transport details stay inside the adapter behind [`LeaseId`].

use async_trait::async_trait;
use std::time::Duration;

use crate::error::Result;

/// Opaque handle on one delivery of a message; valid until its lease expires or it is acked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(pub String);

/// One delivery of a message.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub lease: LeaseId,
    pub body: String,
    /// How many times this message has been delivered, this delivery included (>= 1).
    pub deliveries: u32,
}

/// Approximate message counts, for autoscaling and progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be pulled.
    pub visible: u64,
    /// Pulled and under lease.
    pub in_flight: u64,
    /// In the dead-letter queue: delivered too often without being acknowledged.
    pub dead_letters: u64,
}

/// A durable queue with leases. All methods may be called concurrently.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Enqueues every body (any number; the adapter batches). Durable when it returns Ok.
    /// At-least-once: on error some bodies may have been enqueued; pushing again is safe
    /// because consumers are idempotent.
    async fn push(&self, bodies: &[String]) -> Result<()>;

    /// Takes up to `max` messages, each under a lease of `lease`. Waits up to `wait` for the
    /// first one; returns an empty vector when none came.
    async fn pull(&self, max: usize, lease: Duration, wait: Duration) -> Result<Vec<Delivery>>;

    /// Extends a held lease to `lease` from now. Fails with `Conflict` if the lease was lost
    /// (it expired and the message may be with someone else).
    async fn renew(&self, lease: &LeaseId, lease_for: Duration) -> Result<()>;

    /// Deletes the message for good. Idempotent: acking an unknown or expired lease is Ok
    /// (the work is idempotent, so a late ack is harmless).
    async fn ack(&self, lease: &LeaseId) -> Result<()>;

    /// Gives the message back at once, to be delivered again (a worker draining on SIGTERM).
    async fn release(&self, lease: &LeaseId) -> Result<()>;

    /// Approximate counts.
    async fn depth(&self) -> Result<QueueDepth>;

    /// Up to `max` bodies from the dead-letter queue, without taking them out of it (a
    /// peek: status uses it to say which jobs have dead segments). No order promised.
    async fn dead_letters(&self, max: usize) -> Result<Vec<String>>;
}
