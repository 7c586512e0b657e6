//! Per-side connections: each location reaches its own S3 service with its own profile,
//! region and endpoint. Two emulators stand for two services (MinIO and AWS, or two
//! accounts): a bucket exists on one only, so a clone between them must stream (a
//! server-side copy from the destination's service cannot see the source), and two buckets
//! of the same name on different services are two buckets, not an overlap.

use std::path::Path;
use std::time::Duration;

use bucketclone_tests::procs::{SecondMoto, Service, seed_bucket};
use bucketclone_tests::{bin, emulator_env, endpoint, listing, moto, report, unique};
use shared::backend::aws::{AwsContext, s3::S3Store};
use shared::model::JobState;

/// AWS config and credentials files with two profiles of different keys, `src` and `dst`.
fn profiles(dir: &Path) -> Vec<(&'static str, String)> {
    let config = dir.join("config");
    let creds = dir.join("credentials");
    std::fs::write(&config, "[profile src]\nregion = us-east-1\n[profile dst]\nregion = us-east-1\n").unwrap();
    std::fs::write(
        &creds,
        "[src]\naws_access_key_id = SOURCEKEY\naws_secret_access_key = s\n\
         [dst]\naws_access_key_id = DESTKEY\naws_secret_access_key = d\n",
    )
    .unwrap();
    vec![
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
    ]
}

/// `bucketclone args...` with no endpoint, keys or region in the environment: only the
/// per-side flags and the profiles in `files` say where and as whom.
fn run_bare(args: &[&str], files: &[(&'static str, String)]) -> std::process::Output {
    let mut c = bin();
    c.args(args).env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, _) in emulator_env() {
        c.env_remove(k);
    }
    c.env_remove("AWS_PROFILE").envs(files.iter().cloned());
    let out = c.output().expect("spawn bucketclone");
    eprintln!("$ bucketclone {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_between_two_services_with_their_own_profiles_streams_and_verifies() {
    let first = moto().await;
    let second = SecondMoto::start();
    let other = AwsContext::for_emulator(&second.url).await;
    // The same bucket name on both services.
    let bucket = unique("data");
    let objects =
        (0..40).map(|i| (format!("p{}/obj {i}", i % 5), format!("body {i}").repeat(i + 1).into_bytes())).collect();
    let (count, bytes) = seed_bucket(&first, &bucket, objects).await;
    S3Store::create_bucket(&other, &bucket).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let files = profiles(dir.path());
    let state = dir.path().join("state.sqlite");
    let url = format!("s3://{bucket}");
    // A host name, not an IP, so path-style addressing is the connection's doing.
    let (first_url, second_url) =
        (endpoint().replace("127.0.0.1", "localhost"), second.url.replace("127.0.0.1", "localhost"));
    let args = |extra: &[&str]| {
        let mut a = vec!["clone", url.as_str(), url.as_str(), "--json", "--state"];
        a.push(state.to_str().unwrap());
        a.extend_from_slice(&["--source-endpoint-url", &first_url]);
        a.extend_from_slice(&["--destination-endpoint-url", &second_url]);
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let with_profiles = args(&["--source-profile", "src", "--destination-profile", "dst"]);
    let with_profiles: Vec<&str> = with_profiles.iter().map(String::as_str).collect();

    let out = run_bare(&with_profiles, &files);
    assert_eq!(out.status.code(), Some(0), "the clone verifies");
    let r = report(&out);
    assert_eq!((r["copied"]["objects"].as_i64(), r["verified"].as_i64()), (Some(count as i64), Some(count as i64)));
    assert_eq!(r["source"]["bytes"].as_i64(), Some(bytes as i64));
    let (s, d) = (S3Store::new(&first, &bucket), S3Store::new(&other, &bucket));
    assert_eq!(listing(&s).await, listing(&d).await, "the destination service holds the source's objects");

    let again = run_bare(&with_profiles, &files);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(report(&again)["copied"]["objects"].as_i64(), Some(0), "a rerun copies nothing");

    // A profile the files do not hold stops the job up front, naming it.
    let typo = args(&["--source-profile", "nosuch", "--destination-profile", "dst"]);
    let out = run_bare(&typo.iter().map(String::as_str).collect::<Vec<_>>(), &files);
    assert_eq!(out.status.code(), Some(2), "an unknown profile is an input error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"), "the error names the profile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_in_another_region_gets_a_client_for_its_region() {
    let ctx = moto().await;
    let bucket = unique("far");
    let cfg = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
        .build();
    ctx.s3().create_bucket().bucket(&bucket).create_bucket_configuration(cfg).send().await.unwrap();
    let region = |s: &S3Store| s.client.config().region().map(|r| r.to_string());

    let found = S3Store::open(&ctx, &bucket, false).await.unwrap();
    assert_eq!(region(&found).as_deref(), Some("eu-west-1"), "the bucket's own region is looked up");
    let fixed = S3Store::open(&ctx, &bucket, true).await.unwrap();
    assert_eq!(region(&fixed).as_deref(), Some("us-east-1"), "a region the location names is kept");
    let missing = S3Store::open(&ctx, &unique("nosuch"), false).await.unwrap();
    assert_eq!(region(&missing).as_deref(), Some("us-east-1"), "no region to learn: the context's, check() reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reaches_only_the_endpoints_its_configuration_allows() {
    let control = moto().await;
    let second = SecondMoto::start();
    let other = AwsContext::for_emulator(&second.url).await;
    let (src, dst) = (unique("src"), unique("dst"));
    let objects = (0..12).map(|i| (format!("k{i}"), vec![b'x'; i * 100])).collect();
    let (count, _) = seed_bucket(&other, &src, objects).await;
    S3Store::create_bucket(&control, &dst).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("service.toml");
    std::fs::write(&config, format!("allowed_endpoints = [\"{}\"]\n", second.url)).unwrap();
    let env = vec![("BUCKETCLONE_CONFIG", config.display().to_string())];
    let mut svc = Service::start_with(&control, &unique("conn"), env).await;
    svc.start_worker(&[], None);

    let refused = unique("job");
    let elsewhere = "http://127.0.0.1:1";
    svc.request(serde_json::json!({"id": refused, "source": {"name": src, "endpoint_url": elsewhere},
                                    "destination": {"name": dst}}))
        .await;
    let job = svc.wait(&refused, Duration::from_secs(60)).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.message.as_deref().unwrap_or_default().contains("allowed_endpoints"), "{:?}", job.message);

    let id = unique("job");
    svc.request(serde_json::json!({"id": id, "source": {"name": src, "endpoint_url": second.url},
                                    "destination": {"name": dst}}))
        .await;
    let job = svc.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.state, JobState::Verified, "{:?}", job.message);
    assert_eq!((job.counters.copied_objects, job.counters.verified_objects), (count as i64, count as i64));
    let (s, d) = (S3Store::new(&other, &src), S3Store::new(&control, &dst));
    assert_eq!(listing(&s).await, listing(&d).await);
    svc.stop();
}
