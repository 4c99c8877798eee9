//! A real browser over WebRTC: `antiphon serve` with the CI models (Moonshine, SmolLM2, Piper
//! joe), headless Chromium (Debian `chromium` + `chromium-driver`, driven by
//! `web-demo/headless_check.py` over plain WebDriver HTTP) opening the demo page at
//! `/?autostart=1` with a LibriVox clip as its microphone. The page negotiates WebRTC
//! (`POST /v1/webrtc`), talks once hands-free, and the test checks what the page saw:
//! the user transcript matches the clip's text, the reply came back as non-silent RTP/Opus on
//! the WebRTC track (the browser's own `getStats`), a latency waterfall was rendered. The
//! screenshot after the first turn goes to `target/artifacts/web-demo-webrtc.png`.
//!
//! Needs the model store (CI models, `librivox-clips/`) and Chromium: without Chromium the
//! test fails with a message saying what to install (scripts/setup.sh installs it).

mod common;

use common::{CI_LLM, ServerOptions, TestServer};

use std::path::{Path, PathBuf};

use antiphon_models::asr::wer::wer;
use antiphon_models::store::ModelStore;
use serde_json::Value;
use tokio::process::Command;

/// The 7.1 s clip (22 words: "and mister john dashwood had then leisure to consider how much
/// there might be prudently in his power to do for them"), so that one misheard word does not
/// decide the WER.
const CLIP: &str = "sense_and_sensibility_01_austen_64kb-0870";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ sits in the repository")
        .to_path_buf()
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}

async fn start_server(web_demo: &Path) -> TestServer {
    let config = format!(
        "[server]\nweb_demo_dir = {:?}\n{CI_LLM}",
        web_demo.display().to_string()
    );
    TestServer::start(ServerOptions {
        config: &config,
        ..ServerOptions::default()
    })
    .await
}

#[tokio::test]
async fn browser_talks_to_the_agent_over_webrtc() {
    let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
        panic!(
            "this test needs Debian's `chromium` and `chromium-driver` on PATH \
             (apt-get install -y --no-install-recommends chromium chromium-driver; \
             scripts/setup.sh does it)"
        );
    };
    let root = repo_root();
    let store = ModelStore::from_env().expect("model store");
    let clip_dir = store.root().join("librivox-clips");
    let wav = clip_dir.join(format!("{CLIP}.wav"));
    let text = std::fs::read_to_string(clip_dir.join(format!("{CLIP}.txt"))).expect("clip txt");

    let server = start_server(&root.join("web-demo")).await;
    let port = server.port;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|r| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| r.join("target"))
        })
        .expect("target dir")
        .join("artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/artifacts");
    let screenshot = artifacts.join("web-demo-webrtc.png");
    let json = artifacts.join("web-demo-webrtc.json");

    let out = Command::new("python3")
        .arg(root.join("web-demo/headless_check.py"))
        .args(["--base", &format!("http://127.0.0.1:{port}")])
        .arg("--wav")
        .arg(&wav)
        .args([
            "--seconds",
            "90",
            "--until-reply",
            "--expect-reply",
            "--expect-webrtc",
        ])
        .arg("--chromium")
        .arg(&chromium)
        .arg("--chromedriver")
        .arg(&driver)
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .expect("run python3 web-demo/headless_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "headless check failed ({}): {stderr}",
        out.status
    );

    let snap: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("snapshot json")).expect("json");
    assert_eq!(snap["transport"], "webrtc");
    // What the user said, as the page showed it.
    let user: Vec<&str> = snap["transcripts"]
        .as_array()
        .expect("transcripts")
        .iter()
        .filter(|t| t["role"] == "user" && t["final"] == true)
        .filter_map(|t| t["text"].as_str())
        .collect();
    let heard = user.join(" ");
    let user_wer = wer(&text, &heard);
    println!(
        "user transcript {heard:?} vs {:?}: WER {user_wer:.2}",
        text.trim()
    );
    assert!(
        user_wer <= 0.2,
        "the page's user transcript {heard:?} does not match the clip {text:?} (WER {user_wer:.2})"
    );
    // The reply over WebRTC: RTP packets and non-silent audio, from the browser's getStats.
    let stats = &snap["webrtc"]["stats"];
    assert!(
        stats["packetsReceived"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(stats["bytesReceived"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert!(
        stats["totalAudioEnergy"].as_f64().unwrap_or(0.0) > 0.0,
        "{stats}"
    );
    // A latency report reached the page and was drawn.
    assert!(snap["waterfalls"].as_u64().unwrap_or(0) > 0, "no waterfall");
    let turn = snap["turns"]
        .as_array()
        .and_then(|t| t.iter().find(|t| !t["latency"].is_null()))
        .expect("a turn with a latency report");
    println!(
        "browser TTFB (microphone quiet -> reply heard at the page): {} ms; \
         speech_stopped -> heard: {} ms; server first_audio_sent: {} ms",
        turn["page"]["micEndToHeardMs"],
        turn["page"]["firstAudioHeardMs"],
        turn["latency"]["first_audio_sent_ms"]
    );
    assert!(
        turn["page"]["micEndToHeardMs"].as_f64().is_some(),
        "the page measured no end-of-speech -> heard time"
    );
    assert!(
        screenshot.is_file(),
        "screenshot at {}",
        screenshot.display()
    );
}
