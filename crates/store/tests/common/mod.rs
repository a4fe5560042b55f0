//! The harness of the SIGKILL tests. Each test binary runs one of its own tests as a child
//! process and reads what the child prints about its completed writes. It kills the child at a
//! point that repeats from run to run, and then checks the store.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use switchyard_store::Durability;

/// The durability policies the rounds cycle through, by name.
pub const POLICIES: [&str; 3] = ["group-commit", "per-message", "memory"];

/// Returns the durability of a policy name from [`POLICIES`].
pub fn durability(policy: &str) -> Durability {
    match policy {
        "per-message" => Durability::PerMessage,
        "group-commit" => Durability::GroupCommit {
            max_delay: Duration::from_micros(500),
            max_batch: 64,
        },
        "memory" => Durability::Memory,
        other => panic!("unknown policy {other:?}"),
    }
}

/// A xorshift generator, so the kill points repeat from run to run.
pub struct Xorshift(pub u64);

impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Prints one line for the parent and flushes it, so the parent has it before a kill.
pub fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").unwrap();
    stdout.flush().unwrap();
}

/// How a child process ended.
pub struct ChildEnd {
    /// Whether the parent killed it.
    pub killed: bool,
    /// Its exit status.
    pub status: ExitStatus,
}

/// Runs the test `child_test` of the current test binary as a child process with the
/// environment `env`, and hands each line it prints to `on_line`, which returns whether the
/// line counts. Once `kill_after` lines counted, the child gets SIGKILL, and the lines it
/// printed before it died are still handed over.
pub fn run_child(
    child_test: &str,
    env: &[(&str, String)],
    kill_after: u64,
    mut on_line: impl FnMut(&str) -> bool,
) -> ChildEnd {
    let executable = std::env::current_exe().unwrap();
    let mut command = Command::new(executable);
    command
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut counted = 0u64;
    let mut killed = false;
    loop {
        if !killed && counted >= kill_after {
            // Child::kill sends SIGKILL on Unix.
            child.kill().unwrap();
            killed = true;
        }
        // After the kill this reads what the child wrote before it died, then ends.
        let Some(line) = lines.next() else { break };
        if on_line(&line.unwrap()) {
            counted += 1;
        }
    }
    let status = child.wait().unwrap();
    ChildEnd { killed, status }
}
