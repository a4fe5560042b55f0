//! A `switchyard serve --config` process started by a benchmark: the configuration file it
//! reads, its start with the `endpoint` lines it prints before `ready`, its memory use from
//! `/proc`, and its stop.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The one instance every benchmark configuration declares.
pub const INSTANCE_ID: &str = "mqtt-cn-hz01";
/// The account that owns [`INSTANCE_ID`].
pub const ACCOUNT_ID: &str = "1000000000000001";
/// The Group ID the instance registers, for client ids `GID_bench@@@<device>`.
pub const GROUP_ID: &str = "GID_bench";
/// The parent topic the instance registers.
pub const PARENT_TOPIC: &str = "sensors";

/// How long a stopping server gets after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The part of a benchmark server's configuration that varies between runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The AccessKey of the account, which signs the device logins.
    pub access_key_id: String,
    pub access_key_secret: String,
    /// The `store.durability` value, or `None` to leave the key out, for builds that have no
    /// such key.
    pub durability: Option<String>,
    /// The instance's `max_queued_messages`.
    pub max_queued_messages: usize,
    /// The instance's `max_publish_rate`, PUBLISH packets per second and connection.
    pub max_publish_rate: u32,
    /// The instance's `max_connection_rate`, connections per second.
    pub max_connection_rate: u32,
}

impl ServerConfig {
    /// Returns the TOML text of the configuration, with every listener on a free port of
    /// 127.0.0.1 and the data directory `data_dir`.
    pub fn to_toml(&self, data_dir: &Path) -> String {
        let mut text = String::new();
        // TOML basic strings take the same escapes as JSON strings.
        let data_dir = serde_json::to_string(&data_dir.display().to_string())
            .unwrap_or_else(|_| "\"data\"".to_owned());
        let _ = writeln!(text, "data_dir = {data_dir}");
        let _ = writeln!(text, "\n[api]\nlisten = \"127.0.0.1:0\"");
        if let Some(durability) = &self.durability {
            let _ = writeln!(text, "\n[store]\ndurability = \"{durability}\"");
        }
        let _ = writeln!(
            text,
            "\n[[accounts]]\nid = \"{ACCOUNT_ID}\"\n\
             access_keys = [{{ id = \"{}\", secret = \"{}\" }}]",
            self.access_key_id, self.access_key_secret
        );
        let _ = writeln!(
            text,
            "\n[[instances]]\nid = \"{INSTANCE_ID}\"\naccount = \"{ACCOUNT_ID}\"\n\
             region = \"cn-hangzhou\"\nedition = \"platinum\"\ngroup_ids = [\"{GROUP_ID}\"]\n\
             parent_topics = [\"{PARENT_TOPIC}\"]\n\
             listeners = [{{ protocol = \"tcp\", listen = \"127.0.0.1:0\" }}]\n\
             max_queued_messages = {}\nmax_publish_rate = {}\nmax_connection_rate = {}",
            self.max_queued_messages, self.max_publish_rate, self.max_connection_rate
        );
        text
    }
}

/// One `endpoint kind=... owner=... protocol=... addr=...` line of the server's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: String,
    /// Everything between `owner=` and ` protocol=`, because an owner may contain spaces.
    pub owner: String,
    pub protocol: String,
    pub addr: SocketAddr,
}

/// Parses an `endpoint` line; returns `None` for any other line.
pub fn parse_endpoint(line: &str) -> Option<Endpoint> {
    let rest = line.strip_prefix("endpoint kind=")?;
    let (kind, rest) = rest.split_once(" owner=")?;
    let (owner, rest) = rest.rsplit_once(" protocol=")?;
    let (protocol, rest) = rest.split_once(" addr=")?;
    // A WebSocket listener prints ` path=/...` after the address.
    let addr = rest.split_whitespace().next()?.parse().ok()?;
    Some(Endpoint {
        kind: kind.to_owned(),
        owner: owner.to_owned(),
        protocol: protocol.to_owned(),
        addr,
    })
}

/// Memory figures of a process from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmHWM`: the peak resident set size since the process started.
    pub peak_rss_kib: u64,
    /// `VmRSS`: the resident set size now.
    pub rss_kib: u64,
}

/// A running `switchyard serve` process.
pub struct Server {
    child: Child,
    /// The endpoints printed before `ready`.
    pub endpoints: Vec<Endpoint>,
    /// From spawning the process to reading its `ready` line.
    pub time_to_ready: Duration,
    /// The file that receives the server's stderr (its log).
    pub log_path: PathBuf,
}

impl Server {
    /// Writes `config_text` to `<dir>/switchyard.toml`, starts `binary serve --config` on it
    /// with stderr in `<dir>/server.log`, and waits up to `ready_timeout` for `ready`.
    ///
    /// Fails, with the end of the server's log, if the process exits or stays silent first.
    pub fn start(
        binary: &Path,
        dir: &Path,
        config_text: &str,
        ready_timeout: Duration,
    ) -> anyhow::Result<Server> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create directory {}", dir.display()))?;
        let config_path = dir.join("switchyard.toml");
        std::fs::write(&config_path, config_text)
            .with_context(|| format!("failed to write {}", config_path.display()))?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;

        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("failed to start {}", binary.display()))?;

        // A thread reads stdout for the life of the process, so the pipe never fills.
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .context("server stdout was not captured")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });

        let mut server = Server {
            child,
            endpoints: Vec::new(),
            time_to_ready: Duration::ZERO,
            log_path,
        };
        let deadline = started + ready_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line == "ready" => break,
                Ok(line) => server.endpoints.extend(parse_endpoint(&line)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let log = server.log_tail();
                    server.stop();
                    bail!(
                        "{} did not print `ready` within {} s; end of its log:\n{log}",
                        binary.display(),
                        ready_timeout.as_secs()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().ok();
                    bail!(
                        "{} exited before it was ready ({status:?}); end of its log:\n{}",
                        binary.display(),
                        server.log_tail()
                    );
                }
            }
        }
        server.time_to_ready = started.elapsed();
        Ok(server)
    }

    /// Returns the address of the first endpoint of `kind` whose owner is `owner`.
    pub fn endpoint(&self, kind: &str, owner: &str) -> anyhow::Result<SocketAddr> {
        self.endpoints
            .iter()
            .find(|endpoint| endpoint.kind == kind && endpoint.owner == owner)
            .map(|endpoint| endpoint.addr)
            .with_context(|| {
                format!("the server printed no endpoint line with kind={kind} owner={owner}")
            })
    }

    /// Returns the TCP listener of [`INSTANCE_ID`].
    pub fn instance_addr(&self) -> anyhow::Result<SocketAddr> {
        self.endpoint("instance", INSTANCE_ID)
    }

    /// Reads the server's memory figures, or `None` when `/proc` has no such process.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        };
        Some(Memory {
            peak_rss_kib: field("VmHWM:")?,
            rss_kib: field("VmRSS:")?,
        })
    }

    /// Reports whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Returns the last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends SIGTERM and waits for the process to exit, sending SIGKILL after
    /// [`STOP_GRACE`]. Returns whether it exited within the grace period.
    pub fn stop(&mut self) -> bool {
        if !self.is_running() {
            return true;
        }
        // std offers only SIGKILL, and the server should get its graceful shutdown.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "server (pid {}) did not stop within {} s of SIGTERM; sending SIGKILL",
            self.child.id(),
            STOP_GRACE.as_secs()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_line_of_instance() {
        let line = "endpoint kind=instance owner=mqtt-cn-hz01 protocol=tcp addr=127.0.0.1:40001";
        let endpoint = parse_endpoint(line).expect("an endpoint line");
        assert_eq!(endpoint.owner, "mqtt-cn-hz01");
        assert_eq!(endpoint.addr, "127.0.0.1:40001".parse().unwrap());
    }

    #[test]
    fn endpoint_line_with_spaced_owner() {
        let line = "endpoint kind=instance owner=instance mqtt-cn-hz01 protocol=tcp \
                    addr=127.0.0.1:40001";
        let endpoint = parse_endpoint(line).expect("an endpoint line");
        assert_eq!(endpoint.kind, "instance");
        assert_eq!(endpoint.owner, "instance mqtt-cn-hz01");
        assert_eq!(endpoint.protocol, "tcp");
        assert_eq!(endpoint.addr, "127.0.0.1:40001".parse().unwrap());
    }

    #[test]
    fn endpoint_line_with_websocket_path() {
        let line = "endpoint kind=global owner=global protocol=ws addr=127.0.0.1:8083 path=/mqtt";
        let endpoint = parse_endpoint(line).expect("an endpoint line");
        assert_eq!(endpoint.addr, "127.0.0.1:8083".parse().unwrap());
    }

    #[test]
    fn other_lines_are_not_endpoints() {
        assert_eq!(parse_endpoint("ready"), None);
        assert_eq!(parse_endpoint("endpoint kind=api"), None);
    }

    #[test]
    fn config_without_durability_has_no_store_section() {
        let config = ServerConfig {
            access_key_id: "LTAIbench".to_owned(),
            access_key_secret: "secret".to_owned(),
            durability: None,
            max_queued_messages: 5000,
            max_publish_rate: 100_000,
            max_connection_rate: 10_000,
        };
        let text = config.to_toml(Path::new("/tmp/data"));
        assert!(!text.contains("[store]"));
        assert!(text.contains("data_dir = \"/tmp/data\""));
        assert!(text.contains("max_queued_messages = 5000"));
        let with_store = ServerConfig {
            durability: Some("memory".to_owned()),
            ..config
        };
        assert!(
            with_store
                .to_toml(Path::new("/tmp/data"))
                .contains("durability = \"memory\"")
        );
    }
}
