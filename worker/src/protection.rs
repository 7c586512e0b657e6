//! ECS task scale-in protection: while a worker holds segments, it asks the ECS agent to
//! protect its task, so autoscaling does not stop it mid-page; when it is idle again it lifts
//! the protection, so scale-in can pick it. (Work is safe either way, as a stopped worker's
//! segments come back to others; protection saves redoing pages.)
//!
//! The agent's endpoint is `$ECS_AGENT_URI/task-protection/v1/state` (a plain-HTTP link-local
//! address inside the task): `PUT {"ProtectionEnabled": true, "ExpiresInMinutes": N}`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use shared::{Error, Result};

/// How long one protection lasts; renewed while busy, well before it expires.
const EXPIRES_MINUTES: u64 = 60;
const RENEW_AFTER: Duration = Duration::from_secs(20 * 60);

/// The protection state of this task, kept in step with whether the worker is busy.
pub struct TaskProtection {
    /// `host:port` and path of the agent's endpoint.
    addr: String,
    path: String,
    /// When protection was last turned on, while it is on.
    on_since: Option<Instant>,
}

impl TaskProtection {
    /// From the ECS agent's URI (`ECS_AGENT_URI`, which ECS sets in every task); `None`
    /// elsewhere, or when it is not a plain `http://host[:port]/path` URI.
    pub fn new(agent_uri: &str) -> Option<Self> {
        let rest = agent_uri.strip_prefix("http://")?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let addr = if host.contains(':') { host.to_string() } else { format!("{host}:80") };
        let path = format!("/{}/task-protection/v1/state", path.trim_end_matches('/')).replace("//", "/");
        Some(TaskProtection { addr, path, on_since: None })
    }

    /// Protects the task while `busy` (renewing it before it expires) and lifts protection
    /// once idle. Failures are logged: protection is an optimisation, never a reason to stop.
    pub async fn sync(&mut self, busy: bool) {
        let want = match (busy, self.on_since) {
            (true, None) => true,
            (true, Some(t)) if t.elapsed() >= RENEW_AFTER => true,
            (false, Some(_)) => false,
            _ => return,
        };
        match self.put(want).await {
            Ok(()) => self.on_since = want.then(Instant::now),
            Err(e) => tracing::warn!(error = %e, protect = want, "ECS task protection request failed"),
        }
    }

    async fn put(&self, on: bool) -> Result<()> {
        let body = match on {
            true => format!("{{\"ProtectionEnabled\":true,\"ExpiresInMinutes\":{EXPIRES_MINUTES}}}"),
            false => "{\"ProtectionEnabled\":false}".to_string(),
        };
        let io = |e: std::io::Error| Error::transient(format!("ECS agent at {}: {e}", self.addr));
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(&self.addr).await.map_err(io)?;
            let req = format!(
                "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.path,
                self.addr,
                body.len()
            );
            s.write_all(req.as_bytes()).await.map_err(io)?;
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.map_err(io)?;
            Ok::<_, Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .map_err(|_| Error::transient(format!("ECS agent at {}: no answer in 5 s", self.addr)))??;
        match answer.split_whitespace().nth(1) {
            Some(code) if code.starts_with('2') => Ok(()),
            _ => Err(Error::transient(format!(
                "ECS agent refused task protection: {}",
                answer.lines().next().unwrap_or("")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_the_agent_uri() {
        let p = TaskProtection::new("http://169.254.170.2/api/abc-123").unwrap();
        assert_eq!((p.addr.as_str(), p.path.as_str()), ("169.254.170.2:80", "/api/abc-123/task-protection/v1/state"));
        let p = TaskProtection::new("http://127.0.0.1:5123").unwrap();
        assert_eq!((p.addr.as_str(), p.path.as_str()), ("127.0.0.1:5123", "/task-protection/v1/state"));
        assert!(TaskProtection::new("https://x/y").is_none());
    }

    /// A fake agent records each request body; the worker's busy/idle changes turn
    /// protection on once, renew nothing within the hour, and off once.
    #[tokio::test]
    async fn protection_follows_busy_and_idle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/api/task", listener.local_addr().unwrap());
        let agent = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
            }
            seen
        });
        let mut p = TaskProtection::new(&uri).unwrap();
        p.sync(true).await;
        p.sync(true).await; // already on: no request
        p.sync(false).await;
        p.sync(false).await; // already off: no request
        let seen = agent.await.unwrap();
        assert!(seen[0].starts_with("PUT /api/task/task-protection/v1/state "), "{}", seen[0]);
        assert!(seen[0].ends_with("{\"ProtectionEnabled\":true,\"ExpiresInMinutes\":60}"), "{}", seen[0]);
        assert!(seen[1].ends_with("{\"ProtectionEnabled\":false}"), "{}", seen[1]);
    }
}
