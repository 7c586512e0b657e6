//! `AWS_CA_BUNDLE`: an S3 endpoint behind a private certificate authority (a MinIO or a
//! proxy inside a company) is reached when the bundle names the CA, by the SDK's requests
//! (listings, uploads) and by the lean CopyObject client alike; without it the TLS
//! handshake fails and the job says so; a bundle that cannot be read stops the command
//! before any work, naming the file. The CA and the server's certificate are made here
//! with `openssl`, and moto serves HTTPS with them.

use std::path::Path;
use std::process::Command;

use bucketclone_tests::procs::SecondMoto;
use bucketclone_tests::{bin, emulator_env, logged, report, unique};

/// A CA and a certificate for 127.0.0.1 it signed, in `dir`: (ca.pem, server.pem, server.key).
fn make_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed for this test (scripts/test.sh installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bucketclone test CA"];
    openssl(&[&["req", "-x509"][..], &ec, &ca].concat());
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Creates `bucket` on the HTTPS emulator, trusting `ca` (moto takes unsigned requests).
fn create_bucket(url: &str, ca: &Path, bucket: &str) {
    let python = std::env::var("BUCKETCLONE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import ssl, sys, urllib.request as u\n\
                  ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
                  u.urlopen(u.Request(sys.argv[1], method='PUT'), context=ctx).read()\n";
    let out = Command::new(python)
        .args(["-c", script, &format!("{url}/{bucket}"), &ca.display().to_string()])
        .output()
        .expect("python3");
    assert!(out.status.success(), "creating {bucket}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `bucketclone args` against the HTTPS emulator, with `ca_bundle` as AWS_CA_BUNDLE, and a
/// state file of its own.
fn run(url: &str, ca_bundle: Option<&str>, args: &[&str]) -> std::process::Output {
    run_env(url, ca_bundle, args, &[])
}

fn run_env(url: &str, ca_bundle: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let state = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .arg("--state")
        .arg(state.path().join("state.sqlite"))
        .envs(emulator_env())
        .env("AWS_ENDPOINT_URL", url)
        .env("AWS_MAX_ATTEMPTS", "2");
    match ca_bundle {
        Some(b) => cmd.env("AWS_CA_BUNDLE", b),
        None => cmd.env_remove("AWS_CA_BUNDLE"),
    };
    logged(&mut cmd, args)
}

#[test]
fn an_endpoint_behind_a_private_ca_is_reached_with_aws_ca_bundle_and_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    let moto = SecondMoto::start_tls(&cert, &key);
    let (up, copy, refused) = (unique("up"), unique("copy"), unique("refused"));
    for b in [&up, &copy, &refused] {
        create_bucket(&moto.url, &ca, b);
    }
    let local = dir.path().join("data");
    for i in 0..12 {
        std::fs::create_dir_all(local.join(format!("p{}", i % 3))).unwrap();
        std::fs::write(local.join(format!("p{}/f{i}", i % 3)), format!("body {i}").repeat(i + 1)).unwrap();
    }
    let local = local.display().to_string();
    let ca = ca.display().to_string();

    // Uploads and listings go through the SDK's client; S3 to S3, the copies through the
    // lean client: both must trust the bundle.
    let out = run(&moto.url, Some(&ca), &["clone", &local, &format!("s3://{up}/"), "--json"]);
    assert!(out.status.success());
    let r = report(&out);
    assert_eq!((r["state"].as_str(), r["copied"]["objects"].as_i64()), (Some("verified"), Some(12)), "{r}");
    let out = run(&moto.url, Some(&ca), &["clone", &format!("s3://{up}/"), &format!("s3://{copy}/"), "--json"]);
    assert!(out.status.success());
    let r = report(&out);
    assert_eq!((r["state"].as_str(), r["verified"].as_i64()), (Some("verified"), Some(12)), "{r}");

    // The bundle keeps the SDK's proxy settings: through a proxy that is down, the same
    // clone fails (a client built without them would go straight to the endpoint).
    let proxied = [("HTTPS_PROXY", "http://127.0.0.1:9"), ("NO_PROXY", "")];
    let out = run_env(&moto.url, Some(&ca), &["clone", &local, &format!("s3://{refused}/"), "--json"], &proxied);
    assert!(!out.status.success(), "requests must go through HTTPS_PROXY");

    // Without the bundle the server's certificate is not trusted: nothing is verified.
    let out = run(&moto.url, None, &["clone", &local, &format!("s3://{refused}/"), "--json"]);
    assert!(!out.status.success(), "a clone to an untrusted endpoint must fail");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("\"verified\""), "{text}");
    assert!(text.contains("AWS_CA_BUNDLE"), "the error says what to do: {text}");

    // A bundle that is not there stops the command at once, by name.
    let missing = dir.path().join("no-such-ca.pem").display().to_string();
    let out = run(&moto.url, Some(&missing), &["clone", &local, &format!("s3://{refused}/"), "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_CA_BUNDLE") && err.contains("no-such-ca.pem"), "{err}");
}
