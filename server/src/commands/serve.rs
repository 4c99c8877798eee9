//! `antiphon serve`: the HTTP/WebSocket server (OpenAI Realtime compatible at `/v1/realtime`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::config::Config;
use crate::http::{self, AppState, auth::ApiKeys};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::realtime::session::EngineConnector;
use crate::realtime::turn::Engines;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (see antiphon.example.toml); defaults apply without one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Port to listen on (overrides server.port; 0 picks a free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (overrides server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Validate the config and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(port) = args.port {
        config.server.port = port;
    }
    if let Some(host) = args.host {
        config.server.host = host;
    }
    config.validate()?;
    if args.check {
        println!("config ok");
        return Ok(ExitCode::SUCCESS);
    }
    // Engines load before anything listens: a session is never admitted to a half-loaded server.
    let pipeline = Pipeline::load(&config).context("loading the engines")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("antiphon-io")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(config, pipeline))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, pipeline: Pipeline) -> anyhow::Result<()> {
    let (keys, demo) = config.accepted_keys();
    if demo {
        tracing::warn!(
            "!!! no server.api_keys configured: accepting ONLY the public demo key '{}'. \
             Anyone who can reach this port can use it. Set server.api_keys for real use. !!!",
            crate::config::DEMO_API_KEY
        );
    }
    let addr: SocketAddr = format!("{}:{}", config.server.host, config.server.port)
        .parse()
        .with_context(|| {
            format!(
                "invalid listen address {}:{}",
                config.server.host, config.server.port
            )
        })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let connector: Option<Arc<dyn EngineConnector>> = if pipeline.engines() == Engines::default() {
        tracing::warn!("every engine is disabled: sessions run the protocol only");
        None
    } else {
        Some(Arc::new(pipeline))
    };
    let state = Arc::new(AppState::new(config, Arc::new(Metrics::new()), connector));
    let app = http::router(state, ApiKeys::new(keys));
    tracing::info!(%local, "listening");
    // Machine-readable line for scripts and tests (the port may have been chosen by the OS).
    println!("antiphon listening on {local}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await
        .context("server failed")
}
