//! The server's one TOML config file: `[server]`, `[session]` defaults and one section per
//! engine. Every key is documented in `antiphon.example.toml`; `Config::validate` runs before
//! anything starts.

use std::path::{Path, PathBuf};

use antiphon_models::vad::Eagerness;
use serde::{Deserialize, Deserializer};

/// Used when `server.api_keys` is empty, so a fresh checkout works out of the box; the server
/// logs a loud warning at startup whenever it is accepted.
pub const DEMO_API_KEY: &str = "antiphon-demo-key";

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub session: SessionDefaults,
    pub asr: AsrConfig,
    pub llm: LlmConfig,
    pub tts: TtsConfig,
    pub sip: SipConfig,
    pub webrtc: WebRtcConfig,
    pub twilio: TwilioConfig,
}

/// `[twilio]`: Media Streams at `/v1/twilio` (docs/TWILIO.md).
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// The Twilio account's auth token. When set, every upgrade must carry a valid
    /// `X-Twilio-Signature` (HTTP 403 otherwise); empty: not checked.
    pub auth_token: String,
    /// The stream URL exactly as in the TwiML `<Stream url=…>`, e.g.
    /// "wss://voice.example.com/v1/twilio": what Twilio signs. Needed when a proxy in front
    /// rewrites the Host header or path; empty: "wss://" + the request's Host + its path.
    pub public_url: String,
}

/// `[sip]`: the SIP user agent server (UDP) and its RTP ports. Off unless `listen` is set
/// (or `antiphon serve --sip ADDR`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP address for SIP signalling, e.g. "0.0.0.0:5060"; empty: no SIP.
    pub listen: String,
    /// Even ports in this inclusive range carry RTP (RTCP on the odd port above each).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// The IP written into SDP and Contact; empty: the local address that routes to the caller.
    pub public_ip: String,
    /// New INVITEs per second one source IP may send (sustained); more are dropped unanswered.
    pub invites_per_second_per_source: f64,
    /// New INVITEs one source IP may send at once after being quiet.
    pub invite_burst_per_source: u32,
    /// Calls from one source IP answered but not yet acknowledged (ACK); further INVITEs from
    /// it are dropped unanswered until one is acknowledged or times out.
    pub max_unconfirmed_per_source: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: String::new(),
            rtp_port_min: 20000,
            rtp_port_max: 20999,
            public_ip: String::new(),
            invites_per_second_per_source: 5.0,
            invite_burst_per_source: 10,
            max_unconfirmed_per_source: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Accepted bearer keys. Empty: only [`DEMO_API_KEY`] is accepted.
    pub api_keys: Vec<String>,
    /// Concurrent sessions on all transports; more are refused (HTTP 503, SIP 503). A
    /// number, or "auto" (the default): the measured capacity per CPU times this machine's
    /// CPUs (see [`SessionLimit`]).
    pub max_sessions: SessionLimit,
    /// Largest client text message handled; larger ones get an `error` event.
    pub max_message_bytes: usize,
    /// Largest uncommitted input audio buffer per session.
    pub max_audio_buffer_bytes: usize,
    /// Items kept per conversation; at the limit the oldest go (the client is told).
    pub max_conversation_items: usize,
    /// Text (bytes) the items of a conversation may hold together; beyond it the oldest go,
    /// so what the LLM is given stays inside its context and is bounded before tokenizing.
    pub max_conversation_bytes: usize,
    /// How long one write to the client may take before the session is closed.
    pub send_timeout_ms: u64,
    /// A session with no message from its client and no engine work for this long is closed
    /// (its slot freed); 0: never.
    pub idle_timeout_s: u64,
    /// TCP connections the HTTP listener keeps open at once (WebSockets included); more are
    /// answered 503 and closed. Keep it under the process's file-descriptor limit.
    pub max_connections: usize,
    /// An engine further behind real time than this (ms; ASR: caller audio waiting, LLM: the
    /// longest a reply has waited for its next token) refuses new sessions (`engines_behind`)
    /// and `/readyz` says not ready until it catches up.
    pub max_engine_backlog_ms: u64,
    /// A connection that has not sent a whole request head within this long (new, or idle
    /// between keep-alive requests) is closed.
    pub header_read_timeout_ms: u64,
    /// Directory holding `index.html` for `/` (skipped when absent).
    pub web_demo_dir: PathBuf,
    /// Where the LLM runs: "auto", "cpu" or "cuda:N" (`--device` overrides).
    pub device: String,
    /// This node's name in a fleet: the `node` label of every metric and the prefix of its
    /// WebRTC resource ids (so a balancer routes `DELETE /v1/webrtc/{id}` to the owner).
    /// Letters, digits, `-` and `_`; empty: a single server.
    pub node_id: String,
    /// Bearer keys accepted on `/admin/*` (`POST /admin/drain`). Empty: the admin endpoints
    /// are off.
    pub admin_keys: Vec<String>,
    /// On SIGTERM or `POST /admin/drain`: how long calls in progress may go on before they are
    /// ended (WebSocket clients get an `error` event `server_shutting_down` first).
    pub drain_grace_s: u64,
    /// TCP address answering HAProxy's `agent-check` (`up ready 37%`, `drain`, `down`);
    /// empty: off.
    pub agent_check_listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            // Loopback until keys are set: a fresh install is not open to the network.
            host: "127.0.0.1".into(),
            port: 8080,
            api_keys: Vec::new(),
            max_sessions: SessionLimit::auto(),
            max_message_bytes: 1 << 20,
            max_audio_buffer_bytes: 15 << 20,
            max_conversation_items: 1000,
            max_conversation_bytes: 24 << 10,
            send_timeout_ms: 5000,
            idle_timeout_s: 120,
            max_connections: 512,
            max_engine_backlog_ms: 2000,
            header_read_timeout_ms: 10_000,
            web_demo_dir: PathBuf::from("web-demo"),
            device: "auto".into(),
            node_id: String::new(),
            admin_keys: Vec::new(),
            drain_grace_s: 30,
            agent_check_listen: String::new(),
        }
    }
}

/// Reads an eagerness name (`low`, `medium`, `high`, `auto`).
/// Sessions one CPU serves in real time with the default models, by the load test's capacity
/// rule (`antiphon-loadtest run --ramp`: the largest step with p95 TTFB under the bar and the
/// user-transcript WER no worse than one session's + 1 point). Measured on the reference box:
/// 3 sessions on 2 vCPUs (docs/BENCHMARKS.md, "Capacity by the ramp with the transcript-WER
/// rule"); the fourth session raised WER from 1.4 % to 3.5 %.
pub const MEASURED_SESSIONS_PER_CPU: f64 = 1.5;

/// `server.max_sessions`: how many sessions are admitted at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SessionLimit {
    /// "auto": [`MEASURED_SESSIONS_PER_CPU`] times the CPUs this process may use (cgroup
    /// quotas included), at least 1. The estimate, worked out when the config is read.
    Auto { cpus: usize, sessions: usize },
    /// A number from the config: e.g. the capacity `--ramp` measured on this machine.
    Fixed(usize),
}

impl SessionLimit {
    pub fn auto() -> SessionLimit {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        SessionLimit::for_cpus(cpus)
    }

    pub fn for_cpus(cpus: usize) -> SessionLimit {
        let sessions = ((cpus as f64 * MEASURED_SESSIONS_PER_CPU).floor() as usize).max(1);
        SessionLimit::Auto { cpus, sessions }
    }

    /// The number of sessions admitted at once.
    pub fn get(self) -> usize {
        match self {
            SessionLimit::Auto { sessions, .. } | SessionLimit::Fixed(sessions) => sessions,
        }
    }

    /// Where the figure comes from, for the start-up log.
    pub fn describe(self) -> String {
        match self {
            SessionLimit::Auto { cpus, sessions } => format!(
                "{sessions} (auto: {MEASURED_SESSIONS_PER_CPU} per CPU x {cpus} CPUs, the \
                 reference box's measured capacity; measure this machine's with \
                 `antiphon-loadtest run --ramp` and set server.max_sessions)"
            ),
            SessionLimit::Fixed(n) => format!("{n} (server.max_sessions)"),
        }
    }
}

impl<'de> Deserialize<'de> for SessionLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(SessionLimit::Fixed(
                usize::try_from(n).map_err(serde::de::Error::custom)?,
            )),
            Raw::Text(t) if t == "auto" => Ok(SessionLimit::auto()),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "max_sessions must be a number or \"auto\", not {t:?}"
            ))),
        }
    }
}

fn eagerness<'de, D: Deserializer<'de>>(d: D) -> Result<Eagerness, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TurnMode {
    SemanticVad,
    ServerVad,
    Manual,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionDefaults {
    /// Reported as `session.model`.
    pub model: String,
    pub instructions: String,
    pub voice: String,
    /// `semantic_vad` (each pause judged: an acoustic end-of-turn model and the transcript so
    /// far), `server_vad` (a fixed silence timer) or `manual` (`turn_detection: null`).
    pub turn_detection: TurnMode,
    /// `semantic_vad`'s eagerness: `low`, `medium`, `high` or `auto` (= medium).
    #[serde(deserialize_with = "eagerness")]
    pub eagerness: Eagerness,
    pub vad_threshold: f32,
    pub prefix_padding_ms: u32,
    pub silence_duration_ms: u32,
    /// Speech starting this soon after the first reply audio interrupts only if it lasts past
    /// the window (guards against the reply echoing back into the microphone).
    pub echo_guard_ms: u64,
    /// Speaker diarization of user turns: `S1`, `S2`, … on transcription events, and user
    /// messages to the LLM prefixed "Speaker N: " once a second speaker is heard (needs the
    /// `campplus` model; off: no labels, no prefixes, no CAM++ loaded).
    pub speaker_labels: bool,
    /// Speculative replies per user turn: when the caller pauses, the reply starts on the
    /// pause's transcript and is held until the endpoint confirms the turn (withdrawn unheard
    /// if the caller goes on). 0 turns speculation off (replies start at the endpoint).
    pub max_speculations: u32,
    /// While the caller speaks, their words so far are prefilled into the LLM's cache (at the
    /// lowest priority), so a reply reads only the last few words when it starts.
    pub lookahead: bool,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        SessionDefaults {
            model: "antiphon".into(),
            // Spoken replies: every sentence costs the caller listening time and the server
            // TTS and LLM time (a 256-token default once made an 18 s monologue per turn).
            instructions: "You are a helpful voice assistant on a call. Answer in one or two short sentences unless the caller asks for more.".into(),
            voice: "default".into(),
            turn_detection: TurnMode::SemanticVad,
            eagerness: Eagerness::Auto,
            vad_threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            echo_guard_ms: 300,
            speaker_labels: true,
            max_speculations: 3,
            lookahead: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AsrConfig {
    pub enabled: bool,
    /// Model store id of the ASR model.
    pub model: String,
    /// Model store id of the VAD model.
    pub vad_model: String,
    pub threads: usize,
    /// Concurrent sessions the engine serves (slot table size).
    pub slots: usize,
}

impl Default for AsrConfig {
    fn default() -> Self {
        AsrConfig {
            enabled: true,
            model: "moonshine-base-en".into(),
            vad_model: "silero-vad".into(),
            threads: 1,
            slots: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    pub enabled: bool,
    pub model: String,
    pub max_tokens: u32,
    pub threads: usize,
    pub slots: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            enabled: true,
            model: "qwen2.5-coder-0.5b".into(),
            max_tokens: 128,
            threads: 1,
            slots: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    pub enabled: bool,
    /// The engine that speaks by default (with its default voice).
    pub model: String,
    /// More engines loaded next to `model`, so a session can pick any of their voices by
    /// name (`session.update` `voice`), e.g. `["kokoro-82m"]` on a Piper server.
    pub extra_models: Vec<String>,
    pub threads: usize,
    pub slots: usize,
    /// A reply's first chunk is cut after this many words when no clause ends sooner: the
    /// caller waits through them before any audio. The cap doubles with each later chunk.
    pub first_chunk_words: usize,
    /// The same for a reply that starts while other replies are being written: the shared
    /// CPU makes the next chunk slower, and a longer first chunk covers it.
    pub first_chunk_words_contended: usize,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            enabled: true,
            model: "piper-joe".into(),
            extra_models: Vec::new(),
            threads: 1,
            slots: 16,
            first_chunk_words: 2,
            first_chunk_words_contended: 3,
        }
    }
}

/// `[webrtc]`: browser voice sessions over WebRTC (`POST /v1/webrtc`). See docs/WEBRTC.md.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Addresses the server offers as ICE host candidates, one UDP socket each. Empty: the
    /// address of the default route's interface plus 127.0.0.1.
    pub candidate_ips: Vec<std::net::IpAddr>,
    /// Inclusive UDP port range for media sockets (open it in the firewall); `None`: ephemeral.
    pub port_range: Option<[u16; 2]>,
    /// STUN/TURN servers handed to browsers (`GET /v1/webrtc/config`) for their own ICE.
    pub ice_servers: Vec<IceServer>,
}

/// One entry of `RTCConfiguration.iceServers`, passed through to the page.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.server;
        if s.max_sessions.get() == 0 {
            return bad("server.max_sessions must be at least 1".into());
        }
        if !(1024..=16 << 20).contains(&s.max_message_bytes) {
            return bad(format!(
                "server.max_message_bytes {} must be in 1 KiB..=16 MiB",
                s.max_message_bytes
            ));
        }
        if s.max_audio_buffer_bytes < 1024 {
            return bad("server.max_audio_buffer_bytes must be at least 1024".into());
        }
        if s.max_conversation_items == 0 || s.max_conversation_bytes == 0 || s.send_timeout_ms == 0
        {
            return bad(
                "server.max_conversation_items, max_conversation_bytes and send_timeout_ms must be positive".into(),
            );
        }
        if s.max_connections == 0 || !(100..=600_000).contains(&s.header_read_timeout_ms) {
            return bad(format!(
                "server.max_connections ({}) must be positive and header_read_timeout_ms ({}) \
                 within 100..=600000",
                s.max_connections, s.header_read_timeout_ms
            ));
        }
        if let Err(e) = s.device.parse::<antiphon_kernels::DeviceChoice>() {
            return bad(format!("server.device: {e}"));
        }
        for (name, keys) in [("api_keys", &s.api_keys), ("admin_keys", &s.admin_keys)] {
            if let Some(k) = keys
                .iter()
                .find(|k| k.trim().is_empty() || k.chars().any(char::is_whitespace))
            {
                return bad(format!(
                    "server.{name} entry {k:?} is empty or contains whitespace"
                ));
            }
        }
        let node_id_ok = s.node_id.len() <= 32
            && s.node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !node_id_ok {
            return bad(format!(
                "server.node_id {:?} must be at most 32 letters, digits, '-' or '_'",
                s.node_id
            ));
        }
        if s.drain_grace_s > 86_400 {
            return bad(format!(
                "server.drain_grace_s {} must be at most 86400 (a day)",
                s.drain_grace_s
            ));
        }
        if !s.agent_check_listen.is_empty()
            && s.agent_check_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return bad(format!(
                "server.agent_check_listen {:?} must be an IP:port address",
                s.agent_check_listen
            ));
        }
        let t = &self.twilio;
        let websocket_url = ["wss://", "ws://"]
            .iter()
            .any(|scheme| t.public_url.starts_with(scheme));
        if !t.public_url.is_empty() && !websocket_url {
            return bad(format!(
                "twilio.public_url {:?} must be a ws:// or wss:// URL",
                t.public_url
            ));
        }
        if t.auth_token.chars().any(char::is_whitespace) {
            return bad("twilio.auth_token contains whitespace".into());
        }
        if let Some([lo, hi]) = self.webrtc.port_range
            && (lo == 0 || lo > hi)
        {
            return bad(format!(
                "webrtc.port_range [{lo}, {hi}] must be two ports, low to high"
            ));
        }
        self.check_exposure()?;
        let d = &self.session;
        if !(0.0..=1.0).contains(&d.vad_threshold) {
            return bad(format!(
                "session.vad_threshold {} must be in 0..=1",
                d.vad_threshold
            ));
        }
        use antiphon_models::vad::endpoint::{
            MAX_PREFIX_PADDING_MS, MAX_SILENCE_DURATION_MS, MIN_SILENCE_DURATION_MS,
        };
        if !(MIN_SILENCE_DURATION_MS..=MAX_SILENCE_DURATION_MS).contains(&d.silence_duration_ms) {
            return bad(format!(
                "session.silence_duration_ms {} must be within {MIN_SILENCE_DURATION_MS}..={MAX_SILENCE_DURATION_MS}",
                d.silence_duration_ms
            ));
        }
        if d.prefix_padding_ms > MAX_PREFIX_PADDING_MS {
            return bad(format!(
                "session.prefix_padding_ms {} must be at most {MAX_PREFIX_PADDING_MS}",
                d.prefix_padding_ms
            ));
        }
        for (name, enabled, model, threads, slots) in [
            (
                "asr",
                self.asr.enabled,
                &self.asr.model,
                self.asr.threads,
                self.asr.slots,
            ),
            (
                "llm",
                self.llm.enabled,
                &self.llm.model,
                self.llm.threads,
                self.llm.slots,
            ),
            (
                "tts",
                self.tts.enabled,
                &self.tts.model,
                self.tts.threads,
                self.tts.slots,
            ),
        ] {
            if enabled && (model.is_empty() || threads == 0 || slots == 0) {
                return bad(format!(
                    "{name}: model must be set and threads, slots at least 1"
                ));
            }
        }
        if self.asr.enabled && self.asr.vad_model.is_empty() {
            return bad("asr.vad_model must be set".into());
        }
        if self.llm.enabled && self.llm.max_tokens == 0 {
            return bad("llm.max_tokens must be at least 1".into());
        }
        let sip = &self.sip;
        if !sip.listen.is_empty() && sip.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "sip.listen {:?} is not an IP:port address",
                sip.listen
            ));
        }
        if sip.rtp_port_min < 1024 || sip.rtp_port_max <= sip.rtp_port_min {
            return bad(format!(
                "sip.rtp_port_min..=rtp_port_max ({}..={}) must be a range above 1023",
                sip.rtp_port_min, sip.rtp_port_max
            ));
        }
        if !sip.invites_per_second_per_source.is_finite()
            || sip.invites_per_second_per_source <= 0.0
            || sip.invite_burst_per_source == 0
            || sip.max_unconfirmed_per_source == 0
        {
            return bad(
                "sip.invites_per_second_per_source, invite_burst_per_source and \
                 max_unconfirmed_per_source must be positive"
                    .into(),
            );
        }
        if !sip.public_ip.is_empty() && sip.public_ip.parse::<std::net::IpAddr>().is_err() {
            return bad(format!(
                "sip.public_ip {:?} is not an IP address",
                sip.public_ip
            ));
        }
        Ok(())
    }

    /// Without `server.api_keys` only the public demo key works, so nothing may listen beyond
    /// this machine: the HTTP listener, SIP and WebRTC's media sockets must be on loopback.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.server.api_keys.is_empty() {
            return Ok(());
        }
        let exposed = |what: &str, addr: &str| {
            Err(ConfigError::Invalid(format!(
                "{what} = \"{addr}\" is reachable from other machines, but no server.api_keys \
                 are set, so anyone there could use the public demo key: set server.api_keys \
                 (e.g. api_keys = [\"<a long random string>\"]) or listen on 127.0.0.1"
            )))
        };
        if !is_loopback_host(&self.server.host) {
            return exposed("server.host", &self.server.host);
        }
        if !self.sip.listen.is_empty() {
            let host = self
                .sip
                .listen
                .rsplit_once(':')
                .map_or(self.sip.listen.as_str(), |(h, _)| h);
            if !is_loopback_host(host) {
                return exposed("sip.listen", &self.sip.listen);
            }
        }
        if let Some((host, _)) = self.server.agent_check_listen.rsplit_once(':')
            && !is_loopback_host(host)
        {
            return exposed("server.agent_check_listen", &self.server.agent_check_listen);
        }
        if let Some(ip) = self
            .webrtc
            .candidate_ips
            .iter()
            .find(|ip| !ip.is_loopback())
        {
            return exposed("webrtc.candidate_ips", &ip.to_string());
        }
        Ok(())
    }

    /// The keys the auth layer accepts, and whether that is the demo key.
    pub fn accepted_keys(&self) -> (Vec<String>, bool) {
        if self.server.api_keys.is_empty() {
            (vec![DEMO_API_KEY.to_string()], true)
        } else {
            (self.server.api_keys.clone(), false)
        }
    }
}

/// "127.0.0.1", "::1", "[::1]", "localhost" and the rest of 127/8.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: a fresh install with no keys is reachable from this machine only.
    #[test]
    fn without_keys_nothing_listens_beyond_loopback() {
        let c = Config::parse("").unwrap();
        assert!(is_loopback_host(&c.server.host), "{}", c.server.host);
        for exposed in [
            "[server]\nhost = \"0.0.0.0\"",
            "[server]\nhost = \"192.168.1.20\"",
            "[sip]\nlisten = \"0.0.0.0:5060\"",
            "[webrtc]\ncandidate_ips = [\"10.1.2.3\"]",
        ] {
            match Config::parse(exposed) {
                Err(ConfigError::Invalid(why)) => {
                    assert!(why.contains("server.api_keys"), "{exposed}: {why}")
                }
                other => panic!("{exposed}: accepted without keys: {other:?}"),
            }
            let with_keys = format!("{exposed}\n").replace("[server]\n", "");
            let with_keys = format!("[server]\napi_keys = [\"k\"]\n{with_keys}");
            assert!(Config::parse(&with_keys).is_ok(), "{with_keys}");
        }
        for local in ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"] {
            assert!(
                Config::parse(&format!("[server]\nhost = \"{local}\"")).is_ok(),
                "{local}"
            );
        }
    }

    #[test]
    fn empty_file_gives_defaults_with_demo_key() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.accepted_keys(), (vec![DEMO_API_KEY.to_string()], true));
    }

    #[test]
    fn example_file_parses_and_matches_defaults_where_documented() {
        let text = include_str!("../../antiphon.example.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.server.max_message_bytes, 1 << 20);
        assert_eq!(c.session, SessionDefaults::default());
    }

    #[test]
    fn max_sessions_is_a_number_or_auto_from_the_measured_capacity_per_cpu() {
        // The reference box (2 vCPUs) measured 3; one CPU still admits one session.
        assert_eq!(SessionLimit::for_cpus(2).get(), 3);
        assert_eq!(SessionLimit::for_cpus(1).get(), 1);
        assert_eq!(SessionLimit::for_cpus(16).get(), 24);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for text in ["", "[server]\nmax_sessions = \"auto\""] {
            let limit = Config::parse(text).unwrap().server.max_sessions;
            assert_eq!(limit, SessionLimit::for_cpus(cpus), "{text:?}");
            assert!(limit.describe().contains("auto"));
        }
        let fixed = Config::parse("[server]\nmax_sessions = 8").unwrap();
        assert_eq!(fixed.server.max_sessions, SessionLimit::Fixed(8));
        for bad in ["\"lots\"", "-1", "0", "2.5"] {
            assert!(
                Config::parse(&format!("[server]\nmax_sessions = {bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(matches!(
            Config::parse("[server]\nprot = 1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::parse("[server]\nmax_sessions = 0"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("[server]\napi_keys = [\"a b\"]"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("[session]\nvad_threshold = 2.0"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("[session]\nturn_detection = \"semantic\""),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::parse("[llm]\nthreads = 0"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::parse("[llm]\nenabled = false\nthreads = 0").is_ok());
        assert!(matches!(
            Config::parse("[sip]\nlisten = \"5060\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("[sip]\nrtp_port_min = 30000\nrtp_port_max = 20000"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(
            Config::parse(
                "[server]\napi_keys = [\"k\"]\n[sip]\nlisten = \"0.0.0.0:5060\"\npublic_ip = \"203.0.113.7\""
            )
            .is_ok()
        );
        assert!(matches!(
            Config::parse("[twilio]\npublic_url = \"https://voice.example.com/v1/twilio\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            Config::parse("[twilio]\nauth_token = \"a b\""),
            Err(ConfigError::Invalid(_))
        ));
        assert!(
            Config::parse(
                "[twilio]\nauth_token = \"abc\"\npublic_url = \"wss://v.example/v1/twilio\""
            )
            .is_ok()
        );
    }

    #[test]
    fn configured_keys_replace_the_demo_key() {
        let c = Config::parse("[server]\napi_keys = [\"k1\", \"k2\"]").unwrap();
        assert_eq!(
            c.accepted_keys(),
            (vec!["k1".to_string(), "k2".to_string()], false)
        );
    }
}
