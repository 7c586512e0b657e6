//! Local sources as a user meets them, through the real program: every entry a clone does
//! not copy is a finding (or, asked for, a reported skip), never a silent "verified"; and
//! locations are checked as given: `..` and symlinks seen through, nothing created by
//! commands that only read, a missing bucket or directory exit 2 in every command.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use bucketclone_tests::{bin, report, run, tree, write_tree};

/// A temporary directory with a source `src` holding two ordinary files.
struct Bed {
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = BTreeMap::from([("a".to_string(), b"alpha".to_vec()), ("z/last".to_string(), b"zeta".to_vec())]);
        write_tree(&dir.path().join("src"), &files);
        Bed { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn p(&self, rel: &str) -> String {
        self.path(rel).to_str().unwrap().to_string()
    }
    /// `bucketclone <cmd> src dst --state ... <extra>` over this bed.
    fn job(&self, cmd: &str, extra: &[&str]) -> Output {
        let (src, dst, state) = (self.p("src"), self.p("dst"), self.p("state.sqlite"));
        let mut args = vec![cmd, src.as_str(), dst.as_str(), "--state", state.as_str(), "--workers", "1"];
        args.extend_from_slice(extra);
        run(&args)
    }
    /// The findings of the last job that wrote `findings.jsonl`.
    fn findings(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path("findings.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The (key, detail) of every `uncopyable` finding.
fn uncopyable(findings: &[serde_json::Value]) -> Vec<(String, String)> {
    findings
        .iter()
        .filter(|f| f["kind"] == "uncopyable")
        .map(|f| (f["key"].as_str().unwrap().to_string(), f["detail"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn a_file_name_that_is_not_utf8_ends_the_clone_mismatch_with_a_finding_naming_it() {
    let bed = Bed::new();
    std::fs::write(bed.path("src").join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name").unwrap();
    let report_path = bed.p("findings.jsonl");
    let out = bed.job("clone", &["--json", "--report", &report_path]);
    assert_eq!(out.status.code(), Some(1), "an entry not copied is a difference");
    let r = report(&out);
    assert_eq!(r["state"], "mismatch");
    assert_eq!(r["differences"]["uncopyable"], 1);
    assert_eq!(r["copied"]["objects"], 2);
    let found = uncopyable(&bed.findings());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "caf\u{FFFD}.txt");
    assert!(found[0].1.contains("not UTF-8") && found[0].1.contains(r"caf\xe9.txt"), "{found:?}");
    assert_eq!(tree(&bed.path("dst")).keys().collect::<Vec<_>>(), ["a", "z/last"]);
}

#[test]
fn with_skip_uncopyable_the_same_clone_is_verified_and_says_what_it_skipped() {
    let bed = Bed::new();
    std::fs::write(bed.path("src").join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1 name").unwrap();
    let out = bed.job("clone", &["--skip-uncopyable"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out).to_lowercase();
    assert!(text.contains("verified, 1 skipped (uncopyable)"), "{text}");
    // The skip is still named among the findings printed.
    assert!(stderr(&out).contains("caf\u{FFFD}.txt"), "{}", stderr(&out));
}

#[test]
fn a_symlinked_directory_is_an_uncopyable_finding_and_nothing_outside_the_root_is_read() {
    let bed = Bed::new();
    let outside = bed.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not part of the source").unwrap();
    std::os::unix::fs::symlink(&outside, bed.path("src/linked")).unwrap();
    // A symlink to a file is copied as its target's content (the documented policy).
    std::os::unix::fs::symlink(bed.path("src/a"), bed.path("src/a-link")).unwrap();
    let report_path = bed.p("findings.jsonl");
    let out = bed.job("clone", &["--json", "--report", &report_path]);
    assert_eq!(out.status.code(), Some(1));
    let found = uncopyable(&bed.findings());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "linked");
    assert!(found[0].1.contains("symlink to a directory"), "{found:?}");
    let dst = tree(&bed.path("dst"));
    assert_eq!(dst.keys().collect::<Vec<_>>(), ["a", "a-link", "z/last"]);
    assert_eq!(dst["a-link"], b"alpha");
}

#[test]
fn a_name_with_the_reserved_temp_prefix_in_the_source_is_a_finding() {
    let bed = Bed::new();
    std::fs::write(bed.path("src/z/.bucketclone-tmp-0123"), b"left by an interrupted copy").unwrap();
    let report_path = bed.p("findings.jsonl");
    let out = bed.job("clone", &["--json", "--report", &report_path]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report(&out)["state"], "mismatch");
    let found = uncopyable(&bed.findings());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "z/.bucketclone-tmp-0123");
    assert!(found[0].1.contains("reserved"), "{found:?}");
}

#[test]
fn stats_counts_and_names_uncopyable_entries_apart_from_objects() {
    let bed = Bed::new();
    std::fs::write(bed.path("src").join(OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
    let out = run(&["stats", &bed.p("src"), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["objects"].as_u64(), doc["uncopyable"].as_u64()), (Some(2), Some(1)));
    assert_eq!(doc["uncopyable_entries"][0]["key"], "caf\u{FFFD}");
    let out = run(&["stats", &bed.p("src")]);
    assert!(
        stdout(&out).contains("uncopyable: 1 entries") && stdout(&out).contains("caf\u{FFFD}: "),
        "{}",
        stdout(&out)
    );
}

/// Runs `bucketclone args` in `cwd`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    let out = bin().args(args).current_dir(cwd).output().unwrap();
    eprintln!("$ (in {}) bucketclone {}\n{}{}", cwd.display(), args.join(" "), stdout(&out), stderr(&out));
    out
}

#[test]
fn a_destination_inside_its_source_is_refused_through_dot_dot_and_symlinks() {
    let bed = Bed::new();
    std::fs::create_dir(bed.path("x")).unwrap();
    std::os::unix::fs::symlink(bed.path("src"), bed.path("link")).unwrap();
    let before = tree(&bed.path("src"));
    let state = bed.p("state.sqlite");
    for (src, dst) in [("./x/../src", "./src/backup"), ("src", "link/backup"), ("link/z", "src")] {
        for cmd in [&["clone"][..], &["move"], &["move", "--dry-run"]] {
            let mut args = cmd.to_vec();
            args.extend([src, dst, "--state", state.as_str()]);
            let out = run_in(bed.dir.path(), &args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(stderr(&out).contains("overlaps"), "{args:?}: {}", stderr(&out));
        }
    }
    assert_eq!(tree(&bed.path("src")), before, "nothing written in the source");
    assert!(!bed.path("src/backup").exists());
}

#[test]
fn a_missing_bucket_or_directory_is_exit_2_in_every_command_and_nothing_is_created() {
    let bed = Bed::new();
    let (src, missing, state) = (bed.p("src"), bed.p("nope"), bed.p("state.sqlite"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["clone", &missing, "dst-never"],
        vec!["verify", &src, &missing],
        vec!["verify", &missing, &src],
        vec!["move", &missing, "dst-never"],
        vec!["move", &missing, "dst-never", "--dry-run"],
        vec!["stats", &missing],
        vec!["stats", &missing, "--json"],
    ];
    for mut args in cases {
        if args[0] != "stats" {
            args.extend(["--state", state.as_str()]);
        }
        let out = run_in(bed.dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains("does not exist"), "{args:?}: {err}");
        assert!(!stdout(&out).contains("0 objects"), "{args:?}: a typo must not look like an empty location");
        assert!(!bed.path("nope").exists() && !bed.path("dst-never").exists(), "{args:?} created something");
    }
}
