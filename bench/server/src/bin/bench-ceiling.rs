//! bench-ceiling: the simplest fast S3-to-S3 copy, as a ceiling for bucketclone's numbers.
//! Lists every key of the source (flat, 1,000 a page), then CopyObject for each at high
//! concurrency over raw unsigned HTTP/1.1 (bench-server ignores authentication).
//! No verification, no state, no retries: what a clone costs at least on this server.
//!
//!   bench-ceiling copy   --endpoint http://127.0.0.1:9100 SRC DST [--concurrency 256]
//!   bench-ceiling verify --endpoint http://127.0.0.1:9100 SRC DST
//!       compares the two listings (keys, sizes, ETags); exit 1 when they differ.
//!   bench-ceiling mb|rb  --endpoint URL BUCKET   create / drop (with its content) a bucket.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Err = Box<dyn std::error::Error + Send + Sync>;
type Http = Client<HttpConnector, Empty<Bytes>>;

fn enc(s: &str, keep_slash: bool) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut o = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        o.push_str(&rest[..i]);
        let Some(j) = rest[i..].find(';') else { break };
        let ent = &rest[i + 1..i + j];
        match ent {
            "amp" => o.push('&'),
            "lt" => o.push('<'),
            "gt" => o.push('>'),
            "quot" => o.push('"'),
            "apos" => o.push('\''),
            e if e.starts_with("#x") => o.extend(u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32)),
            e if e.starts_with('#') => o.extend(e[1..].parse().ok().and_then(char::from_u32)),
            _ => o.push_str(&rest[i..=i + j]),
        }
        rest = &rest[i + j + 1..];
    }
    o.push_str(rest);
    o
}

fn tags<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let from = i + open.len();
        let Some(j) = rest[from..].find(&close) else { break };
        out.push(&rest[from..from + j]);
        rest = &rest[from + j + close.len()..];
    }
    out
}

async fn request(http: &Http, method: &str, uri: String, headers: &[(&str, String)]) -> Result<(u16, Bytes), Err> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let resp = http.request(b.body(Empty::new())?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// key -> (size, etag), the whole bucket.
async fn list_all(http: &Http, ep: &str, bucket: &str) -> Result<BTreeMap<String, (u64, String)>, Err> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut uri = format!("{ep}/{bucket}?list-type=2&max-keys=1000");
        if let Some(t) = &token {
            uri.push_str(&format!("&continuation-token={}", enc(t, false)));
        }
        let (st, body) = request(http, "GET", uri, &[]).await?;
        let xml = std::str::from_utf8(&body)?;
        if st != 200 {
            return Err(format!("list {bucket}: HTTP {st}: {xml}").into());
        }
        for c in tags(xml, "Contents") {
            let key = unescape(tags(c, "Key").first().ok_or("no Key")?);
            let size = tags(c, "Size").first().and_then(|s| s.parse().ok()).unwrap_or(0);
            let etag = tags(c, "ETag").first().map(|e| unescape(e)).unwrap_or_default();
            out.insert(key, (size, etag));
        }
        match tags(xml, "NextContinuationToken").first() {
            Some(t) if tags(xml, "IsTruncated").first() == Some(&"true") => token = Some(unescape(t)),
            _ => break,
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Err> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opt = |name: &str| -> Option<String> {
        let i = args.iter().position(|a| a == name)?;
        let v = args.get(i + 1).cloned();
        args.drain(i..(i + 2).min(args.len()));
        v
    };
    let ep = opt("--endpoint").or_else(|| std::env::var("AWS_ENDPOINT_URL").ok()).ok_or("--endpoint URL")?;
    let ep = ep.trim_end_matches('/').to_owned();
    let conc: usize = opt("--concurrency").map(|c| c.parse()).transpose()?.unwrap_or(256);
    let usage = "bench-ceiling copy|verify SRC DST | mb|rb BUCKET  [--endpoint URL] [--concurrency N]";
    let cmd = args.first().ok_or(usage)?.clone();

    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(conc).build(conn);

    match cmd.as_str() {
        "mb" | "rb" => {
            let b = args.get(1).ok_or(usage)?;
            let (st, body) =
                request(&http, if cmd == "mb" { "PUT" } else { "DELETE" }, format!("{ep}/{b}"), &[]).await?;
            if !(200..300).contains(&st) {
                return Err(format!("{cmd} {b}: HTTP {st}: {}", String::from_utf8_lossy(&body)).into());
            }
        }
        "copy" => {
            let (src, dst) = (args.get(1).ok_or(usage)?.clone(), args.get(2).ok_or(usage)?.clone());
            let t = std::time::Instant::now();
            let keys: Vec<String> = list_all(&http, &ep, &src).await?.into_keys().collect();
            let listed = t.elapsed();
            let keys = Arc::new(keys);
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..conc {
                let (http, keys, next, ep, src, dst) =
                    (http.clone(), keys.clone(), next.clone(), ep.clone(), src.clone(), dst.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(k) = keys.get(i) else { return Ok::<(), Err>(()) };
                        let uri = format!("{ep}/{dst}/{}", enc(k, true));
                        let cs = format!("/{src}/{}", enc(k, true));
                        let (st, body) = request(&http, "PUT", uri, &[("x-amz-copy-source", cs)]).await?;
                        if st != 200 {
                            return Err(format!("copy {k}: HTTP {st}: {}", String::from_utf8_lossy(&body)).into());
                        }
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            eprintln!("copied {} objects: listed in {listed:.2?}, all in {:.2?}", keys.len(), t.elapsed());
        }
        "verify" => {
            let (src, dst) = (args.get(1).ok_or(usage)?, args.get(2).ok_or(usage)?);
            let (a, b) = tokio::try_join!(list_all(&http, &ep, src), list_all(&http, &ep, dst))?;
            let bytes: u64 = a.values().map(|v| v.0).sum();
            if a != b {
                let missing = a.keys().filter(|k| !b.contains_key(*k)).count();
                let extra = b.keys().filter(|k| !a.contains_key(*k)).count();
                let differ = a.iter().filter(|(k, v)| b.get(*k).is_some_and(|w| w != *v)).count();
                println!("MISMATCH src={} dst={} missing={missing} extra={extra} differ={differ}", a.len(), b.len());
                std::process::exit(1);
            }
            println!("OK {} objects {bytes} bytes", a.len());
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
