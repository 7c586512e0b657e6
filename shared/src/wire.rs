//! Message formats on the queues, serde JSON. Every message a component writes carries a
//! version field `v`; readers accept messages without one as version 1 (the original,
//! minimal clone request had none).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Connection, JobControl, JobOptions, JobSpec, KeyRange, Location, Scheme};

/// The current version of every message written.
pub const WIRE_VERSION: u32 = 1;

/// One side of a clone request. The original format names a bucket: `{"name": "BUCKET"}`.
/// Extensions: `"prefix"` under that bucket, or instead `"url"` (`s3://b/p`) or `"path"`
/// (a local directory, for one-machine use); and for a bucket, how to reach it:
/// `"profile"`, `"region"`, `"endpoint_url"`, `"path_style"`, `"request_payer"` (see
/// [`Connection`]; a service accepts profiles and endpoints only from its allow-lists).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub request_payer: bool,
}

impl Endpoint {
    fn location(&self, side: &str) -> Result<Location> {
        let ctx = |e: Error| e.context(side);
        let loc = match (&self.name, &self.url, &self.path) {
            (Some(n), None, None) => Location::s3(n, self.prefix.clone().unwrap_or_default()).map_err(ctx)?,
            (None, Some(u), None) if self.prefix.is_none() => Location::parse(u).map_err(ctx)?,
            (None, None, Some(p)) if self.prefix.is_none() => Location::local(p).map_err(ctx)?,
            _ => {
                return Err(Error::invalid(format!(
                    "{side}: give exactly one of \"name\" (with optional \"prefix\"), \"url\" or \"path\""
                )));
            }
        };
        let conn = Connection {
            profile: self.profile.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            path_style: self.path_style,
            request_payer: self.request_payer,
        };
        loc.with_conn(conn).map_err(ctx)
    }

    /// The endpoint naming `loc`, in the most compact form.
    pub fn from_location(loc: &Location) -> Self {
        let c = &loc.conn;
        let conn = Endpoint {
            profile: c.profile.clone(),
            region: c.region.clone(),
            endpoint_url: c.endpoint_url.clone(),
            path_style: c.path_style,
            request_payer: c.request_payer,
            ..Default::default()
        };
        match loc.scheme {
            Scheme::S3 => Endpoint {
                name: Some(loc.root.clone()),
                prefix: (!loc.prefix.is_empty()).then(|| loc.prefix.clone()),
                ..conn
            },
            Scheme::Local => Endpoint { path: Some(loc.root.clone()), ..conn },
        }
    }
}

/// A clone request, as sent to the coordinator's request queue.
///
/// Minimal (original) form: `{"id": "job-1", "source": {"name": "a"}, "destination": {"name": "b"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    #[serde(default = "one")]
    pub v: u32,
    pub id: String,
    pub source: Endpoint,
    pub destination: Endpoint,
    #[serde(default)]
    pub options: JobOptions,
}

fn one() -> u32 {
    1
}

impl CloneRequest {
    /// Parses and validates a request body into the job it asks for. Every failure is
    /// `Invalid` with a message fit for the job's status.
    pub fn parse(body: &str) -> Result<JobSpec> {
        let req: CloneRequest =
            serde_json::from_str(body).map_err(|e| Error::invalid(format!("malformed clone request: {e}")))?;
        req.into_spec()
    }

    /// Validates the request into a job spec (no I/O).
    pub fn into_spec(self) -> Result<JobSpec> {
        if self.v != WIRE_VERSION {
            return Err(Error::invalid(format!("unsupported request version {}", self.v)));
        }
        let spec = JobSpec {
            id: self.id,
            source: self.source.location("source")?,
            destination: self.destination.location("destination")?,
            options: self.options,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// The request that asks for `spec`.
    pub fn from_spec(spec: &JobSpec) -> Self {
        CloneRequest {
            v: WIRE_VERSION,
            id: spec.id.clone(),
            source: Endpoint::from_location(&spec.source),
            destination: Endpoint::from_location(&spec.destination),
            options: spec.options.clone(),
        }
    }
}

/// A control request on the request queue: `{"action": "cancel", "id": "job-1"}` (or
/// `"pause"`, `"resume"`; `"v": 1` optional). See [`JobControl`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlRequest {
    #[serde(default = "one")]
    pub v: u32,
    pub action: JobControl,
    pub id: String,
}

/// What one message on the request queue asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A new job (a [`CloneRequest`]).
    Clone(Box<JobSpec>),
    /// Pause, resume or cancel a job (a [`ControlRequest`]).
    Control { id: String, action: JobControl },
}

impl Request {
    /// A control request when the body has an `"action"`, else a clone request. Every
    /// failure is `Invalid` with a message fit for the job's status.
    pub fn parse(body: &str) -> Result<Request> {
        let is_control = serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v.get("action").is_some());
        if !is_control {
            return CloneRequest::parse(body).map(|s| Request::Clone(Box::new(s)));
        }
        let c: ControlRequest =
            serde_json::from_str(body).map_err(|e| Error::invalid(format!("malformed control request: {e}")))?;
        if c.v != WIRE_VERSION {
            return Err(Error::invalid(format!("unsupported request version {}", c.v)));
        }
        crate::model::validate_job_id(&c.id)?;
        Ok(Request::Control { id: c.id, action: c.action })
    }
}

/// A segment of work on the segment queue: one key range of one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMessage {
    #[serde(default = "one")]
    pub v: u32,
    pub job: String,
    #[serde(flatten)]
    pub range: KeyRange,
    /// The job found its destination empty when it began (a clone), and this message is
    /// one the job sent for a range no attempt had worked: its first delivery may copy the
    /// page without listing the destination first (see [`SegmentMessage::copy_blind`]).
    /// Absent means false, the safe reading: a message a recovery path sends again (a
    /// redrive, a resume) never says it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
}

impl SegmentMessage {
    /// A message for `range` that says nothing about the destination: redrives, resumes.
    pub fn new(job: &str, range: KeyRange) -> Self {
        SegmentMessage { v: WIRE_VERSION, job: job.to_string(), range, fresh: false }
    }

    /// A message for a range no attempt has worked yet, of a job that found its
    /// destination empty when `fresh` (a job's first segments, and the children of a page
    /// of such a message).
    pub fn first(job: &str, range: KeyRange, fresh: bool) -> Self {
        SegmentMessage { fresh, ..Self::new(job, range) }
    }

    /// Whether the delivery (`deliveries` as the queue counts them) may copy its page
    /// without listing the destination first: only the first delivery of a fresh message.
    /// Any delivery after it may follow an attempt that copied some of the page before it
    /// died, so it lists, and skips what is there. Only a matter of cost either way: the
    /// destination is always listed after the copies, and the page verified against that.
    pub fn copy_blind(&self, deliveries: u32) -> bool {
        self.fresh && deliveries == 1
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a segment message always serialises")
    }
    pub fn parse(body: &str) -> Result<Self> {
        let m: SegmentMessage =
            serde_json::from_str(body).map_err(|e| Error::invalid(format!("malformed segment message: {e}")))?;
        if m.v != WIRE_VERSION {
            return Err(Error::invalid(format!("unsupported segment message version {}", m.v)));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_original_minimal_request() {
        let spec =
            CloneRequest::parse(r#"{"id": "job-1", "source": {"name": "src-b"}, "destination": {"name": "dst-b"}}"#)
                .unwrap();
        assert_eq!(spec.id, "job-1");
        assert_eq!(spec.source, Location::s3("src-b", "").unwrap());
        assert_eq!(spec.destination.root, "dst-b");
        assert_eq!(spec.options, JobOptions::default());
    }

    #[test]
    fn accepts_extensions_and_round_trips() {
        let body = r#"{"v":1,"id":"j","source":{"name":"a-b","prefix":"x/y"},"destination":{"url":"s3://c-d/z"},
                      "options":{"mode":"verify-only","page_size":10,"filters":[{"exclude":"*"},{"include":"*.log"}]}}"#;
        let spec = CloneRequest::parse(body).unwrap();
        assert_eq!(spec.source.prefix, "x/y/");
        assert_eq!(spec.destination.prefix, "z/");
        assert_eq!(spec.options.page_size, 10);
        use crate::filter::Filter;
        assert_eq!(spec.options.filters, [Filter::Exclude("*".into()), Filter::Include("*.log".into())]);
        let empty = body.replace("*.log", "");
        assert!(CloneRequest::parse(&empty).unwrap_err().to_string().contains("empty pattern"));
        let again = CloneRequest::parse(&serde_json::to_string(&CloneRequest::from_spec(&spec)).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn each_side_can_name_its_own_connection() {
        let body = r#"{"id":"j","source":{"name":"data","endpoint_url":"http://minio:9000","profile":"minio"},
                      "destination":{"name":"data","region":"eu-west-1","request_payer":true}}"#;
        let spec = CloneRequest::parse(body).unwrap();
        assert_eq!(spec.source.conn.endpoint_url.as_deref(), Some("http://minio:9000"));
        assert_eq!(spec.source.conn.profile.as_deref(), Some("minio"));
        assert_eq!(spec.destination.conn.region.as_deref(), Some("eu-west-1"));
        assert!(spec.destination.conn.request_payer && !spec.source.conn.request_payer);
        let json = serde_json::to_string(&CloneRequest::from_spec(&spec)).unwrap();
        assert_eq!(CloneRequest::parse(&json).unwrap(), spec);
        // A side without a connection serialises as before.
        let plain = CloneRequest::parse(r#"{"id":"j","source":{"name":"a-b"},"destination":{"name":"c-d"}}"#).unwrap();
        assert_eq!(
            serde_json::to_value(&plain.source).unwrap(),
            serde_json::json!({"scheme":"s3","root":"a-b","prefix":""})
        );
        for (body, needle) in [
            (
                r#"{"id":"j","source":{"path":"/tmp/x","region":"eu-west-1"},"destination":{"name":"c-d"}}"#,
                "S3 locations only",
            ),
            (
                r#"{"id":"j","source":{"name":"a-b","endpoint_url":"ftp://x"},"destination":{"name":"c-d"}}"#,
                "endpoint URL",
            ),
        ] {
            let err = CloneRequest::parse(body).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("source"), "{body}: {err}");
        }
    }

    #[test]
    fn rejects_bad_requests_with_a_clear_message() {
        for (body, needle) in [
            ("not json", "malformed"),
            (r#"{"id":"j","source":{"name":"a-b"}}"#, "destination"),
            (r#"{"id":"j","source":{"name":"a-b"},"destination":{"name":"a-b","prefix":"backup"}}"#, "overlaps"),
            (r#"{"id":"j j","source":{"name":"a-b"},"destination":{"name":"c-d"}}"#, "job id"),
            (r#"{"id":"j","source":{"name":"a-b","url":"s3://x"},"destination":{"name":"c-d"}}"#, "exactly one"),
            (r#"{"id":"j","source":{"name":"a-b"},"destination":{"name":"c-d"},"extra":1}"#, "unknown field"),
        ] {
            let err = CloneRequest::parse(body).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{body}: {err:?}");
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn control_requests_are_told_apart_from_clone_requests() {
        assert_eq!(
            Request::parse(r#"{"action": "cancel", "id": "job-1"}"#).unwrap(),
            Request::Control { id: "job-1".into(), action: JobControl::Cancel }
        );
        let pause = serde_json::to_string(&ControlRequest { v: 1, action: JobControl::Pause, id: "j".into() }).unwrap();
        assert_eq!(Request::parse(&pause).unwrap(), Request::Control { id: "j".into(), action: JobControl::Pause });
        let clone = r#"{"id": "j", "source": {"name": "a-b"}, "destination": {"name": "c-d"}}"#;
        assert!(matches!(Request::parse(clone).unwrap(), Request::Clone(s) if s.id == "j"));
        for (body, needle) in [
            (r#"{"action": "delete", "id": "j"}"#, "malformed control request"),
            (r#"{"action": "cancel"}"#, "malformed control request"),
            (r#"{"action": "cancel", "id": "j j"}"#, "job id"),
            (r#"{"action": "cancel", "id": "j", "v": 2}"#, "version"),
        ] {
            let e = Request::parse(body).unwrap_err();
            assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn segment_messages_round_trip() {
        let m = SegmentMessage::new("j", KeyRange { start_after: "a b".into(), end: Some("z".into()) });
        let json = m.to_json();
        assert_eq!(SegmentMessage::parse(&json).unwrap(), m);
        assert!(SegmentMessage::parse(r#"{"job":"j"}"#).unwrap().range == KeyRange::all());
        assert!(!json.contains("fresh"), "the default is not written: {json}");
        let fresh = SegmentMessage::first("j", KeyRange::all(), true);
        assert_eq!(SegmentMessage::parse(&fresh.to_json()).unwrap(), fresh);
        assert!(fresh.copy_blind(1) && !fresh.copy_blind(2), "only a first delivery skips the listing");
        assert!(!m.copy_blind(1), "a message that does not say fresh never does");
    }
}
