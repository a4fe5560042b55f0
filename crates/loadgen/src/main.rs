//! `switchyard-loadgen`: load generation and benchmarks against a running Switchyard.
//!
//! `dr-failover` measures how long devices connected through a global endpoint take to land on
//! another member after `DisasterDowngrade`. It prints a report and, as its last line, one JSON
//! object with every figure, and exits with status 1 when a phase fails or times out.
//!
//! `qos1-throughput` and `startup` start `switchyard serve --config` themselves (`server`):
//! the first measures QoS 1 publish throughput per durability policy or build, the second the
//! start-up over a data directory with many stored sessions. Both print Markdown tables and a
//! JSON line, and exit with status 1 when a check fails.

mod api;
mod connection;
mod device;
mod failover;
mod qos1;
mod report;
mod server;
mod signing;
mod startup;
mod tracker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::failover::{FailoverOptions, ProtocolMix};
use crate::qos1::{MAX_OFFLINE_QUEUE, Qos1Options, Variant};
use crate::startup::StartupOptions;

#[derive(Parser)]
// A repeated option takes its last value, so scripts can pass defaults before the user's options.
#[command(
    version,
    about = "Load generator and benchmarks for Switchyard",
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect devices through a global endpoint, downgrade their member with DisasterDowngrade,
    /// and measure how long they take to reconnect to the surviving member.
    DrFailover(DrFailoverArgs),
    /// Start `switchyard serve` once per case and measure QoS 1 publish throughput and PUBACK
    /// latency for each durability policy (and optionally another build), checking that
    /// persistent subscribers receive every message.
    Qos1Throughput(Qos1Args),
    /// Fill a data directory with stored sessions and queued messages, start `switchyard
    /// serve` over it, and measure the time to `ready` and the peak memory, checking a sample
    /// of the sessions.
    Startup(StartupArgs),
}

/// The durability policies `switchyard serve` accepts in `store.durability`.
const DURABILITY_POLICIES: [&str; 3] = ["per_message", "group_commit", "memory"];

#[derive(Args)]
struct Qos1Args {
    /// The `switchyard` binary to measure.
    #[arg(long, value_name = "PATH")]
    server_bin: PathBuf,
    /// Durability policies to measure with --server-bin, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DURABILITY_POLICIES.map(String::from))]
    durability: Vec<String>,
    /// Another `switchyard` binary to measure with the same workload, with no
    /// `store.durability` key in its configuration, such as a build from before the store.
    #[arg(long, value_name = "PATH")]
    baseline_bin: Option<PathBuf>,
    /// Name of the --baseline-bin variant in the report.
    #[arg(long, default_value = "before-store")]
    baseline_label: String,
    /// Concurrent publisher counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    publishers: Vec<usize>,
    /// Messages per case, shared out between the publishers.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Payload size of every message, in bytes (at least 8, for the message index).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Messages one publisher may have awaiting PUBACK.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Times every case runs; the variants alternate within a round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Also queue every message for an offline persistent subscriber and drain it at the end.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    offline_subscriber: bool,
    /// Directory for each case's configuration, data directory and server log.
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// Upper bound of one case after the server is ready, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Seconds after which no further case starts; the run then fails.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    max_run_time: u64,
    /// Seconds a server gets to print `ready`.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    ready_timeout: u64,
}

impl Qos1Args {
    fn into_options(self) -> anyhow::Result<Qos1Options> {
        if self.messages == 0 {
            bail!("--messages must be at least 1");
        }
        if self.offline_subscriber && self.messages > MAX_OFFLINE_QUEUE {
            bail!(
                "--messages {} is more than the message store queues for one session \
                 ({MAX_OFFLINE_QUEUE}); use fewer or --offline-subscriber false",
                self.messages
            );
        }
        if self.publishers.contains(&0) {
            bail!("--publishers must list counts of at least 1");
        }
        if self.publishers.iter().any(|&count| count > self.messages) {
            bail!(
                "--publishers lists more publishers than --messages {}",
                self.messages
            );
        }
        // The broker's default Receive Maximum is 128; a larger window is a protocol error.
        if !(1..=128).contains(&self.window) {
            bail!("--window {} must be 1 to 128", self.window);
        }
        if self.rounds == 0
            || self.timeout == 0
            || self.ready_timeout == 0
            || self.max_run_time == 0
        {
            bail!("--rounds, --timeout, --ready-timeout and --max-run-time must be at least 1");
        }
        let mut variants = Vec::new();
        for policy in &self.durability {
            if !DURABILITY_POLICIES.contains(&policy.as_str()) {
                bail!(
                    "invalid --durability {policy:?}: use {}",
                    DURABILITY_POLICIES.join(", ")
                );
            }
            variants.push(Variant {
                label: policy.clone(),
                binary: self.server_bin.clone(),
                durability: Some(policy.clone()),
            });
        }
        if let Some(binary) = self.baseline_bin {
            variants.push(Variant {
                label: self.baseline_label,
                binary,
                durability: None,
            });
        }
        if variants.is_empty() {
            bail!("nothing to measure: --durability is empty and there is no --baseline-bin");
        }
        let (access_key_id, access_key_secret) = run_access_key();
        Ok(Qos1Options {
            variants,
            publishers: self.publishers,
            messages: self.messages,
            payload_bytes: self.payload_bytes.max(8),
            window: self.window,
            rounds: self.rounds,
            offline_subscriber: self.offline_subscriber,
            work_dir: self.work_dir,
            timeout: Duration::from_secs(self.timeout),
            max_run_time: Duration::from_secs(self.max_run_time),
            ready_timeout: Duration::from_secs(self.ready_timeout),
            access_key_id,
            access_key_secret,
        })
    }
}

#[derive(Args)]
struct StartupArgs {
    /// The `switchyard` binary to start.
    #[arg(long, value_name = "PATH")]
    server_bin: PathBuf,
    /// Stored persistent sessions.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Queued messages per session.
    #[arg(long, default_value_t = 10)]
    messages_per_session: usize,
    /// Payload size of every queued message, in bytes (at least 16).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Sessions whose clients reconnect to check them, spread over all sessions.
    #[arg(long, default_value_t = 1000)]
    sample: usize,
    /// New directory for the configuration, the data directory and the server log.
    #[arg(long, value_name = "DIR")]
    work_dir: PathBuf,
    /// Seconds the server gets to print `ready`.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    ready_timeout: u64,
    /// Upper bound of the fill and of the check, each, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    timeout: u64,
}

impl StartupArgs {
    fn into_options(self) -> anyhow::Result<StartupOptions> {
        if self.sessions == 0 || self.sample == 0 || self.sample > self.sessions {
            bail!(
                "--sample {} must be 1 to --sessions {}",
                self.sample,
                self.sessions
            );
        }
        if self.messages_per_session > MAX_OFFLINE_QUEUE {
            bail!(
                "--messages-per-session {} is more than the message store queues for one \
                 session ({MAX_OFFLINE_QUEUE})",
                self.messages_per_session
            );
        }
        if self.ready_timeout == 0 || self.timeout == 0 {
            bail!("--ready-timeout and --timeout must be at least 1");
        }
        let (access_key_id, access_key_secret) = run_access_key();
        Ok(StartupOptions {
            binary: self.server_bin,
            sessions: self.sessions,
            messages_per_session: self.messages_per_session,
            payload_bytes: self.payload_bytes.max(16),
            sample: self.sample,
            work_dir: self.work_dir,
            ready_timeout: Duration::from_secs(self.ready_timeout),
            timeout: Duration::from_secs(self.timeout),
            access_key_id,
            access_key_secret,
        })
    }
}

/// Returns a new AccessKey id and secret for the servers of one run.
fn run_access_key() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = uuid::Uuid::new_v4().simple().to_string();
    (format!("LTAI{}", &id[..16]), secret)
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// MQTT 5.0 for every device.
    #[value(name = "5")]
    V5,
    /// MQTT 3.1.1 for every device.
    #[value(name = "4")]
    V4,
    /// Half the devices MQTT 5.0, half MQTT 3.1.1.
    Mixed,
}

#[derive(Args)]
struct DrFailoverArgs {
    /// Global endpoint (TCP listener of the DR group) the devices connect through, as IP:PORT.
    #[arg(long, value_name = "ADDR")]
    global: SocketAddr,
    /// Management API listener (plain HTTP), as IP:PORT.
    #[arg(long, value_name = "ADDR")]
    api: SocketAddr,
    /// AccessKey id that signs the API calls and the device logins.
    #[arg(long, env = "SWITCHYARD_ACCESS_KEY_ID")]
    access_key_id: String,
    /// AccessKey secret of that id; prefer the environment variable, which `ps` does not show.
    #[arg(long, env = "SWITCHYARD_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: String,
    /// Member named in the devices' usernames; it is the one downgraded.
    #[arg(long, value_name = "ID")]
    instance: String,
    /// Member the devices are expected to land on.
    #[arg(long, value_name = "ID")]
    survivor: String,
    /// Region TCP listener of the survivor, as IP:PORT, where the landing check publishes.
    #[arg(long, value_name = "ADDR")]
    survivor_addr: SocketAddr,
    /// Number of devices.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Group ID of the devices' client ids (`<GROUP_ID>@@@bench-<n>`).
    #[arg(long, default_value = "GID_demo")]
    group_id: String,
    /// Topic prefix; devices subscribe to `<PREFIX>/all`.
    #[arg(long, default_value = "sensors/bench")]
    topic_prefix: String,
    /// MQTT version of the devices.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Mixed)]
    protocol: ProtocolArg,
    /// Upper bound of every phase, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
    /// Call DisasterRecovery at the end (`--recover false` leaves the member downgraded).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    recover: bool,
    /// Devices that may be opening their first connection at the same time.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
}

impl DrFailoverArgs {
    fn into_options(self) -> anyhow::Result<FailoverOptions> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        if self.timeout == 0 {
            bail!("--timeout must be at least 1 second");
        }
        if self.connect_concurrency == 0 {
            bail!("--connect-concurrency must be at least 1");
        }
        if !(self.group_id.starts_with("GID_") || self.group_id.starts_with("GID-")) {
            bail!(
                "invalid --group-id {:?}: a Group ID starts with GID_ or GID-",
                self.group_id
            );
        }
        if self.topic_prefix.is_empty()
            || self.topic_prefix.contains(['+', '#'])
            || self.topic_prefix.ends_with('/')
        {
            bail!(
                "invalid --topic-prefix {:?}: it must be a topic name without wildcards or a \
                 trailing /",
                self.topic_prefix
            );
        }
        if self.instance == self.survivor {
            bail!(
                "--instance and --survivor are both {:?}; the survivor must be another member",
                self.instance
            );
        }
        let protocol = match self.protocol {
            ProtocolArg::V5 => ProtocolMix::V5,
            ProtocolArg::V4 => ProtocolMix::V3_1_1,
            ProtocolArg::Mixed => ProtocolMix::Mixed,
        };
        Ok(FailoverOptions {
            global_addr: self.global,
            api_addr: self.api,
            access_key_id: self.access_key_id,
            access_key_secret: self.access_key_secret,
            instance: self.instance,
            survivor: self.survivor,
            survivor_addr: self.survivor_addr,
            devices: self.devices,
            group_id: self.group_id,
            topic_prefix: self.topic_prefix,
            protocol,
            timeout: Duration::from_secs(self.timeout),
            recover: self.recover,
            connect_concurrency: self.connect_concurrency,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::DrFailover(args) => run_dr_failover(args),
        Command::Qos1Throughput(args) => run_qos1_throughput(args),
        Command::Startup(args) => run_startup(args),
    }
}

/// Builds the generator's runtime. Two worker threads bound its CPU use, because it usually
/// shares the machine with the broker it measures.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

fn run_qos1_throughput(args: Qos1Args) -> anyhow::Result<ExitCode> {
    let options = args.into_options()?;
    let runtime = runtime()?;
    let (results, failure) = qos1::run(&options, &runtime);
    runtime.shutdown_timeout(Duration::from_secs(1));

    println!(
        "QoS 1 throughput: {} messages of {} bytes per case, window {}, {} rounds",
        options.messages, options.payload_bytes, options.window, options.rounds
    );
    let labels: Vec<&str> = options.variants.iter().map(|v| v.label.as_str()).collect();
    let reference = labels
        .iter()
        .copied()
        .find(|&label| label == "group_commit");
    let mut pairs = Vec::new();
    if let Some(baseline) = options.variants.iter().find(|v| v.durability.is_none())
        && labels.contains(&"memory")
    {
        pairs.push(("memory", baseline.label.as_str()));
    }
    qos1::print_summary(&results, reference, &pairs);
    match failure {
        Some(error) => {
            eprintln!("error: {error:#}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn run_startup(args: StartupArgs) -> anyhow::Result<ExitCode> {
    let options = args.into_options()?;
    let runtime = runtime()?;
    let outcome = startup::run(&options, &runtime);
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(report) => {
            println!("Start-up of {}:", options.binary.display());
            print!("{}", report.to_text());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_dr_failover(args: DrFailoverArgs) -> anyhow::Result<ExitCode> {
    let options = args.into_options()?;
    let runtime = runtime()?;
    let report = runtime.block_on(failover::run(&options));
    // Device tasks were stopped or aborted by `run`; nothing should hold the runtime open.
    runtime.shutdown_timeout(Duration::from_secs(1));

    println!(
        "DR failover: {} downgraded, {} survives",
        options.instance, options.survivor
    );
    print!("{}", report.to_text());
    println!("{}", report.to_json());
    match &report.failure {
        Some(failure) => {
            eprintln!("error: {failure}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
