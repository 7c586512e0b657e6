//! The `bucketclone` binary: everything lives in the library (`lib.rs`).

fn main() -> std::process::ExitCode {
    bucketclone::main()
}
