//! The turn machine driven with virtual time: every instant is `t0 + ms`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::realtime::protocol::{Dialect, decode_client, server_event_name};
use crate::session::conversation::ChatMessage;
use crate::session::conversation::ChatRole;
use crate::session::conversation::item_text_bytes;
use crate::session::engine::{Engine, EngineCommand, EngineEvent, Engines, Epoch};
use antiphon_audio::frame::AudioFrame;
use antiphon_models::vad::endpoint::{EndpointConfig, TurnEnd};

const ALL: Engines = Engines {
    asr: true,
    llm: true,
    tts: true,
};

struct H {
    tm: TurnManager,
    t0: Instant,
}

fn config() -> SessionConfig {
    SessionConfig {
        id: "sess_test".into(),
        model: "antiphon".into(),
        instructions: "Be brief.".into(),
        voice: "joe".into(),
        input_format: AudioFormat::Pcm16,
        output_format: AudioFormat::Pcm16,
        turn_detection: Some(TurnDetection::default()),
        transcription: Some(Transcription::default()),
        output_modalities: vec![Modality::Audio],
        max_output_tokens: Some(64),
    }
}

impl H {
    fn new(engines: Engines) -> H {
        H::with(config(), engines, TurnSettings::default())
    }

    fn with(config: SessionConfig, engines: Engines, settings: TurnSettings) -> H {
        let mut h = H {
            tm: TurnManager::new(config, engines, settings),
            t0: Instant::now(),
        };
        let first = h.drain();
        assert!(matches!(
            first.as_slice(),
            [Output::Event(ServerEvent::SessionCreated(_))]
        ));
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn client(&mut self, ms: u64, v: Value) -> Vec<Output> {
        let m = decode_client(&v.to_string(), &Limits::default()).expect("valid client event");
        self.tm.handle_client(self.at(ms), m);
        self.drain()
    }

    fn engine(&mut self, ms: u64, e: EngineEvent) -> Vec<Output> {
        self.tm.handle_engine(self.at(ms), e);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.tm.poll_output()).collect()
    }
}

/// What a client sees when server VAD ends a turn that creates an audio reply: the input is
/// committed and the response opened (its LLM waits for the transcript).
const ENDPOINT_EVENTS: [&str; 7] = [
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
];

/// GA wire names of the events, commands as short tags: a compact, readable trace.
fn trace(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => server_event_name(e, Dialect::Ga).map(str::to_string),
            Output::Command(c) => Some(
                match c {
                    EngineCommand::AsrAudio { .. } => "cmd:asr_audio",
                    EngineCommand::AsrCommit => "cmd:asr_commit",
                    EngineCommand::AsrReset => "cmd:asr_reset",
                    EngineCommand::AsrConfigure(_) => "cmd:asr_configure",
                    EngineCommand::LlmStart { .. } => "cmd:llm_start",
                    EngineCommand::LlmCancel { .. } => "cmd:llm_cancel",
                    EngineCommand::LlmWithdraw { .. } => "cmd:llm_withdraw",
                    EngineCommand::LlmLookahead { .. } => "cmd:llm_lookahead",
                    EngineCommand::LlmPrepare { .. } => "cmd:llm_prepare",
                    EngineCommand::TtsText { .. } => "cmd:tts_text",
                    EngineCommand::TtsFinish { .. } => "cmd:tts_finish",
                    EngineCommand::TtsCancel { .. } => "cmd:tts_cancel",
                }
                .to_string(),
            ),
        })
        .collect()
}

fn errors(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(ServerEvent::Error(e)) => Some(e.code),
            _ => None,
        })
        .collect()
}

fn llm_start(out: &[Output]) -> (Epoch, Vec<ChatMessage>) {
    out.iter()
        .find_map(|o| match o {
            Output::Command(EngineCommand::LlmStart {
                epoch, messages, ..
            }) => Some((*epoch, messages.clone())),
            _ => None,
        })
        .expect("LlmStart")
}

fn tts(epoch: Epoch, ms_of_audio: usize, text: &str) -> EngineEvent {
    EngineEvent::TtsAudio {
        epoch,
        samples: vec![0.1; 24 * ms_of_audio],
        rate: 24_000,
        text: text.into(),
    }
}

fn response_id(out: &[Output]) -> String {
    out.iter()
        .find_map(|o| match o {
            Output::Event(ServerEvent::ResponseCreated(r)) => Some(r.id.clone()),
            _ => None,
        })
        .expect("response.created")
}

fn done_status(out: &[Output]) -> Option<(ResponseStatus, Option<CancelReason>)> {
    out.iter().find_map(|o| match o {
        Output::Event(ServerEvent::ResponseDone(r)) => Some((r.status, r.cancel_reason)),
        _ => None,
    })
}

/// A server-VAD voice turn up to the first reply audio; returns (epoch, response id).
fn voice_turn_until_audio(h: &mut H) -> (Epoch, String) {
    h.client(
        0,
        json!({"type": "input_audio_buffer.append", "audio": "AAAAAA=="}),
    );
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    let out = h.engine(1000, EngineEvent::SpeechStopped { audio_ms: 1000 });
    let rid = response_id(&out);
    let out = h.engine(
        1100,
        EngineEvent::TranscriptFinal {
            text: "what time is it".into(),
        },
    );
    let (epoch, _) = llm_start(&out);
    h.engine(
        1200,
        EngineEvent::LlmToken {
            epoch,
            text: "It is".into(),
        },
    );
    h.engine(
        1250,
        EngineEvent::LlmToken {
            epoch,
            text: " noon,".into(),
        },
    );
    h.engine(
        1300,
        EngineEvent::LlmToken {
            epoch,
            text: " friend".into(),
        },
    );
    h.engine(1400, tts(epoch, 500, "It is noon,"));
    h.tm.audio_sent(h.at(1410), &rid);
    h.drain();
    (epoch, rid)
}

#[test]
fn without_engines_requests_needing_them_say_so() {
    let mut h = H::new(Engines::default());
    let out = h.client(0, json!({"type": "response.create", "event_id": "r1"}));
    assert_eq!(errors(&out), ["engine_unavailable"]);
    let Output::Event(ServerEvent::Error(e)) = &out[0] else {
        panic!()
    };
    assert_eq!(e.event_id.as_deref(), Some("r1"));
    assert!(e.message.contains("llm"));
    // server_vad with no ASR: one error on the first append, not one per frame.
    let out = h.client(
        10,
        json!({"type": "input_audio_buffer.append", "audio": "AAAA"}),
    );
    assert_eq!(errors(&out), ["engine_unavailable"]);
    assert!(
        h.client(
            20,
            json!({"type": "input_audio_buffer.append", "audio": "AAAA"})
        )
        .is_empty()
    );
    // Commit works (the item exists) but transcription cannot happen.
    let out = h.client(30, json!({"type": "input_audio_buffer.commit"}));
    assert_eq!(
        trace(&out),
        [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "error"
        ]
    );
    assert_eq!(h.tm.conversation().len(), 1);
}

#[test]
fn text_only_response_needs_no_tts() {
    let mut h = H::new(Engines {
        asr: false,
        llm: true,
        tts: false,
    });
    let out = h.client(0, json!({"type": "response.create"}));
    assert_eq!(
        errors(&out),
        ["engine_unavailable"],
        "audio reply needs tts"
    );
    let out = h.client(10, json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}));
    assert_eq!(
        trace(&out),
        ["conversation.item.added", "conversation.item.done"]
    );
    let out = h.client(
        20,
        json!({"type": "response.create", "response": {"output_modalities": ["text"]}}),
    );
    assert_eq!(
        trace(&out),
        [
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "cmd:llm_start"
        ]
    );
    let (epoch, messages) = llm_start(&out);
    assert_eq!(
        messages[0],
        ChatMessage {
            role: ChatRole::System,
            content: "Be brief.".into()
        }
    );
    assert_eq!(
        messages[1],
        ChatMessage {
            role: ChatRole::User,
            content: "hi".into()
        }
    );
    assert_eq!(
        messages.len(),
        2,
        "the empty reply item is not sent to the LLM"
    );
    let out = h.engine(
        70,
        EngineEvent::LlmToken {
            epoch,
            text: "Hello".into(),
        },
    );
    assert_eq!(trace(&out), ["response.output_text.delta"]);
    h.engine(
        80,
        EngineEvent::LlmToken {
            epoch,
            text: "!".into(),
        },
    );
    let out = h.engine(90, EngineEvent::LlmDone { epoch });
    assert_eq!(
        trace(&out),
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "antiphon.turn.latency",
            "response.done"
        ]
    );
    assert_eq!(done_status(&out), Some((ResponseStatus::Completed, None)));
    let latency = out.iter().find_map(|o| match o {
        Output::Event(ServerEvent::TurnLatency(t)) => Some(t.clone()),
        _ => None,
    });
    let latency = latency.unwrap();
    assert_eq!(latency.origin, LatencyOrigin::ResponseCreate);
    assert_eq!(latency.llm_first_token_ms, Some(50.0));
    let chat = h.tm.conversation().to_chat("");
    assert_eq!(
        chat.last().unwrap(),
        &ChatMessage {
            role: ChatRole::Assistant,
            content: "Hello!".into()
        }
    );
}

#[test]
fn server_vad_voice_turn_end_to_end_with_latency_trace() {
    let mut h = H::new(ALL);
    // 100 ms of 24 kHz pcm16 becomes about 1600 samples at 16 kHz for the ASR (less up to
    // one 20 ms chunk + 10 ms filter delay the streaming resampler still holds).
    let audio = crate::realtime::protocol::tests_support::b64(&vec![0u8; 4800]);
    let out = h.client(
        0,
        json!({"type": "input_audio_buffer.append", "audio": audio}),
    );
    let samples: usize = out
        .iter()
        .map(|o| match o {
            Output::Command(EngineCommand::AsrAudio { samples, .. }) => samples.len(),
            _ => 0,
        })
        .sum();
    assert!((1120..=1600).contains(&samples), "{samples}");

    let out = h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    assert_eq!(trace(&out), ["input_audio_buffer.speech_started"]);
    let out = h.engine(
        120,
        EngineEvent::TranscriptPartial {
            text: "what".into(),
        },
    );
    // The caller's words so far also go to the LLM to prefill.
    assert_eq!(
        trace(&out),
        [
            "cmd:llm_lookahead",
            "conversation.item.input_audio_transcription.delta"
        ]
    );
    let out = h.engine(1000, EngineEvent::SpeechStopped { audio_ms: 1000 });
    assert_eq!(
        trace(&out),
        ENDPOINT_EVENTS,
        "the LLM waits for the transcript"
    );
    let rid = response_id(&out);
    let out = h.engine(
        1100,
        EngineEvent::TranscriptFinal {
            text: "what time is it".into(),
        },
    );
    assert_eq!(
        trace(&out),
        [
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done",
            "cmd:llm_start"
        ]
    );
    let (epoch, messages) = llm_start(&out);
    assert_eq!(epoch, h.tm.epoch());
    assert_eq!(
        messages.last().unwrap(),
        &ChatMessage {
            role: ChatRole::User,
            content: "what time is it".into()
        }
    );

    // Tokens go straight to the TTS engine, which cuts its own chunks.
    let out = h.engine(
        1200,
        EngineEvent::LlmToken {
            epoch,
            text: "It is".into(),
        },
    );
    assert!(
        matches!(out.as_slice(), [Output::Command(EngineCommand::TtsText { text, voice, .. })] if text == "It is" && voice == "joe")
    );
    let out = h.engine(
        1250,
        EngineEvent::LlmToken {
            epoch,
            text: " noon, friend".into(),
        },
    );
    assert_eq!(trace(&out), ["cmd:tts_text"]);
    // The engine handed its first clause ("It is noon,") to synthesis.
    assert!(h.engine(1250, EngineEvent::TtsClause { epoch }).is_empty());

    let out = h.engine(1400, tts(epoch, 500, "It is noon,"));
    assert_eq!(
        trace(&out),
        [
            "response.output_audio.delta",
            "response.output_audio_transcript.delta"
        ]
    );
    let Output::Event(ServerEvent::AudioDelta { audio, .. }) = &out[0] else {
        panic!()
    };
    assert!(
        audio.len() > 23_000 && audio.len() <= 24_000,
        "500 ms at 24 kHz pcm16: {}",
        audio.len()
    );

    h.tm.audio_sent(h.at(1410), &rid);
    let out = h.drain();
    let [Output::Event(ServerEvent::TurnLatency(t))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(t.origin, LatencyOrigin::SpeechEnd);
    assert_eq!(t.asr_final_ms, Some(100.0));
    assert_eq!(t.llm_first_token_ms, Some(200.0));
    assert_eq!(t.first_clause_ms, Some(250.0));
    assert_eq!(t.tts_first_audio_ms, Some(400.0));
    assert_eq!(t.first_audio_sent_ms, Some(410.0));
    h.tm.audio_sent(h.at(1500), &rid);
    assert!(h.drain().is_empty(), "latency is reported once");

    let out = h.engine(1500, EngineEvent::LlmDone { epoch });
    assert_eq!(trace(&out), ["cmd:tts_finish"]);
    h.engine(1600, tts(epoch, 300, " friend"));
    let out = h.engine(1700, EngineEvent::TtsDone { epoch });
    assert_eq!(
        trace(&out),
        [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done"
        ]
    );
    assert_eq!(done_status(&out), Some((ResponseStatus::Completed, None)));
    let chat = h.tm.conversation().to_chat("");
    assert_eq!(chat.last().unwrap().content, "It is noon, friend");
    assert!(h.tm.active_response().is_none());
}

#[test]
fn barge_in_cancels_by_epoch_and_drops_stale_output() {
    let mut h = H::new(ALL);
    let (epoch, _) = voice_turn_until_audio(&mut h);
    // Past the 300 ms echo guard (opened at 1410).
    let out = h.engine(2000, EngineEvent::SpeechStarted { audio_ms: 2000 });
    assert_eq!(
        trace(&out)[..3],
        [
            "cmd:llm_cancel",
            "cmd:tts_cancel",
            "response.output_audio.done"
        ]
    );
    assert_eq!(
        trace(&out).last().unwrap(),
        "input_audio_buffer.speech_started"
    );
    assert_eq!(
        done_status(&out),
        Some((ResponseStatus::Cancelled, Some(CancelReason::TurnDetected)))
    );
    // Transports that own playout are told to stop right before the cancel.
    let stop = out
        .iter()
        .position(|o| *o == Output::Event(ServerEvent::StopPlayout))
        .expect("StopPlayout");
    assert!(
        matches!(out[stop + 1], Output::Command(EngineCommand::LlmCancel { epoch: e }) if e == epoch)
    );
    assert!(h.tm.epoch() > epoch);
    // Late audio and tokens for the cancelled epoch vanish.
    assert!(h.engine(2010, tts(epoch, 200, " friend")).is_empty());
    assert!(
        h.engine(
            2020,
            EngineEvent::LlmToken {
                epoch,
                text: "x".into()
            }
        )
        .is_empty()
    );
    assert!(h.engine(2030, EngineEvent::TtsDone { epoch }).is_empty());
    assert_eq!(h.tm.counters().stale_outputs_dropped, 3);
    assert_eq!(h.tm.counters().responses_cancelled, 1);
    // The interrupted reply keeps what was produced; the client truncates to what it played.
    let reply =
        h.tm.conversation()
            .items()
            .find(|i| {
                matches!(
                    &i.kind,
                    ItemKind::Message {
                        role: Role::Assistant,
                        ..
                    }
                )
            })
            .unwrap()
            .clone();
    assert_eq!(reply.status, ItemStatus::Incomplete);
    let out = h.client(2100, json!({"type": "conversation.item.truncate", "item_id": reply.id, "content_index": 0, "audio_end_ms": 300}));
    assert_eq!(trace(&out), ["conversation.item.truncated"]);
    // The user's new turn starts a new response whose LLM context has the truncated reply.
    h.engine(2500, EngineEvent::SpeechStopped { audio_ms: 2500 });
    let out = h.engine(
        2600,
        EngineEvent::TranscriptFinal {
            text: "wait".into(),
        },
    );
    let (e2, messages) = llm_start(&out);
    assert!(e2 > epoch);
    let assistant: Vec<&ChatMessage> = messages
        .iter()
        .filter(|m| m.role == ChatRole::Assistant)
        .collect();
    assert_eq!(assistant.len(), 1);
    assert_eq!(
        assistant[0].content, "It is",
        "300 of 500 ms played: the first words only"
    );
}

#[test]
fn echo_guard_ignores_short_speech_but_not_long_speech() {
    let mut h = H::new(ALL);
    let (epoch, _) = voice_turn_until_audio(&mut h);
    // Speech 50 ms after the first audio went out, ending inside the guard: treated as echo.
    let out = h.engine(1460, EngineEvent::SpeechStarted { audio_ms: 1460 });
    assert_eq!(trace(&out), ["input_audio_buffer.speech_started"]);
    assert_eq!(h.tm.poll_timeout(), Some(h.at(1710)));
    assert!(!out.contains(&Output::Event(ServerEvent::StopPlayout)));
    let out = h.engine(1600, EngineEvent::SpeechStopped { audio_ms: 1600 });
    assert!(out.is_empty(), "{:?}", trace(&out));
    assert_eq!(h.tm.poll_timeout(), None);
    assert!(h.tm.active_response().is_some());
    // Speech inside the guard that is still going when it ends: a real barge-in.
    h.engine(1650, EngineEvent::SpeechStarted { audio_ms: 1650 });
    let deadline = h.tm.poll_timeout().expect("guard deadline");
    h.tm.handle_timeout(deadline - Duration::from_millis(1));
    assert!(h.drain().is_empty(), "not yet");
    h.tm.handle_timeout(deadline);
    let out = h.drain();
    assert!(out.contains(&Output::Event(ServerEvent::StopPlayout)));
    assert_eq!(
        done_status(&out),
        Some((ResponseStatus::Cancelled, Some(CancelReason::TurnDetected)))
    );
    assert!(h.engine(1800, tts(epoch, 100, "x")).is_empty());
}

/// A reply is done once synthesized while its audio still plays: the echo of its opening that
/// ends after `response.done` but inside the guard is still our own echo (seen on the SIP
/// path with a fast LLM: the echo became a user turn and a second reply).
#[test]
fn echo_guard_outlives_a_reply_that_is_done_but_playing() {
    let settings = TurnSettings {
        echo_guard: Duration::from_millis(2500),
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    let (epoch, _) = voice_turn_until_audio(&mut h);
    // Guard: 1410 + 2500 ms.
    h.engine(1500, EngineEvent::SpeechStarted { audio_ms: 1500 });
    h.engine(1600, EngineEvent::LlmDone { epoch });
    let out = h.engine(1700, EngineEvent::TtsDone { epoch });
    assert!(done_status(&out).is_some(), "{:?}", trace(&out));
    assert!(h.tm.active_response().is_none());
    let out = h.engine(2200, EngineEvent::SpeechStopped { audio_ms: 2200 });
    assert!(out.is_empty(), "no commit, no new reply: {:?}", trace(&out));
    // Speech after a done reply that outlasts the guard stops its playout (a barge-in).
    h.engine(3800, EngineEvent::SpeechStarted { audio_ms: 3800 });
    let deadline = h.tm.poll_timeout().expect("guard deadline");
    assert_eq!(deadline, h.at(3910));
    h.tm.handle_timeout(deadline);
    let out = h.drain();
    assert!(out.contains(&Output::Event(ServerEvent::StopPlayout)));
    assert_eq!(h.tm.poll_timeout(), None);
}

#[test]
fn interrupt_response_false_lets_the_reply_finish() {
    let mut c = config();
    c.turn_detection = Some(TurnDetection {
        interrupt_response: false,
        ..TurnDetection::default()
    });
    let mut h = H::with(c, ALL, TurnSettings::default());
    let (epoch, _) = voice_turn_until_audio(&mut h);
    let out = h.engine(3000, EngineEvent::SpeechStarted { audio_ms: 3000 });
    assert_eq!(trace(&out), ["input_audio_buffer.speech_started"]);
    assert!(
        h.engine(3010, tts(epoch, 100, " friend"))
            .iter()
            .any(|o| matches!(o, Output::Event(ServerEvent::AudioDelta { .. })))
    );
}

#[test]
fn manual_turns_commit_then_response_create() {
    let mut c = config();
    c.turn_detection = None;
    let mut h = H::with(c, ALL, TurnSettings::default());
    h.client(
        0,
        json!({"type": "input_audio_buffer.append", "audio": "AAAAAA=="}),
    );
    assert!(
        h.engine(10, EngineEvent::SpeechStarted { audio_ms: 10 })
            .is_empty(),
        "VAD is ignored in manual mode"
    );
    let out = h.client(500, json!({"type": "input_audio_buffer.commit"}));
    assert_eq!(
        trace(&out),
        [
            "input_audio_buffer.committed",
            "conversation.item.added",
            "cmd:asr_commit"
        ]
    );
    let out = h.client(510, json!({"type": "response.create"}));
    assert!(
        !trace(&out).contains(&"cmd:llm_start".to_string()),
        "waits for the transcript"
    );
    let out = h.engine(
        600,
        EngineEvent::TranscriptFinal {
            text: "hello".into(),
        },
    );
    let (epoch, messages) = llm_start(&out);
    assert_eq!(messages.last().unwrap().content, "hello");
    h.engine(
        700,
        EngineEvent::LlmToken {
            epoch,
            text: "Hi there.".into(),
        },
    );
    let out = h.engine(710, EngineEvent::LlmDone { epoch });
    assert_eq!(trace(&out), ["cmd:tts_finish"]);
    h.engine(800, tts(epoch, 100, "Hi there."));
    h.engine(900, EngineEvent::TtsDone { epoch });
    // Clear resets the ASR.
    let out = h.client(1000, json!({"type": "input_audio_buffer.clear"}));
    assert_eq!(trace(&out), ["cmd:asr_reset", "input_audio_buffer.cleared"]);
}

#[test]
fn client_cancel_and_single_active_response() {
    let mut h = H::new(ALL);
    let out = h.client(0, json!({"type": "response.create"}));
    let rid = response_id(&out);
    let epoch = llm_start(&out).0;
    let out = h.client(10, json!({"type": "response.create", "event_id": "again"}));
    assert_eq!(errors(&out), ["conversation_already_has_active_response"]);
    let out = h.client(
        20,
        json!({"type": "response.cancel", "response_id": "resp_other"}),
    );
    assert_eq!(errors(&out), ["invalid_value"]);
    let out = h.client(30, json!({"type": "response.cancel", "response_id": rid}));
    assert_eq!(
        done_status(&out),
        Some((
            ResponseStatus::Cancelled,
            Some(CancelReason::ClientCancelled)
        ))
    );
    assert!(
        h.engine(
            40,
            EngineEvent::LlmToken {
                epoch,
                text: "late".into()
            }
        )
        .is_empty()
    );
    let out = h.client(50, json!({"type": "response.cancel"}));
    assert_eq!(errors(&out), ["response_cancel_not_active"]);
    // A new response gets a new epoch.
    let out = h.client(60, json!({"type": "response.create"}));
    assert!(llm_start(&out).0 > epoch);
}

#[test]
fn out_of_band_response_stays_out_of_the_conversation() {
    let mut h = H::new(ALL);
    let out = h.client(0, json!({"type": "response.create", "response": {"conversation": "none", "output_modalities": ["text"]}}));
    assert!(!trace(&out).contains(&"conversation.item.added".to_string()));
    let epoch = llm_start(&out).0;
    h.engine(
        10,
        EngineEvent::LlmToken {
            epoch,
            text: "summary".into(),
        },
    );
    let out = h.engine(20, EngineEvent::LlmDone { epoch });
    assert!(!trace(&out).contains(&"conversation.item.done".to_string()));
    let Some(Output::Event(ServerEvent::ResponseDone(r))) = out
        .iter()
        .find(|o| matches!(o, Output::Event(ServerEvent::ResponseDone(_))))
    else {
        panic!()
    };
    assert_eq!(r.output.len(), 1);
    assert!(
        matches!(&r.output[0].kind, ItemKind::Message { content, .. } if content[0] == Content::OutputText { text: "summary".into() })
    );
    assert!(h.tm.conversation().is_empty());
}

#[test]
fn engine_failure_fails_the_response() {
    let mut h = H::new(ALL);
    let out = h.client(0, json!({"type": "response.create"}));
    let epoch = llm_start(&out).0;
    let out = h.engine(
        10,
        EngineEvent::Failed {
            engine: Engine::Llm,
            epoch: Some(epoch),
            message: "oom".into(),
        },
    );
    assert_eq!(errors(&out), ["engine_failed"]);
    assert_eq!(done_status(&out).map(|d| d.0), Some(ResponseStatus::Failed));
    assert!(
        h.engine(
            20,
            EngineEvent::LlmToken {
                epoch,
                text: "x".into()
            }
        )
        .is_empty()
    );
}

#[test]
fn audio_buffer_limit_and_item_errors() {
    let settings = TurnSettings {
        limits: Limits {
            max_message_bytes: 1 << 20,
            max_audio_buffer_bytes: 8,
        },
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    h.client(
        0,
        json!({"type": "input_audio_buffer.append", "audio": "AAAAAAAA"}),
    );
    let out = h.client(
        1,
        json!({"type": "input_audio_buffer.append", "event_id": "a2", "audio": "AAAAAAAA"}),
    );
    assert_eq!(errors(&out), ["input_audio_buffer_full"]);
    assert_eq!(h.tm.counters().audio_bytes_rejected, 6);
    let out = h.client(2, json!({"type": "conversation.item.create", "previous_item_id": "nope", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}}));
    assert_eq!(errors(&out), ["item_not_found"]);
    h.client(3, json!({"type": "conversation.item.create", "item": {"id": "mine", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}}));
    let out = h.client(4, json!({"type": "conversation.item.create", "item": {"id": "mine", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "y"}]}}));
    assert_eq!(errors(&out), ["duplicate_item_id"]);
    let out = h.client(5, json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]}}));
    assert_eq!(errors(&out), ["unsupported_content"]);
    let out = h.client(6, json!({"type": "output_audio_buffer.clear"}));
    assert_eq!(errors(&out), ["unsupported_event"]);
}

/// Issue 17: with server VAD, minutes of silence never fill the input buffer (the session used
/// to go deaf after ~5.5 min); without VAD the buffer is the client's and still has a limit.
#[test]
fn silence_under_vad_never_fills_the_input_buffer() {
    use base64::Engine as _;
    let settings = TurnSettings {
        limits: Limits {
            max_message_bytes: 1 << 20,
            // 20 s of 24 kHz pcm16.
            max_audio_buffer_bytes: 960_000,
        },
        ..TurnSettings::default()
    };
    let second = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 48_000]);
    let append = json!({"type": "input_audio_buffer.append", "audio": second});
    let mut h = H::with(config(), ALL, settings.clone());
    for s in 0..600 {
        let out = h.client(s * 1000, append.clone());
        assert_eq!(errors(&out), Vec::<&str>::new(), "after {s} s of silence");
    }
    // The caller speaks after ten minutes: the turn is heard.
    h.engine(600_100, EngineEvent::SpeechStarted { audio_ms: 600_000 });
    let out = h.client(600_200, append.clone());
    assert_eq!(errors(&out), Vec::<&str>::new());

    let manual = SessionConfig {
        turn_detection: None,
        ..config()
    };
    let mut h = H::with(manual, ALL, settings);
    let full = (0..30)
        .map(|s| errors(&h.client(s * 1000, append.clone())))
        .position(|e| e == ["input_audio_buffer_full"]);
    assert_eq!(full, Some(20), "a manual buffer fills at its limit");
}

/// Issue 17: an unknown voice was accepted silently (and the default one spoken); now the
/// update is refused whole, saying which voices exist. OpenAI's names still work.
#[test]
fn an_unknown_voice_is_refused_and_openai_names_are_accepted() {
    let settings = TurnSettings {
        voices: std::sync::Arc::from(vec!["en_US-joe-medium".to_string(), "af_heart".into()]),
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    let before = h.tm.config.clone();
    let out = h.client(0, json!({"type": "session.update", "event_id": "u1", "session": {"voice": "nobody", "instructions": "new"}}));
    let [Output::Event(ServerEvent::Error(e))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (e.code, e.param.as_deref(), e.event_id.as_deref()),
        ("invalid_value", Some("session.voice"), Some("u1"))
    );
    assert!(e.message.contains("af_heart"), "{}", e.message);
    assert_eq!(h.tm.config, before, "nothing of the refused update applied");
    for voice in ["af_heart", "alloy", "marin"] {
        let out = h.client(
            1,
            json!({"type": "session.update", "session": {"voice": voice}}),
        );
        assert_eq!(errors(&out), Vec::<&str>::new(), "{voice}");
    }
}

#[test]
fn session_update_changes_formats_for_later_audio() {
    let mut h = H::new(ALL);
    let out = h.client(0, json!({"type": "session.update", "session": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_alaw"}}));
    let [Output::Event(ServerEvent::SessionUpdated(s))] = out.as_slice() else {
        panic!()
    };
    assert_eq!(
        (s.input_format, s.output_format),
        (AudioFormat::G711Ulaw, AudioFormat::G711Alaw)
    );
    // 800 bytes of mu-law = 100 ms at 8 kHz -> about 1600 samples at 16 kHz.
    let audio = crate::realtime::protocol::tests_support::b64(&vec![0xFFu8; 800]);
    let out = h.client(
        10,
        json!({"type": "input_audio_buffer.append", "audio": audio}),
    );
    let n: usize = out
        .iter()
        .map(|o| match o {
            Output::Command(EngineCommand::AsrAudio { samples, .. }) => samples.len(),
            _ => 0,
        })
        .sum();
    assert!((1120..=1600).contains(&n), "{n}");
    let out = h.client(20, json!({"type": "response.create"}));
    let epoch = llm_start(&out).0;
    let out = h.engine(30, tts(epoch, 100, "Hi."));
    let Some(Output::Event(ServerEvent::AudioDelta { audio, .. })) = out.first() else {
        panic!()
    };
    assert!(
        audio.len() > 760 && audio.len() <= 800,
        "100 ms of 8 kHz A-law: {}",
        audio.len()
    );
}

#[test]
fn tokens_go_straight_to_a_tts_that_chunks_itself() {
    let mut h = H::new(ALL);
    let out = h.client(0, json!({"type": "response.create"}));
    let epoch = llm_start(&out).0;
    let out = h.engine(
        10,
        EngineEvent::LlmToken {
            epoch,
            text: "It".into(),
        },
    );
    assert!(
        matches!(out.as_slice(), [Output::Command(EngineCommand::TtsText { text, .. })] if text == "It")
    );
    // The TTS engine reports its own first clause; another reply's report is stale.
    let stale = h.tm.counters().stale_outputs_dropped;
    assert!(
        h.engine(15, EngineEvent::TtsClause { epoch: epoch + 1 })
            .is_empty()
    );
    assert_eq!(h.tm.counters().stale_outputs_dropped, stale + 1);
    let out = h.engine(20, EngineEvent::LlmDone { epoch });
    assert_eq!(trace(&out), ["cmd:tts_finish"]);
    assert!(h.engine(25, EngineEvent::TtsClause { epoch }).is_empty());
    // Only the first report counts.
    assert!(h.engine(27, EngineEvent::TtsClause { epoch }).is_empty());
    let out = h.engine(30, tts(epoch, 100, "It"));
    let rid = h.tm.active_response().unwrap().to_string();
    assert_eq!(
        trace(&out),
        [
            "response.output_audio.delta",
            "response.output_audio_transcript.delta"
        ]
    );
    h.tm.audio_sent(h.at(40), &rid);
    let out = h.drain();
    let [Output::Event(ServerEvent::TurnLatency(t))] = out.as_slice() else {
        panic!()
    };
    assert_eq!(t.first_clause_ms, Some(25.0));
    assert_eq!(t.tts_first_audio_ms, Some(30.0));
}

fn assistant_text(h: &H) -> String {
    h.tm.conversation()
        .to_chat("")
        .into_iter()
        .filter(|m| m.role == ChatRole::Assistant)
        .map(|m| m.content)
        .collect()
}

fn truncated_at(out: &[Output]) -> Option<u32> {
    out.iter().find_map(|o| match o {
        Output::Event(ServerEvent::ItemTruncated { audio_end_ms, .. }) => Some(*audio_end_ms),
        _ => None,
    })
}

#[test]
fn barge_in_truncates_the_reply_to_what_a_real_time_listener_heard() {
    let mut h = H::new(ALL);
    // 500 ms of audio sent at 1410, then 1000 ms more: 1500 ms sent, played in real time.
    let (epoch, _) = voice_turn_until_audio(&mut h);
    h.engine(1500, tts(epoch, 1000, " my friend"));
    // Speech at 2010: 600 ms played (all of the first chunk, a tenth of the second).
    let out = h.engine(2010, EngineEvent::SpeechStarted { audio_ms: 2010 });
    assert_eq!(truncated_at(&out), Some(600));
    assert_eq!(
        done_status(&out),
        Some((ResponseStatus::Cancelled, Some(CancelReason::TurnDetected)))
    );
    assert_eq!(assistant_text(&h), "It is noon,");
}

#[test]
fn finished_reply_still_playing_is_truncated_at_barge_in() {
    let mut h = H::new(ALL);
    let (epoch, _) = voice_turn_until_audio(&mut h);
    h.engine(1500, tts(epoch, 2000, " my friend"));
    h.engine(1550, EngineEvent::LlmDone { epoch });
    let out = h.engine(1600, EngineEvent::TtsDone { epoch });
    assert_eq!(done_status(&out), Some((ResponseStatus::Completed, None)));
    // All 2500 ms were sent by 1600, but only 1590 ms played when the user speaks at 3000.
    let out = h.engine(3000, EngineEvent::SpeechStarted { audio_ms: 3000 });
    assert_eq!(truncated_at(&out), Some(1590));
    assert!(
        assistant_text(&h).starts_with("It is noon, my"),
        "{}",
        assistant_text(&h)
    );
    // A reply that has finished playing is left whole.
    let mut h = H::new(ALL);
    let (epoch, _) = voice_turn_until_audio(&mut h);
    h.engine(1550, EngineEvent::LlmDone { epoch });
    h.engine(1600, EngineEvent::TtsDone { epoch });
    let out = h.engine(2500, EngineEvent::SpeechStarted { audio_ms: 2500 });
    assert_eq!(truncated_at(&out), None);
    assert_eq!(assistant_text(&h), "It is noon,");
}

#[test]
fn session_update_changing_vad_parameters_reconfigures_the_asr_endpointer() {
    let mut h = H::new(ALL);
    let out = h.client(
        0,
        json!({"type": "session.update", "session": {"type": "realtime",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}}),
    );
    let cmds: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Command(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let d = TurnDetection::default();
    assert_eq!(
        cmds,
        vec![EngineCommand::AsrConfigure(EndpointConfig {
            threshold: d.threshold,
            prefix_padding_ms: d.prefix_padding_ms,
            silence_duration_ms: 900,
            turn_end: TurnEnd::Timer,
        })]
    );
    assert!(trace(&out).contains(&"session.updated".to_string()));

    // New instructions: the LLM side is told, so it can open and prefill the conversation
    // before the next turn; the same instructions again tell it nothing.
    let out = h.client(
        5,
        json!({"type": "session.update", "session": {"type": "realtime", "instructions": "Be terse."}}),
    );
    assert_eq!(trace(&out), ["cmd:llm_prepare", "session.updated"]);
    let prepared = out.iter().find_map(|o| match o {
        Output::Command(EngineCommand::LlmPrepare { messages }) => Some(messages.clone()),
        _ => None,
    });
    assert_eq!(
        prepared.and_then(|m| m.first().map(|m| m.content.clone())),
        Some("Be terse.".to_string())
    );
    // The same values again, or settings the endpointer does not use: nothing to apply.
    for session in [
        json!({"type": "realtime", "turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}),
        json!({"type": "realtime", "turn_detection": {"type": "server_vad", "create_response": false}}),
        json!({"type": "realtime", "instructions": "Be terse."}),
        json!({"type": "realtime", "turn_detection": null}),
    ] {
        let out = h.client(10, json!({"type": "session.update", "session": session}));
        assert_eq!(trace(&out), ["session.updated"], "{session}");
    }
    // Back to server VAD with the values the engine already has: still nothing.
    let out = h.client(
        20,
        json!({"type": "session.update", "session": {"type": "realtime",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}}),
    );
    assert_eq!(trace(&out), ["session.updated"]);
}

#[test]
fn vad_parameters_are_not_sent_to_a_missing_asr_engine() {
    let mut h = H::new(Engines {
        asr: false,
        llm: true,
        tts: true,
    });
    let out = h.client(
        0,
        json!({"type": "session.update", "session": {"type": "realtime",
            "turn_detection": {"type": "server_vad", "threshold": 0.8}}}),
    );
    assert_eq!(trace(&out), ["session.updated"]);
}

fn transcription_speaker(out: &[Output]) -> Option<Option<String>> {
    out.iter().find_map(|o| match o {
        Output::Event(ServerEvent::TranscriptionCompleted { speaker, .. }) => Some(speaker.clone()),
        _ => None,
    })
}

/// One server-VAD turn with a speaker label before its final; returns the `LlmStart`.
fn labelled_turn(h: &mut H, at: u64, label: &str, text: &str) -> (Epoch, Vec<ChatMessage>) {
    h.engine(at, EngineEvent::SpeechStarted { audio_ms: at });
    h.engine(at + 900, EngineEvent::SpeechStopped { audio_ms: at + 900 });
    let out = h.engine(
        at + 950,
        EngineEvent::SpeakerLabel {
            label: label.into(),
        },
    );
    assert!(
        out.is_empty(),
        "a label alone says nothing: {:?}",
        trace(&out)
    );
    let out = h.engine(at + 960, EngineEvent::TranscriptFinal { text: text.into() });
    assert_eq!(transcription_speaker(&out), Some(Some(label.to_string())));
    llm_start(&out)
}

#[test]
fn speaker_labels_reach_the_transcription_event_and_the_llm() {
    let mut h = H::new(ALL);
    h.client(
        0,
        json!({"type": "input_audio_buffer.append", "audio": "AAAAAA=="}),
    );
    let (epoch, messages) = labelled_turn(&mut h, 100, "S1", "hello");
    assert_eq!(messages.last().map(|m| m.content.as_str()), Some("hello"));
    h.engine(
        1200,
        EngineEvent::LlmToken {
            epoch,
            text: "Hi.".into(),
        },
    );
    h.engine(1250, EngineEvent::LlmDone { epoch });
    h.engine(1300, EngineEvent::TtsDone { epoch });
    let (_, messages) = labelled_turn(&mut h, 2000, "S2", "who are you");
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == ChatRole::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(users, ["Speaker 1: hello", "Speaker 2: who are you"]);
    // A final without a label has no speaker field, and the label is not carried over.
    h.engine(4000, EngineEvent::SpeechStarted { audio_ms: 4000 });
    h.engine(4900, EngineEvent::SpeechStopped { audio_ms: 4900 });
    let out = h.engine(4960, EngineEvent::TranscriptFinal { text: "x".into() });
    assert_eq!(transcription_speaker(&out), Some(None));
}

#[test]
fn leg_frames_reach_the_recogniser_at_16k_with_their_arrival() {
    let mut h = H::new(ALL);
    h.drain();
    let mut samples = 0;
    for i in 0..10u64 {
        let arrival = h.at(20 * i);
        h.tm.handle_audio(AudioFrame::new(vec![0.1; 960], 48_000, 960 * i, arrival));
        for o in h.drain() {
            if let Output::Command(EngineCommand::AsrAudio {
                samples: s,
                arrival: a,
            }) = o
            {
                assert_eq!(a, arrival, "the leg's stamp travels with its audio");
                samples += s.len();
            }
        }
    }
    // 200 ms at 48 kHz is 3200 samples at 16 kHz, less what the resampler still holds.
    assert!((2800..=3200).contains(&samples), "{samples}");
}

#[test]
fn a_legs_played_report_only_ever_shortens_the_item() {
    let mut h = H::new(ALL);
    voice_turn_until_audio(&mut h);
    let item =
        h.tm.conversation()
            .items()
            .find(|i| {
                matches!(
                    &i.kind,
                    ItemKind::Message {
                        role: Role::Assistant,
                        ..
                    }
                )
            })
            .expect("the reply item")
            .id
            .clone();
    assert_eq!(h.tm.conversation().audio_ms(&item), Some(500.0));
    h.tm.handle_played(&item, 300);
    assert_eq!(
        h.drain(),
        [Output::Event(ServerEvent::ItemTruncated {
            item_id: item.clone(),
            content_index: 0,
            audio_end_ms: 300,
        })]
    );
    // A later, longer report (marks echoed after the cut) cannot grow it back.
    h.tm.handle_played(&item, 450);
    assert!(h.drain().is_empty());
    assert_eq!(h.tm.conversation().audio_ms(&item), Some(300.0));
    h.tm.handle_played("no_such_item", 10);
    assert!(h.drain().is_empty());
}

#[test]
fn a_dtmf_key_becomes_a_user_text_item() {
    let mut h = H::new(ALL);
    h.drain();
    h.tm.handle_dtmf('#');
    let out = h.drain();
    assert_eq!(
        trace(&out),
        ["conversation.item.added", "conversation.item.done"]
    );
    let chat = h.tm.conversation().to_chat("");
    assert_eq!(chat.last().unwrap().content, "DTMF #");
}

/// Issue 17: at the item limit (a long call, or many key presses) the oldest items go, the
/// client is told, and the next turn still gets its whole reply (it used to never finish).
#[test]
fn a_full_conversation_forgets_its_oldest_items_and_keeps_answering() {
    let settings = TurnSettings {
        max_items: 4,
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    for key in ['1', '2', '3', '4', '5'] {
        h.tm.handle_dtmf(key);
    }
    let out = h.drain();
    assert_eq!(
        trace(&out)
            .iter()
            .filter(|e| *e == "conversation.item.deleted")
            .count(),
        2,
        "down to three quarters of the limit, then the new item"
    );
    let (epoch, _) = voice_turn_until_audio(&mut h);
    let out = h.engine(1500, EngineEvent::LlmDone { epoch });
    assert_eq!(errors(&out), Vec::<&str>::new());
    let out = h.engine(1600, EngineEvent::TtsDone { epoch });
    assert_eq!(
        done_status(&out).map(|(s, _)| s),
        Some(ResponseStatus::Completed)
    );
    let chat = h.tm.conversation().to_chat("");
    assert!(h.tm.conversation().items().count() <= 4);
    assert!(chat.iter().any(|m| m.content == "DTMF 5"), "{chat:?}");
    assert!(!chat.iter().any(|m| m.content == "DTMF 1"), "{chat:?}");
}

/// Issue 17: the conversation's text is bounded before anything is tokenized: the oldest items
/// make room, and one item larger than the whole budget is refused with a clear error.
#[test]
fn conversation_text_is_bounded_before_the_llm_sees_it() {
    let settings = TurnSettings {
        max_conversation_bytes: 4000,
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    let text = "x".repeat(900);
    let mut deleted = 0;
    for _ in 0..20 {
        let out = h.client(0, json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}));
        assert_eq!(errors(&out), Vec::<&str>::new());
        deleted += trace(&out)
            .iter()
            .filter(|e| *e == "conversation.item.deleted")
            .count();
    }
    let total: usize = h.tm.conversation().items().map(item_text_bytes).sum();
    assert!(total <= 4000, "{total} bytes kept");
    assert!(deleted >= 16, "{deleted} items deleted");
    let huge = "y".repeat(5000);
    let out = h.client(1, json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": huge}]}}));
    assert_eq!(errors(&out), ["invalid_value"]);
    // A reply still runs on what is left.
    let out = h.client(2, json!({"type": "response.create"}));
    let (_, messages) = llm_start(&out);
    assert!(messages.iter().map(|m| m.content.len()).sum::<usize>() < 4000 + 1000);
}

/// Issue 17: caller audio the recogniser dropped is the caller's business: an error event
/// says how much, and the session counts it for `/metrics`.
#[test]
fn dropped_caller_audio_is_reported_to_the_client() {
    let mut h = H::new(ALL);
    let out = h.engine(0, EngineEvent::InputAudioDropped { ms: 1200 });
    assert_eq!(errors(&out), ["input_audio_dropped"]);
    assert_eq!(h.tm.counters().input_audio_dropped_ms, 1200);
}

// ---------------------------------------------------------------------------------------------
// Speculative replies (issue 16)

fn paused(text: &str) -> EngineEvent {
    EngineEvent::SpeechPaused { text: text.into() }
}

fn token(epoch: Epoch, text: &str) -> EngineEvent {
    EngineEvent::LlmToken {
        epoch,
        text: text.into(),
    }
}

fn final_text(text: &str) -> EngineEvent {
    EngineEvent::TranscriptFinal { text: text.into() }
}

/// Nothing the client would see: no events, commands only.
fn only_commands(out: &[Output]) -> bool {
    out.iter().all(|o| matches!(o, Output::Command(_)))
}

#[test]
fn a_speculative_reply_is_held_until_the_endpoint_then_adopted() {
    let mut h = H::new(ALL);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    // The caller pauses; the recogniser's transcript of the pause starts the reply at once.
    let out = h.engine(700, paused("what time is it"));
    assert_eq!(trace(&out), ["cmd:llm_start"]);
    let (epoch, messages) = llm_start(&out);
    assert_eq!(
        messages.last().unwrap(),
        &ChatMessage {
            role: ChatRole::User,
            content: "what time is it".into()
        }
    );
    // Its tokens feed the TTS as a real reply's would; its audio is held.
    assert_eq!(
        trace(&h.engine(800, token(epoch, "It is noon,"))),
        ["cmd:tts_text"]
    );
    assert!(h.engine(810, EngineEvent::TtsClause { epoch }).is_empty());
    assert!(h.engine(900, tts(epoch, 500, "It is noon,")).is_empty());

    // The endpoint (stamped with the last voiced frame's arrival, as the pipeline does).
    let out = h.engine(500, EngineEvent::SpeechStopped { audio_ms: 1000 });
    assert_eq!(trace(&out), ENDPOINT_EVENTS);
    let rid = response_id(&out);
    // The final says what the pause said: the held reply goes out, with no second LLM turn.
    let out = h.engine(1010, final_text("what time is it"));
    assert_eq!(
        trace(&out),
        [
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done",
            "response.output_audio.delta",
            "response.output_audio_transcript.delta"
        ]
    );
    h.tm.audio_sent(h.at(1015), &rid);
    let out = h.drain();
    let [Output::Event(ServerEvent::TurnLatency(t))] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(t.speculation_started_ms, Some(200.0));
    assert_eq!(t.llm_first_token_ms, Some(300.0));
    assert_eq!(t.first_clause_ms, Some(310.0));
    assert_eq!(t.tts_first_audio_ms, Some(400.0));
    assert_eq!(t.asr_final_ms, Some(510.0));
    assert_eq!(t.first_audio_sent_ms, Some(515.0));

    // From here it is an ordinary reply.
    assert_eq!(
        trace(&h.engine(1100, token(epoch, " friend."))),
        ["cmd:tts_text"]
    );
    assert_eq!(
        trace(&h.engine(1100, EngineEvent::LlmDone { epoch })),
        ["cmd:tts_finish"]
    );
    h.engine(1200, tts(epoch, 300, " friend."));
    let out = h.engine(1300, EngineEvent::TtsDone { epoch });
    assert_eq!(done_status(&out), Some((ResponseStatus::Completed, None)));
    let c = h.tm.counters();
    assert_eq!(
        (
            c.speculations_started,
            c.speculations_adopted,
            c.speculations_withdrawn
        ),
        (1, 1, 0)
    );
    let chat = h.tm.conversation().to_chat("");
    assert_eq!(chat.len(), 2);
    assert_eq!(chat[1].content, "It is noon, friend.");
}

#[test]
fn a_caller_who_goes_on_never_hears_the_speculation_and_stays_one_user_item() {
    let mut h = H::new(ALL);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    let out = h.engine(700, paused("please enter your password"));
    let (first, _) = llm_start(&out);
    h.engine(750, token(first, "Sure,"));
    assert!(h.engine(800, tts(first, 300, "Sure,")).is_empty());
    // The caller goes on: the speculation is withdrawn from the engines, silently.
    let out = h.engine(850, EngineEvent::SpeechResumed);
    assert_eq!(trace(&out), ["cmd:llm_withdraw", "cmd:tts_cancel"]);
    assert!(only_commands(&out));
    // Its late outputs are stale.
    assert!(h.engine(900, tts(first, 300, " here")).is_empty());
    assert!(
        h.engine(900, EngineEvent::LlmDone { epoch: first })
            .is_empty()
    );

    let whole = "please enter your password followed by the pound key";
    let out = h.engine(2400, paused(whole));
    let (second, messages) = llm_start(&out);
    assert_ne!(second, first);
    assert_eq!(
        messages.iter().filter(|m| m.role == ChatRole::User).count(),
        1
    );
    h.engine(2450, token(second, "Done."));
    h.engine(2500, tts(second, 300, "Done."));
    let out = h.engine(2000, EngineEvent::SpeechStopped { audio_ms: 2000 });
    let rid = response_id(&out);
    let out = h.engine(2600, final_text(whole));
    assert!(!trace(&out).contains(&"cmd:llm_start".to_string()));
    let delta: Vec<&ServerEvent> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(e @ ServerEvent::TranscriptDelta { .. }) => Some(e),
            _ => None,
        })
        .collect();
    assert!(
        matches!(delta[..], [ServerEvent::TranscriptDelta { part, delta }] if part.response_id == rid && delta == "Done."),
        "only the adopted reply is heard: {delta:?}"
    );
    let chat = h.tm.conversation().to_chat("");
    assert_eq!(
        chat[0].content, whole,
        "one user item with the whole transcript"
    );
    assert_eq!(chat[1].content, "Done.");
    let c = h.tm.counters();
    assert_eq!(
        (
            c.speculations_started,
            c.speculations_adopted,
            c.speculations_withdrawn
        ),
        (2, 1, 1)
    );
    assert!(c.stale_outputs_dropped >= 2);
}

#[test]
fn a_final_unlike_the_speculation_withdraws_it_and_answers_the_final() {
    let mut h = H::new(ALL);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    let (spec, _) = llm_start(&h.engine(700, paused("what time")));
    h.engine(750, token(spec, "At"));
    h.engine(800, tts(spec, 300, "At"));
    h.engine(500, EngineEvent::SpeechStopped { audio_ms: 1000 });
    let out = h.engine(1010, final_text("what time is it"));
    assert_eq!(
        trace(&out),
        [
            "conversation.item.input_audio_transcription.completed",
            "conversation.item.done",
            "cmd:llm_withdraw",
            "cmd:tts_cancel",
            "cmd:llm_start"
        ]
    );
    let (epoch, messages) = llm_start(&out);
    assert_ne!(epoch, spec);
    assert_eq!(messages.last().unwrap().content, "what time is it");
    // The withdrawn reply's audio never comes out; the new one's does.
    assert!(h.engine(1100, tts(spec, 300, " noon")).is_empty());
    assert_eq!(
        trace(&h.engine(1200, token(epoch, "It is"))),
        ["cmd:tts_text"]
    );
}

#[test]
fn speculation_stays_off_when_disabled_and_a_client_change_withdraws_it() {
    let settings = TurnSettings {
        max_speculations: 0,
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    assert!(h.engine(700, paused("hello")).is_empty());

    let mut h = H::new(ALL);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    assert_eq!(trace(&h.engine(700, paused("hello"))), ["cmd:llm_start"]);
    let out = h.client(
        750,
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "DTMF 5"}]}}),
    );
    assert_eq!(
        trace(&out),
        [
            "cmd:llm_withdraw",
            "cmd:tts_cancel",
            "conversation.item.added",
            "conversation.item.done"
        ]
    );
    // At most `max_speculations` per turn.
    let mut h = H::new(ALL);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    for i in 0..5 {
        h.engine(700 + i * 100, paused("hello"));
        h.engine(750 + i * 100, EngineEvent::SpeechResumed);
    }
    assert_eq!(h.tm.counters().speculations_started, 3);
}

#[test]
fn the_callers_words_so_far_go_to_the_llm_while_they_speak_only() {
    let partial = |text: &str| EngineEvent::TranscriptPartial { text: text.into() };
    let lookaheads = |out: &[Output]| -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Command(EngineCommand::LlmLookahead { text }) => Some(text.clone()),
                _ => None,
            })
            .collect()
    };
    let mut h = H::new(ALL);
    assert!(
        lookaheads(&h.engine(50, partial("noise"))).is_empty(),
        "not speaking"
    );
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    assert_eq!(
        lookaheads(&h.engine(500, partial("please enter"))),
        ["please enter"]
    );
    // Once a speculative reply holds the LLM, it has read those words already.
    h.engine(900, paused("please enter your"));
    assert!(lookaheads(&h.engine(950, partial("please enter your"))).is_empty());

    let settings = TurnSettings {
        lookahead: false,
        ..TurnSettings::default()
    };
    let mut h = H::with(config(), ALL, settings);
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    assert!(lookaheads(&h.engine(500, partial("please enter"))).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Resumed turns (issue 16): a cut-in repaired into one user item

fn semantic_config() -> SessionConfig {
    SessionConfig {
        turn_detection: Some(TurnDetection {
            semantic: Some(antiphon_models::vad::Eagerness::Auto),
            ..TurnDetection::default()
        }),
        ..config()
    }
}

/// A turn committed at 1000 ms ("please enter your password") whose reply starts playing at
/// 1410 ms; the caller speaks again at `resume_ms` and stops at `resume_ms + 1200`.
fn resume_after_commit(config: SessionConfig, resume_ms: u64) -> (H, Vec<Output>) {
    let mut h = H::with(config, ALL, TurnSettings::default());
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    let rid = response_id(&h.engine(1000, EngineEvent::SpeechStopped { audio_ms: 1000 }));
    let out = h.engine(1100, final_text("please enter your password"));
    let (epoch, _) = llm_start(&out);
    h.engine(1200, token(epoch, "Thank you,"));
    h.engine(1200, tts(epoch, 600, "Thank you,"));
    h.tm.audio_sent(h.at(1410), &rid);
    h.drain();
    let mut out = h.engine(
        resume_ms,
        EngineEvent::SpeechStarted {
            audio_ms: resume_ms,
        },
    );
    // The echo guard (300 ms after the first audio) may hold the barge-in until it ends.
    h.tm.handle_timeout(h.at(resume_ms.max(1710)));
    out.extend(h.drain());
    let stop = resume_ms + 1200;
    out.extend(h.engine(stop, EngineEvent::SpeechStopped { audio_ms: stop }));
    out.extend(h.engine(stop + 100, final_text("followed by the pound key")));
    (h, out)
}

#[test]
fn a_turn_resumed_within_a_second_of_its_commit_becomes_one_user_item() {
    let (h, out) = resume_after_commit(semantic_config(), 1800);
    assert_eq!(
        done_status(&out),
        Some((ResponseStatus::Cancelled, Some(CancelReason::TurnDetected)))
    );
    let deleted: Vec<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(ServerEvent::ItemDeleted { item_id }) => Some(item_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted.len(),
        2,
        "the first half and the reply it got: {deleted:?}"
    );
    let whole = "please enter your password followed by the pound key";
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Event(ServerEvent::TranscriptionCompleted { transcript, .. }) if transcript == whole)),
        "{:?}",
        trace(&out)
    );
    // The LLM is asked once more, with one user message holding both halves.
    let (_, messages) = llm_start(&out);
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.role == ChatRole::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        [whole]
    );
    assert!(!messages.iter().any(|m| m.role == ChatRole::Assistant));
    assert_eq!(
        h.tm.conversation().len(),
        2,
        "the merged user item and its new reply"
    );
    assert_eq!(h.tm.counters().turns_merged, 1);
}

#[test]
fn a_late_resumption_or_server_vad_answers_each_turn() {
    // Past the window: a new turn after the first, whose cut-off reply stays (truncated).
    let (h, out) = resume_after_commit(semantic_config(), 2100);
    let (_, messages) = llm_start(&out);
    let users: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == ChatRole::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(
        users,
        ["please enter your password", "followed by the pound key"]
    );
    assert_eq!(h.tm.counters().turns_merged, 0);
    // server_vad keeps its exact timer semantics: every endpoint is a turn.
    let (h, out) = resume_after_commit(config(), 1800);
    let (_, messages) = llm_start(&out);
    assert_eq!(
        messages.iter().filter(|m| m.role == ChatRole::User).count(),
        2
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Event(ServerEvent::ItemDeleted { .. })))
    );
    assert_eq!(h.tm.counters().turns_merged, 0);
}

#[test]
fn a_speculation_on_resumed_speech_is_made_for_the_merged_turn_and_adopted() {
    let mut h = H::with(semantic_config(), ALL, TurnSettings::default());
    h.engine(100, EngineEvent::SpeechStarted { audio_ms: 100 });
    h.engine(1000, EngineEvent::SpeechStopped { audio_ms: 1000 });
    let (epoch, _) = llm_start(&h.engine(1100, final_text("please enter your password")));
    h.engine(1150, token(epoch, "Thank you."));
    // The caller goes on 700 ms after their speech ended, before any reply audio.
    h.engine(1700, EngineEvent::SpeechStarted { audio_ms: 1700 });
    let out = h.engine(2900, paused("followed by the pound key"));
    let (spec, messages) = llm_start(&out);
    let whole = "please enter your password followed by the pound key";
    assert_eq!(
        messages
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect::<Vec<_>>(),
        [(ChatRole::System, "Be brief."), (ChatRole::User, whole)]
    );
    h.engine(2950, token(spec, "Done."));
    h.engine(2700, EngineEvent::SpeechStopped { audio_ms: 2700 });
    let out = h.engine(3000, final_text("followed by the pound key"));
    assert!(
        !trace(&out).contains(&"cmd:llm_start".to_string()),
        "the speculation is adopted: {:?}",
        trace(&out)
    );
    assert_eq!(h.tm.counters().speculations_adopted, 1);
    assert_eq!(h.tm.counters().turns_merged, 1);
}
