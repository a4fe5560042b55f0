//! Serves the OnsMqtt API on a loopback port with one account and a backend that accepts every
//! disaster-recovery call, for trying SDKs against the gateway by hand.
//!
//! ```text
//! cargo run -p switchyard-api --example local_gateway -- 127.0.0.1:18080
//! ```
//!
//! The account is `1000000000000001` with root key `AKID_TEST` / `SECRET_TEST`, and RAM user
//! `viewer` with key `AKID_VIEWER` / `SECRET_VIEWER` and no policies. Stop it with Ctrl-C.

use std::sync::Arc;

use switchyard_api::{
    AccessKey, Account, ActionContext, ApiServer, ApiSettings, BackendFuture,
    DisasterRecoveryBackend, RamUser, SystemClock,
};

struct AcceptingBackend;

impl DisasterRecoveryBackend for AcceptingBackend {
    fn downgrade<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        downgrade_instance_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            tracing::info!(request_id = %ctx.request_id, instance_id, downgrade_instance_id, "downgrade");
            Ok(())
        })
    }

    fn recover<'a>(
        &'a self,
        ctx: &'a ActionContext,
        instance_id: &'a str,
        recovery_instance_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            tracing::info!(request_id = %ctx.request_id, instance_id, recovery_instance_id, "recover");
            Ok(())
        })
    }
}

fn key(id: &str, secret: &str) -> AccessKey {
    AccessKey {
        id: id.to_owned(),
        secret: secret.to_owned(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug")),
        )
        .init();
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned());
    let accounts = vec![Account {
        id: "1000000000000001".to_owned(),
        access_keys: vec![key("AKID_TEST", "SECRET_TEST")],
        ram_users: vec![RamUser {
            name: "viewer".to_owned(),
            access_keys: vec![key("AKID_VIEWER", "SECRET_VIEWER")],
            policies: Vec::new(),
        }],
    }];
    let server = ApiServer::new(
        accounts,
        ApiSettings::default(),
        Arc::new(AcceptingBackend),
        Arc::new(SystemClock),
    )
    .map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(&address).await?;
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
