//! The `switchyard` command: `serve` runs a deployment, `audit` prints the DR audit log and
//! `password` computes a Signature-mode device password.

mod authenticator;
mod config;
mod defaults;
mod group_ids;
mod serve;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard_store::{SqliteSettings, SqliteStore, Store};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::defaults::DefaultAccessKey;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Self-hosted MQTT with ApsaraMQ-compatible disaster recovery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a deployment: the one in FILE, or the embedded default without --config.
    Serve {
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory of the embedded default deployment.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "switchyard-data",
            conflicts_with = "config"
        )]
        data_dir: PathBuf,
    },
    /// Print the audit log of disaster-recovery changes, oldest first.
    Audit {
        /// Configuration file whose data_dir to read.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory to read, when there is no configuration file.
        #[arg(
            long,
            value_name = "DIR",
            default_value = "switchyard-data",
            conflicts_with = "config"
        )]
        data_dir: PathBuf,
        /// Print the newest N records (all of them when N is at least the total).
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
    },
    /// Print the MQTT username and password of a Signature-mode login.
    Password {
        /// Client id, e.g. GID_demo@@@device-1.
        #[arg(long)]
        client_id: String,
        /// Instance the username names.
        #[arg(long, default_value = "mqtt-cn-hz01")]
        instance_id: String,
        /// AccessKey id and secret; without them the default deployment's key is read from
        /// --data-dir.
        #[arg(long, requires = "access_key_secret")]
        access_key_id: Option<String>,
        #[arg(long, requires = "access_key_id")]
        access_key_secret: Option<String>,
        #[arg(long, value_name = "DIR", default_value = "switchyard-data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let filter =
        EnvFilter::try_from_env("SWITCHYARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve { config, data_dir } => serve_command(config.as_deref(), data_dir),
        Command::Audit {
            config,
            data_dir,
            limit,
        } => audit_command(config.as_deref(), data_dir, limit),
        Command::Password {
            client_id,
            instance_id,
            access_key_id,
            access_key_secret,
            data_dir,
        } => password_command(
            &client_id,
            &instance_id,
            access_key_id.zip(access_key_secret),
            &data_dir,
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_command(config_path: Option<&Path>, data_dir: PathBuf) -> anyhow::Result<()> {
    let (config, default_key) = match config_path {
        Some(path) => (Config::load(path)?, None),
        None => {
            let key = defaults::load_or_create_access_key(&data_dir)?;
            let config = defaults::default_config(data_dir, &key);
            config.validate()?;
            (config, Some(key))
        }
    };

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Tokio runs the task woken last first (its LIFO slot), so when two connections become
    // readable in one poll of the I/O driver, the later one is handled first. Without the slot,
    // tasks start in the order they were woken, and a SUBSCRIBE that reached the server before
    // another client's PUBLISH is applied first, unless another worker thread takes the later
    // task. MQTT orders packets only within one connection, but the Paho interoperability tests
    // send on two connections in turn and expect this order. The option needs
    // `--cfg tokio_unstable`, which `.cargo/config.toml` sets.
    // NOTE: a RUSTFLAGS variable replaces the flags of `.cargo/config.toml`, and so does a
    // build started outside the repository, so such a build keeps tokio's LIFO slot unless it
    // adds `--cfg tokio_unstable` itself. The server then logs a warning at start.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    #[cfg(not(tokio_unstable))]
    tracing::warn!(
        "Built without --cfg tokio_unstable, so tokio's LIFO slot is on and connections that \
         become readable together may be handled out of order; rebuild from the repository's \
         root, or add --cfg tokio_unstable to RUSTFLAGS"
    );
    let runtime = builder
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async move {
        let deployment = serve::start(&config).await?;
        print_summary(&config, &deployment, default_key.as_ref());
        wait_for_signal().await?;
        tracing::info!("Shutdown signal received; closing connections");
        deployment.stop().await;
        Ok(())
    })
}

/// Prints every endpoint, one `endpoint` line each so scripts can parse them, then how to log in.
fn print_summary(config: &Config, deployment: &serve::Deployment, key: Option<&DefaultAccessKey>) {
    println!(
        "Switchyard {} is running. Data directory: {}",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    for endpoint in &deployment.endpoints {
        let path = match &endpoint.path {
            Some(path) => format!(" path={path}"),
            None => String::new(),
        };
        println!(
            "endpoint kind={} owner={} protocol={} addr={}{path}",
            endpoint.kind, endpoint.owner, endpoint.protocol, endpoint.addr
        );
    }
    let mut downgraded: Vec<&str> = deployment
        .registry
        .members()
        .filter(|m| m.group.is_some() && !m.has_global_access())
        .map(|m| m.id())
        .collect();
    downgraded.sort_unstable();
    if !downgraded.is_empty() {
        println!(
            "Downgraded members (no global-endpoint access): {}",
            downgraded.join(", ")
        );
    }
    if let Some(key) = key {
        println!();
        println!(
            "Default account {} AccessKey (stored in {}):",
            defaults::ACCOUNT_ID,
            defaults::credentials_path(&config.data_dir).display()
        );
        println!("  AccessKeyId:     {}", key.access_key_id);
        println!("  AccessKeySecret: {}", key.access_key_secret);
        println!(
            "Devices log in with client id {}@@@<device>, username Signature|<AccessKeyId>|mqtt-cn-hz01",
            defaults::GROUP_ID
        );
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "switchyard".to_owned());
        println!(
            "and the password printed by: {program} password --client-id {}@@@<device> \
             --instance-id mqtt-cn-hz01 --data-dir {}",
            defaults::GROUP_ID,
            config.data_dir.display()
        );
        println!(
            "Topics must be under the parent topic {:?}.",
            defaults::PARENT_TOPIC
        );
    }
    println!("ready");
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate =
            signal(SignalKind::terminate()).context("failed to listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("failed to listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("failed to listen for Ctrl-C")?;
    Ok(())
}

fn audit_command(
    config_path: Option<&Path>,
    data_dir: PathBuf,
    limit: usize,
) -> anyhow::Result<()> {
    let (data_dir, busy_timeout_ms) = match config_path {
        Some(path) => {
            let config = Config::load(path)?;
            (config.data_dir, config.store.busy_timeout_ms)
        }
        None => (data_dir, 5_000),
    };
    let database = data_dir.join(switchyard_store::DATABASE_FILE_NAME);
    if !database.is_file() {
        anyhow::bail!(
            "no Switchyard store at {}; pass the data directory `switchyard serve` uses \
             (--data-dir) or its configuration file (--config)",
            database.display()
        );
    }
    let settings = SqliteSettings {
        busy_timeout: Duration::from_millis(busy_timeout_ms),
    };
    let store = SqliteStore::open(&data_dir, settings)?;

    // Keep the newest `limit` records, read page by page, so the output ends with the latest.
    const PAGE: usize = 1000;
    let mut newest = std::collections::VecDeque::with_capacity(limit.min(PAGE));
    let mut total = 0usize;
    let mut cursor = None;
    loop {
        let page = store.audit_records(cursor, PAGE)?;
        let Some((last_id, _)) = page.last() else {
            break;
        };
        cursor = Some(*last_id);
        for entry in page {
            total += 1;
            newest.push_back(entry);
            if newest.len() > limit {
                newest.pop_front();
            }
        }
    }

    if total == 0 {
        println!(
            "No disaster-recovery changes recorded in {}.",
            data_dir.display()
        );
    } else if newest.len() < total {
        println!(
            "Showing the newest {} of {total} records; pass --limit to see more.",
            newest.len()
        );
    }
    for (id, record) in newest {
        println!("{id} {record}");
    }
    Ok(())
}

fn password_command(
    client_id: &str,
    instance_id: &str,
    explicit_key: Option<(String, String)>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    if client_id.is_empty() {
        anyhow::bail!(
            "--client-id is empty; pass the device's client id, e.g. GID_demo@@@device-1"
        );
    }
    if !config::is_valid_instance_id(instance_id) {
        anyhow::bail!(
            "--instance-id {instance_id:?} is invalid; use 1 to 64 letters, digits, '-' or '_'"
        );
    }
    let (key_id, secret) = match explicit_key {
        Some(key) => key,
        None => {
            let path = defaults::credentials_path(data_dir);
            if !path.exists() {
                anyhow::bail!(
                    "no default AccessKey in {}; start `switchyard serve` once, or pass \
                     --access-key-id and --access-key-secret",
                    path.display()
                );
            }
            let key = defaults::load_or_create_access_key(data_dir)?;
            (key.access_key_id, key.access_key_secret)
        }
    };
    println!("username: Signature|{key_id}|{instance_id}");
    println!(
        "password: {}",
        switchyard_auth::signature_password(&secret, client_id)
    );
    Ok(())
}
