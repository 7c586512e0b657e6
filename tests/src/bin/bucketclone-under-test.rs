//! The `bucketclone` program, built inside the test crate so tests can spawn it as a real
//! process (`env!("CARGO_BIN_EXE_bucketclone-under-test")`) and kill it at will.

fn main() -> std::process::ExitCode {
    bucketclone::main()
}
