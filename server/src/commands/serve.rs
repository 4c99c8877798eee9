//! `antiphon serve`: the HTTP/WebSocket server (OpenAI Realtime compatible at `/v1/realtime`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::app::AppState;
use crate::auth::ApiKeys;
use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::session::EngineConnector;
use crate::session::engine::Engines;

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
    /// Also answer SIP calls on this UDP address (overrides sip.listen), e.g. 0.0.0.0:5060.
    #[arg(long, value_name = "ADDR")]
    pub sip: Option<String>,
    /// Where the LLM runs: auto, cpu or cuda:N (overrides server.device).
    #[arg(long, value_name = "auto|cpu|cuda:N")]
    pub device: Option<String>,
    /// This node's name in a fleet (overrides server.node_id), e.g. the pod name.
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
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
    if let Some(sip) = args.sip {
        config.sip.listen = sip;
    }
    if let Some(device) = args.device {
        config.server.device = device;
    }
    if let Some(node_id) = args.node_id {
        config.server.node_id = node_id;
    }
    config.validate()?;
    if args.check {
        println!("config ok");
        return Ok(ExitCode::SUCCESS);
    }
    let choice = config
        .server
        .device
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let placement = match crate::device::resolve(choice) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("antiphon: --device {choice}: {why}");
            return Ok(ExitCode::from(2));
        }
    };
    tracing::info!(device = %placement, "LLM device");
    // Engines load before anything listens: a session is never admitted to a half-loaded server.
    let pipeline = Pipeline::load(&config, &placement).context("loading the engines")?;
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
    let sip_socket = match config.sip.listen.as_str() {
        "" => None,
        listen => Some(crate::sip::bind(listen).await?),
    };
    let agent_listener = match config.server.agent_check_listen.as_str() {
        "" => None,
        listen => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen for agent checks on tcp {listen}"))?,
        ),
    };
    let sip_config = config.sip.clone();
    let metrics = Arc::new(Metrics::for_node(&config.server.node_id));
    let state = Arc::new(AppState::new(config, metrics, connector));
    let app = http::router(state.clone(), ApiKeys::new(keys));
    tracing::info!(
        %local,
        max_sessions = %state.config.server.max_sessions.describe(),
        "listening"
    );
    // Machine-readable line for scripts and tests (the port may have been chosen by the OS).
    println!("antiphon listening on {local}");
    if let Some(socket) = sip_socket {
        // Second machine-readable line: the SIP address (its port too may be the OS's choice).
        println!("antiphon sip listening on udp {}", socket.local_addr()?);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::sip::run(state, socket, sip_config).await {
                tracing::error!("SIP server stopped: {e:#}");
            }
        });
    }
    tokio::spawn(release_free_memory_periodically());
    if let Some(agent) = agent_listener {
        println!(
            "antiphon agent-check listening on tcp {}",
            agent.local_addr()?
        );
        tokio::spawn(crate::agent_check::serve(agent, state.clone()));
    }
    let limits = http::listen::ListenLimits {
        max_connections: state.config.server.max_connections,
        header_read_timeout: Duration::from_millis(state.config.server.header_read_timeout_ms),
    };
    let drain_state = state.clone();
    let grace = Duration::from_secs(state.config.server.drain_grace_s);
    http::listen::serve(listener, app, limits, state.metrics.clone(), async move {
        let s = &drain_state;
        crate::drain::run(
            &s.drain,
            grace,
            || s.open_calls(),
            crate::drain::termination_signal,
        )
        .await;
        tracing::info!("shutting down");
    })
    .await;
    Ok(())
}

/// How often the allocator's free pages go back to the OS (see `antiphon_models::memory`):
/// RSS then follows live memory instead of its highest peak, for memory limits and the soak.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(30);

async fn release_free_memory_periodically() {
    let mut tick = tokio::time::interval(RELEASE_MEMORY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // It walks every arena under their locks: off the async workers.
        let _ = tokio::task::spawn_blocking(antiphon_models::memory::release_free_memory).await;
    }
}
