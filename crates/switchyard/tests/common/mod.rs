//! Shared helpers for the binary's integration tests: start `switchyard serve --config` and
//! read the endpoints it prints.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard");
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `switchyard serve` and the listener addresses it printed, keyed by
/// (kind, owner, protocol).
pub struct Server {
    child: Child,
    endpoints: HashMap<(String, String, String), SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(dir: &Path, text: &str) -> Server {
        let path = dir.join("switchyard.toml");
        std::fs::write(&path, text).expect("write configuration");
        let mut child = Command::new(BINARY)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start switchyard");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });

        let mut server = Server {
            child,
            endpoints: HashMap::new(),
        };
        loop {
            let line = received
                .recv_timeout(START_TIMEOUT)
                .expect("switchyard printed 'ready' in time");
            if line == "ready" {
                return server;
            }
            if let Some(fields) = line.strip_prefix("endpoint ") {
                let fields: HashMap<&str, &str> = fields
                    .split_whitespace()
                    .filter_map(|field| field.split_once('='))
                    .collect();
                let key = (
                    fields["kind"].to_owned(),
                    fields["owner"].to_owned(),
                    fields["protocol"].to_owned(),
                );
                let addr = fields["addr"].parse().expect("endpoint address");
                server.endpoints.insert(key, addr);
            }
        }
    }

    pub fn endpoint(&self, kind: &str, owner: &str, protocol: &str) -> SocketAddr {
        let key = (kind.to_owned(), owner.to_owned(), protocol.to_owned());
        *self
            .endpoints
            .get(&key)
            .unwrap_or_else(|| panic!("no {protocol} endpoint of {kind} {owner}"))
    }
}
