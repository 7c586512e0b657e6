//! Job control: pause, resume and cancel are conditional state changes that keep the
//! counters, take a paused job out of `running()`, and never revive a finished job.

use std::sync::Arc;

use super::{completion, counters, create, job_id, page_delta, ranges};
use crate::jobstore::{JobStore, Recorded};
use crate::model::{JobControl, JobState};

async fn state(store: &Arc<dyn JobStore>, job: &str) -> JobState {
    store.job(job).await.expect("job() failed").expect("the job exists").state
}

async fn is_running(store: &Arc<dyn JobStore>, job: &str) -> bool {
    store.running().await.expect("running() failed").iter().any(|j| j.spec.id == job)
}

/// Pause holds a job out of `running()` while completions still count on it and
/// `finalize` leaves it alone; resume brings it back and it settles as usual.
pub async fn pause_keeps_counting_and_resume_settles(store: Arc<dyn JobStore>) {
    let id = job_id("pause");
    let first = ranges("p", 2);
    create(&store, &id, &first).await;
    assert_eq!(store.control(&id, JobControl::Pause).await.unwrap(), Some(JobState::Paused));
    assert_eq!(state(&store, &id).await, JobState::Paused);
    assert!(!is_running(&store, &id).await, "a paused job is not running()");
    assert_eq!(store.control(&id, JobControl::Pause).await.unwrap(), Some(JobState::Paused), "pausing twice");

    // Pages in progress when it was paused still finish and count.
    for r in &first {
        let c = completion(&id, r, page_delta(3, 30), vec![]);
        assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Now);
    }
    let before = counters(&store, &id).await;
    assert_eq!((before.outstanding, before.copied_objects), (0, 6));
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Paused), "a paused job is not settled");

    assert_eq!(store.control(&id, JobControl::Resume).await.unwrap(), Some(JobState::Running));
    assert!(is_running(&store, &id).await, "a resumed job is running() again");
    assert_eq!(counters(&store, &id).await, before, "pause and resume keep the counters");
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Verified));
    for action in [JobControl::Pause, JobControl::Resume, JobControl::Cancel] {
        assert_eq!(store.control(&id, action).await.unwrap(), Some(JobState::Verified), "{action:?} on a finished job");
    }
}

/// Cancel ends a running or paused job for good with its counters; nothing revives it.
pub async fn cancel_is_final_and_keeps_the_counts(store: Arc<dyn JobStore>) {
    for paused_first in [false, true] {
        let id = job_id("cancel");
        let first = ranges("c", 2);
        create(&store, &id, &first).await;
        let c = completion(&id, &first[0], page_delta(4, 40), vec![]);
        store.complete_segment(&c).await.unwrap();
        if paused_first {
            store.control(&id, JobControl::Pause).await.unwrap();
        }
        let before = counters(&store, &id).await;
        assert_eq!(store.control(&id, JobControl::Cancel).await.unwrap(), Some(JobState::Cancelled));
        assert!(!is_running(&store, &id).await, "a cancelled job is not running()");
        for action in [JobControl::Resume, JobControl::Pause, JobControl::Cancel] {
            assert_eq!(store.control(&id, action).await.unwrap(), Some(JobState::Cancelled), "{action:?} after cancel");
        }
        // A page that was in progress still records its work, and the job stays cancelled.
        let late = completion(&id, &first[1], page_delta(1, 10), vec![]);
        assert_eq!(store.complete_segment(&late).await.unwrap(), Recorded::Now);
        assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Cancelled));
        let after = counters(&store, &id).await;
        assert_eq!((after.copied_objects, after.outstanding), (before.copied_objects + 1, 0));
        assert_eq!(state(&store, &id).await, JobState::Cancelled);
    }
    assert_eq!(store.control(&job_id("nosuch"), JobControl::Cancel).await.unwrap(), None, "an unknown job");
}
