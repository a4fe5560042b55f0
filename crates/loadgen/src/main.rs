//! `switchyard-loadgen`: load generation and benchmarks against a running Switchyard.
//!
//! `dr-failover` measures how long devices connected through a global endpoint take to land on
//! another member after `DisasterDowngrade`. It prints a report and, as its last line, one JSON
//! object with every figure, and exits with status 1 when a phase fails or times out.

mod api;
mod connection;
mod device;
mod failover;
mod report;
mod signing;
mod tracker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::failover::{FailoverOptions, ProtocolMix};

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
    let Command::DrFailover(args) = cli.command;
    let options = args.into_options()?;
    // Two worker threads bound the generator's CPU use, because it usually shares the machine
    // with the broker it measures.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
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
