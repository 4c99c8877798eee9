use serde_json::{Value, json};

use super::*;

fn decode(v: Value) -> Result<ClientMessage, ErrorInfo> {
    decode_client(&v.to_string(), &Limits::default())
}

fn event(v: Value) -> ClientEvent {
    decode(v).expect("decodes").event
}

fn encode(e: &ServerEvent, d: Dialect) -> Value {
    serde_json::from_str(&encode_server(e, "event_1", d).expect("has a name in this dialect"))
        .unwrap()
}

fn session() -> SessionConfig {
    SessionConfig {
        id: "sess_1".into(),
        model: "antiphon".into(),
        instructions: "Be nice.".into(),
        voice: "joe".into(),
        input_format: AudioFormat::Pcm16,
        output_format: AudioFormat::G711Ulaw,
        turn_detection: Some(TurnDetection::default()),
        transcription: Some(Transcription {
            model: Some("moonshine".into()),
            language: None,
        }),
        output_modalities: vec![Modality::Audio],
        max_output_tokens: None,
    }
}

fn part() -> PartRef {
    PartRef {
        response_id: "resp_1".into(),
        item_id: "item_2".into(),
        output_index: 0,
        content_index: 0,
    }
}

fn assistant_item(status: ItemStatus) -> Item {
    Item {
        id: "item_2".into(),
        status,
        kind: ItemKind::Message {
            role: Role::Assistant,
            content: vec![Content::OutputAudio {
                transcript: "Hi.".into(),
            }],
        },
    }
}

#[test]
fn dialect_from_header() {
    assert_eq!(Dialect::from_beta_header(None), Dialect::Ga);
    assert_eq!(
        Dialect::from_beta_header(Some("realtime=v1")),
        Dialect::Beta
    );
    assert_eq!(
        Dialect::from_beta_header(Some("assistants=v2, realtime=v1")),
        Dialect::Beta
    );
    assert_eq!(
        Dialect::from_beta_header(Some("assistants=v2")),
        Dialect::Ga
    );
}

#[test]
fn session_update_ga_nested_shape() {
    let m = decode(json!({"type": "session.update", "event_id": "e1", "session": {
        "type": "realtime",
        "instructions": "Hi",
        "output_modalities": ["text"],
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 200,
                                    "silence_duration_ms": 400, "create_response": false,
                                    "interrupt_response": false, "idle_timeout_ms": null}
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0}
        },
        "tools": [], "tracing": "auto"
    }}))
    .unwrap();
    assert_eq!(m.event_id.as_deref(), Some("e1"));
    let ClientEvent::SessionUpdate(p) = m.event else {
        panic!("session.update")
    };
    assert_eq!(p.instructions.as_deref(), Some("Hi"));
    assert_eq!(p.input_format, Some(AudioFormat::G711Ulaw));
    assert_eq!(p.output_format, Some(AudioFormat::Pcm16));
    assert_eq!(p.voice.as_deref(), Some("marin"));
    assert_eq!(p.output_modalities, Some(vec![Modality::Text]));
    assert_eq!(p.max_output_tokens, Some(None));
    assert_eq!(
        p.transcription,
        Some(Some(Transcription {
            model: Some("whisper-1".into()),
            language: Some("en".into())
        }))
    );
    assert_eq!(
        p.turn_detection,
        Some(Some(TurnDetectionPatch {
            semantic: Some(None),
            threshold: Some(0.7),
            prefix_padding_ms: Some(200),
            silence_duration_ms: Some(400),
            create_response: Some(false),
            interrupt_response: Some(false),
        }))
    );
}

#[test]
fn semantic_vad_is_decoded_applied_and_reported_in_openai_shape() {
    let mut config = SessionConfig {
        turn_detection: Some(TurnDetection::default()),
        ..session()
    };
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high",
                                               "create_response": true}}}
    }})) else {
        panic!("session.update")
    };
    config.apply(p);
    let td = config.turn_detection.clone().expect("voice turns");
    assert_eq!(td.semantic, Some(Eagerness::High));
    let v = turn_detection_value(&config.turn_detection);
    assert_eq!(
        v,
        json!({"type": "semantic_vad", "eagerness": "high", "create_response": true,
               "interrupt_response": true})
    );
    // No eagerness: auto. Back to server_vad: the timer, with its settings kept.
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {
        "turn_detection": {"type": "semantic_vad"}}}))
    else {
        panic!("session.update")
    };
    config.apply(p);
    assert_eq!(
        config.turn_detection.as_ref().and_then(|t| t.semantic),
        Some(Eagerness::Auto)
    );
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {
        "turn_detection": {"type": "server_vad"}}}))
    else {
        panic!("session.update")
    };
    config.apply(p);
    assert_eq!(config.turn_detection, Some(TurnDetection::default()));
    assert_eq!(
        turn_detection_value(&config.turn_detection)["type"],
        "server_vad"
    );
}

#[test]
fn session_update_beta_flat_shape_and_null_turn_detection() {
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {
        "modalities": ["text", "audio"],
        "voice": "alloy",
        "input_audio_format": "g711_alaw",
        "output_audio_format": "pcm16",
        "input_audio_transcription": null,
        "turn_detection": null,
        "max_response_output_tokens": 100,
        "temperature": 0.8
    }})) else {
        panic!("session.update")
    };
    assert_eq!(p.input_format, Some(AudioFormat::G711Alaw));
    assert_eq!(p.output_format, Some(AudioFormat::Pcm16));
    assert_eq!(p.turn_detection, Some(None), "null means manual turns");
    assert_eq!(
        p.transcription,
        Some(None),
        "null switches transcription off"
    );
    assert_eq!(
        p.output_modalities,
        Some(vec![Modality::Text, Modality::Audio])
    );
    assert_eq!(p.max_output_tokens, Some(Some(100)));
    // Absent keys change nothing.
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {}}))
    else {
        panic!()
    };
    assert_eq!(p, SessionPatch::default());
}

#[test]
fn session_patch_applies_partial_turn_detection() {
    let mut s = session();
    s.turn_detection = None;
    let ClientEvent::SessionUpdate(p) = event(json!({"type": "session.update", "session": {
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 900}}}))
    else {
        panic!()
    };
    s.apply(p);
    let td = s.turn_detection.unwrap();
    assert_eq!(td.silence_duration_ms, 900);
    assert_eq!(td.threshold, 0.5, "unspecified fields take the defaults");
}

#[test]
fn session_update_rejects_unsupported_settings() {
    for (session, needle) in [
        (json!({"type": "transcription"}), "session.type"),
        (json!({"input_audio_format": "opus"}), "opus"),
        (
            json!({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}),
            "rate 16000",
        ),
        (json!({"turn_detection": {"type": "turn_vad"}}), "turn_vad"),
        (
            json!({"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}),
            "eagerness",
        ),
        (
            json!({"turn_detection": {"type": "server_vad", "eagerness": "low"}}),
            "eagerness",
        ),
        (
            json!({"turn_detection": {"type": "server_vad", "threshold": 3.0}}),
            "threshold",
        ),
        (
            json!({"turn_detection": {"type": "server_vad", "silence_duration_ms": 50}}),
            "silence_duration_ms",
        ),
        (json!({"modalities": ["video"]}), "video"),
        (json!({"max_output_tokens": -1}), "max_output_tokens"),
        (json!({"instructions": 5}), "session.update"),
    ] {
        let e = decode(json!({"type": "session.update", "event_id": "x", "session": session}))
            .unwrap_err();
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.code, "invalid_value", "{session}");
        assert_eq!(e.event_id.as_deref(), Some("x"));
        assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
    }
}

#[test]
fn audio_buffer_events() {
    assert_eq!(
        event(json!({"type": "input_audio_buffer.append", "audio": "AAEC"})),
        ClientEvent::AudioAppend {
            audio: vec![0, 1, 2]
        }
    );
    assert_eq!(
        event(json!({"type": "input_audio_buffer.commit"})),
        ClientEvent::AudioCommit
    );
    assert_eq!(
        event(json!({"type": "input_audio_buffer.clear"})),
        ClientEvent::AudioClear
    );
    assert_eq!(
        event(json!({"type": "output_audio_buffer.clear"})),
        ClientEvent::OutputAudioClear
    );
}

#[test]
fn item_create_user_text_audio_and_function_output() {
    let ClientEvent::ItemCreate {
        previous_item_id,
        item,
    } = event(json!({
        "type": "conversation.item.create", "previous_item_id": "root",
        "item": {"id": "my_item", "type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "hello"},
            {"type": "input_audio", "audio": "AAA=", "transcript": "hi"}
        ]}
    }))
    else {
        panic!()
    };
    assert_eq!(previous_item_id.as_deref(), Some("root"));
    assert_eq!(item.id, "my_item");
    assert_eq!(
        item.kind,
        ItemKind::Message {
            role: Role::User,
            content: vec![
                Content::InputText {
                    text: "hello".into()
                },
                Content::InputAudio {
                    audio: Some(vec![0, 0]),
                    transcript: Some("hi".into())
                },
            ],
        }
    );
    let ClientEvent::ItemCreate { item, .. } = event(json!({"type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "c1", "output": "{\"ok\":true}"}}))
    else {
        panic!()
    };
    assert_eq!(
        item.kind,
        ItemKind::FunctionCallOutput {
            call_id: "c1".into(),
            output: "{\"ok\":true}".into()
        }
    );
    assert!(item.id.is_empty(), "the server assigns ids");
    // Assistant history in both dialects' content names.
    for kind in ["output_text", "text"] {
        let ClientEvent::ItemCreate { item, .. } = event(
            json!({"type": "conversation.item.create",
            "item": {"type": "message", "role": "assistant", "content": [{"type": kind, "text": "ok"}]}}),
        ) else {
            panic!()
        };
        assert_eq!(
            item.kind,
            ItemKind::Message {
                role: Role::Assistant,
                content: vec![Content::OutputText { text: "ok".into() }]
            }
        );
    }
}

#[test]
fn item_create_rejects_bad_items() {
    for item in [
        json!({"type": "message", "role": "user", "content": []}),
        json!({"type": "message", "role": "robot", "content": [{"type": "input_text", "text": "x"}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]}),
        json!({"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}),
        json!({"type": "message", "role": "system", "content": [{"type": "input_audio", "transcript": "x"}]}),
        json!({"type": "function_call_output", "output": "x"}),
        json!({"type": "mcp_call"}),
    ] {
        let e = decode(json!({"type": "conversation.item.create", "item": item})).unwrap_err();
        assert!(
            matches!(e.code, "invalid_value" | "missing_required_parameter"),
            "{item}: {e:?}"
        );
    }
    let e = decode(
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_audio", "audio": "%%%"}]}}),
    )
    .unwrap_err();
    assert_eq!(e.code, "invalid_base64");
}

#[test]
fn truncate_delete_response_events() {
    assert_eq!(
        event(
            json!({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 1500})
        ),
        ClientEvent::ItemTruncate {
            item_id: "i".into(),
            content_index: 0,
            audio_end_ms: 1500
        }
    );
    assert_eq!(
        event(json!({"type": "conversation.item.delete", "item_id": "i"})),
        ClientEvent::ItemDelete {
            item_id: "i".into()
        }
    );
    assert_eq!(
        event(json!({"type": "response.create"})),
        ClientEvent::ResponseCreate(ResponseOptions::default())
    );
    assert_eq!(
        event(
            json!({"type": "response.create", "response": {"instructions": "x", "output_modalities": ["text"], "conversation": "none"}})
        ),
        ClientEvent::ResponseCreate(ResponseOptions {
            instructions: Some("x".into()),
            output_modalities: Some(vec![Modality::Text]),
            out_of_band: true,
        })
    );
    // Beta spelling of modalities.
    assert_eq!(
        event(json!({"type": "response.create", "response": {"modalities": ["audio", "text"]}})),
        ClientEvent::ResponseCreate(ResponseOptions {
            output_modalities: Some(vec![Modality::Audio, Modality::Text]),
            ..ResponseOptions::default()
        })
    );
    assert_eq!(
        event(json!({"type": "response.cancel"})),
        ClientEvent::ResponseCancel { response_id: None }
    );
    assert_eq!(
        event(json!({"type": "response.cancel", "response_id": "r"})),
        ClientEvent::ResponseCancel {
            response_id: Some("r".into())
        }
    );
    let e = decode(json!({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": -5})).unwrap_err();
    assert_eq!(e.code, "invalid_value");
}

#[test]
fn every_error_class() {
    let limits = Limits {
        max_message_bytes: 64,
        max_audio_buffer_bytes: 1024,
    };
    let cases: [(&str, &str, Option<&str>); 8] = [
        ("{", "invalid_json", None),
        ("[1,2]", "invalid_json", None),
        (
            r#"{"event_id":"e"}"#,
            "missing_required_parameter",
            Some("e"),
        ),
        (
            r#"{"type":"nope","event_id":"e2"}"#,
            "unknown_event_type",
            Some("e2"),
        ),
        (
            r#"{"type":"input_audio_buffer.append","audio":"@@"}"#,
            "invalid_base64",
            None,
        ),
        (
            r#"{"type":"input_audio_buffer.append"}"#,
            "invalid_value",
            None,
        ),
        (
            r#"{"type":"response.cancel","event_id":7}"#,
            "invalid_value",
            None,
        ),
        (
            &format!(
                r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
                "A".repeat(80)
            ),
            "message_too_large",
            None,
        ),
    ];
    for (text, code, eid) in cases {
        let e = decode_client(text, &limits).unwrap_err();
        assert_eq!(e.code, code, "{text}");
        assert_eq!(e.kind, "invalid_request_error");
        assert_eq!(e.event_id.as_deref(), eid, "{text}");
        assert!(!e.message.is_empty());
        // The error itself encodes in both dialects.
        for d in [Dialect::Ga, Dialect::Beta] {
            let v = encode(&ServerEvent::Error(e.clone()), d);
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["code"], code);
        }
    }
}

#[test]
fn garbage_never_panics() {
    let limits = Limits::default();
    let samples = [
        "",
        "null",
        "\"x\"",
        "{\"type\":null}",
        "{\"type\":\"session.update\"}",
        "{\"type\":\"session.update\",\"session\":[]}",
        "\u{0}\u{1}",
        "{\"type\":\"conversation.item.create\",\"item\":{\"content\":[{}]}}",
    ];
    for s in samples {
        assert!(decode_client(s, &limits).is_err(), "{s}");
    }
    // Truncations of a valid event at every byte.
    let full = json!({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}).to_string();
    for cut in 0..full.len() {
        let _ = decode_client(&full[..cut], &limits);
    }
}

#[test]
fn server_event_names_per_dialect() {
    let p = part();
    let cases: Vec<(ServerEvent, &str, Option<&str>)> = vec![
        (
            ServerEvent::ItemAdded {
                previous_item_id: None,
                item: assistant_item(ItemStatus::InProgress),
            },
            "conversation.item.added",
            Some("conversation.item.created"),
        ),
        (
            ServerEvent::ItemDone {
                previous_item_id: None,
                item: assistant_item(ItemStatus::Completed),
            },
            "conversation.item.done",
            None,
        ),
        (
            ServerEvent::AudioDelta {
                part: p.clone(),
                audio: vec![1, 2, 3],
            },
            "response.output_audio.delta",
            Some("response.audio.delta"),
        ),
        (
            ServerEvent::AudioDone { part: p.clone() },
            "response.output_audio.done",
            Some("response.audio.done"),
        ),
        (
            ServerEvent::TranscriptDelta {
                part: p.clone(),
                delta: "Hi".into(),
            },
            "response.output_audio_transcript.delta",
            Some("response.audio_transcript.delta"),
        ),
        (
            ServerEvent::TranscriptDone {
                part: p.clone(),
                transcript: "Hi.".into(),
            },
            "response.output_audio_transcript.done",
            Some("response.audio_transcript.done"),
        ),
        (
            ServerEvent::TextDelta {
                part: p.clone(),
                delta: "Hi".into(),
            },
            "response.output_text.delta",
            Some("response.text.delta"),
        ),
        (
            ServerEvent::TextDone {
                part: p.clone(),
                text: "Hi.".into(),
            },
            "response.output_text.done",
            Some("response.text.done"),
        ),
    ];
    for (e, ga, beta) in cases {
        assert_eq!(server_event_name(&e, Dialect::Ga), Some(ga));
        assert_eq!(server_event_name(&e, Dialect::Beta), beta);
        assert_eq!(
            encode_server(&e, "x", Dialect::Beta).is_some(),
            beta.is_some()
        );
    }
}

#[test]
fn session_events_in_both_dialects() {
    let ga = encode(&ServerEvent::SessionCreated(session()), Dialect::Ga);
    assert_eq!(ga["type"], "session.created");
    assert_eq!(ga["event_id"], "event_1");
    let s = &ga["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["object"], "realtime.session");
    assert_eq!(s["id"], "sess_1");
    assert_eq!(s["output_modalities"], json!(["audio"]));
    assert_eq!(s["max_output_tokens"], "inf");
    assert_eq!(
        s["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(
        s["audio"]["output"]["format"],
        json!({"type": "audio/pcmu"})
    );
    assert_eq!(s["audio"]["output"]["voice"], "joe");
    assert_eq!(s["audio"]["input"]["transcription"]["model"], "moonshine");
    let td = &s["audio"]["input"]["turn_detection"];
    assert_eq!(td["type"], "server_vad");
    assert_eq!(td["silence_duration_ms"], 500);
    assert_eq!(td["create_response"], true);

    let beta = encode(&ServerEvent::SessionUpdated(session()), Dialect::Beta);
    assert_eq!(beta["type"], "session.updated");
    let s = &beta["session"];
    assert!(s.get("type").is_none(), "beta sessions have no type");
    assert_eq!(s["input_audio_format"], "pcm16");
    assert_eq!(s["output_audio_format"], "g711_ulaw");
    assert_eq!(s["modalities"], json!(["audio"]));
    assert_eq!(s["voice"], "joe");
    assert_eq!(s["turn_detection"]["prefix_padding_ms"], 300);
    assert_eq!(s["input_audio_transcription"]["model"], "moonshine");

    let mut manual = session();
    manual.turn_detection = None;
    manual.transcription = None;
    let v = encode(&ServerEvent::SessionUpdated(manual), Dialect::Beta);
    assert_eq!(v["session"]["turn_detection"], Value::Null);
    assert_eq!(v["session"]["input_audio_transcription"], Value::Null);
}

#[test]
fn input_buffer_and_item_events() {
    for d in [Dialect::Ga, Dialect::Beta] {
        let v = encode(
            &ServerEvent::SpeechStarted {
                audio_start_ms: 1200,
                item_id: "item_1".into(),
            },
            d,
        );
        assert_eq!(
            v,
            json!({"type": "input_audio_buffer.speech_started", "event_id": "event_1", "audio_start_ms": 1200, "item_id": "item_1"})
        );
        let v = encode(
            &ServerEvent::SpeechStopped {
                audio_end_ms: 2400,
                item_id: "item_1".into(),
            },
            d,
        );
        assert_eq!(v["audio_end_ms"], 2400);
        let v = encode(
            &ServerEvent::AudioCommitted {
                previous_item_id: None,
                item_id: "item_1".into(),
            },
            d,
        );
        assert_eq!(
            v,
            json!({"type": "input_audio_buffer.committed", "event_id": "event_1", "previous_item_id": null, "item_id": "item_1"})
        );
        let v = encode(&ServerEvent::AudioCleared, d);
        assert_eq!(
            v,
            json!({"type": "input_audio_buffer.cleared", "event_id": "event_1"})
        );
        let v = encode(
            &ServerEvent::ItemTruncated {
                item_id: "i".into(),
                content_index: 0,
                audio_end_ms: 300,
            },
            d,
        );
        assert_eq!(v["type"], "conversation.item.truncated");
        assert_eq!(v["audio_end_ms"], 300);
        let v = encode(
            &ServerEvent::ItemDeleted {
                item_id: "i".into(),
            },
            d,
        );
        assert_eq!(v["type"], "conversation.item.deleted");
        let v = encode(
            &ServerEvent::TranscriptionDelta {
                item_id: "i".into(),
                content_index: 0,
                delta: "hel".into(),
            },
            d,
        );
        assert_eq!(
            v["type"],
            "conversation.item.input_audio_transcription.delta"
        );
        assert_eq!(v["delta"], "hel");
        let v = encode(
            &ServerEvent::TranscriptionCompleted {
                item_id: "i".into(),
                content_index: 0,
                transcript: "hello".into(),
                speaker: None,
            },
            d,
        );
        assert_eq!(
            v["type"],
            "conversation.item.input_audio_transcription.completed"
        );
        assert_eq!(v["transcript"], "hello");
        assert_eq!(v["usage"]["type"], "duration");
        assert!(v.get("speaker").is_none(), "no label, no field");
        let v = encode(
            &ServerEvent::TranscriptionCompleted {
                item_id: "i".into(),
                content_index: 0,
                transcript: "hello".into(),
                speaker: Some("S2".into()),
            },
            d,
        );
        assert_eq!(v["speaker"], "S2");
    }
    let user = Item {
        id: "item_1".into(),
        status: ItemStatus::Completed,
        kind: ItemKind::Message {
            role: Role::User,
            content: vec![Content::InputAudio {
                audio: Some(vec![1]),
                transcript: Some("hi".into()),
            }],
        },
    };
    let v = encode(
        &ServerEvent::ItemAdded {
            previous_item_id: Some("item_0".into()),
            item: user,
        },
        Dialect::Ga,
    );
    assert_eq!(v["previous_item_id"], "item_0");
    assert_eq!(
        v["item"],
        json!({"id": "item_1", "object": "realtime.item", "type": "message", "status": "completed",
        "role": "user", "content": [{"type": "input_audio", "transcript": "hi"}]})
    );
    let ga = encode(
        &ServerEvent::ItemAdded {
            previous_item_id: None,
            item: assistant_item(ItemStatus::InProgress),
        },
        Dialect::Ga,
    );
    assert_eq!(
        ga["item"]["content"][0],
        json!({"type": "output_audio", "transcript": "Hi."})
    );
    assert_eq!(ga["item"]["status"], "in_progress");
    let beta = encode(
        &ServerEvent::ItemAdded {
            previous_item_id: None,
            item: assistant_item(ItemStatus::InProgress),
        },
        Dialect::Beta,
    );
    assert_eq!(beta["type"], "conversation.item.created");
    assert_eq!(
        beta["item"]["content"][0],
        json!({"type": "audio", "transcript": "Hi."})
    );
    let call = Item {
        id: "item_9".into(),
        status: ItemStatus::Completed,
        kind: ItemKind::FunctionCall {
            call_id: "c".into(),
            name: "f".into(),
            arguments: "{}".into(),
        },
    };
    let v = encode(
        &ServerEvent::ItemAdded {
            previous_item_id: None,
            item: call,
        },
        Dialect::Ga,
    );
    assert_eq!(v["item"]["type"], "function_call");
    assert_eq!(v["item"]["name"], "f");
}

#[test]
fn response_events_in_both_dialects() {
    let info = ResponseInfo {
        id: "resp_1".into(),
        status: ResponseStatus::Cancelled,
        cancel_reason: Some(CancelReason::TurnDetected),
        error: None,
        output: vec![assistant_item(ItemStatus::Incomplete)],
        output_modalities: vec![Modality::Audio],
        output_format: AudioFormat::Pcm16,
        voice: "joe".into(),
        conversation_id: None,
    };
    let ga = encode(&ServerEvent::ResponseDone(info.clone()), Dialect::Ga);
    assert_eq!(ga["type"], "response.done");
    let r = &ga["response"];
    assert_eq!(r["object"], "realtime.response");
    assert_eq!(r["id"], "resp_1");
    assert_eq!(r["status"], "cancelled");
    assert_eq!(
        r["status_details"],
        json!({"type": "cancelled", "reason": "turn_detected"})
    );
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output_modalities"], json!(["audio"]));
    assert_eq!(r["audio"]["output"]["voice"], "joe");
    let beta = encode(
        &ServerEvent::ResponseCreated(ResponseInfo {
            status: ResponseStatus::InProgress,
            cancel_reason: None,
            output: vec![],
            ..info.clone()
        }),
        Dialect::Beta,
    );
    assert_eq!(beta["type"], "response.created");
    assert_eq!(beta["response"]["status"], "in_progress");
    assert_eq!(beta["response"]["status_details"], Value::Null);
    assert_eq!(beta["response"]["modalities"], json!(["audio"]));
    assert_eq!(beta["response"]["output_audio_format"], "pcm16");
    let failed = encode(
        &ServerEvent::ResponseDone(ResponseInfo {
            status: ResponseStatus::Failed,
            cancel_reason: None,
            error: Some(("engine_failed".into(), "boom".into())),
            ..info
        }),
        Dialect::Ga,
    );
    assert_eq!(
        failed["response"]["status_details"]["error"]["code"],
        "engine_failed"
    );

    let p = part();
    for d in [Dialect::Ga, Dialect::Beta] {
        let v = encode(
            &ServerEvent::OutputItemAdded {
                response_id: "resp_1".into(),
                output_index: 0,
                item: assistant_item(ItemStatus::InProgress),
            },
            d,
        );
        assert_eq!(v["type"], "response.output_item.added");
        assert_eq!(v["response_id"], "resp_1");
        assert_eq!(v["output_index"], 0);
        let v = encode(
            &ServerEvent::OutputItemDone {
                response_id: "resp_1".into(),
                output_index: 0,
                item: assistant_item(ItemStatus::Completed),
            },
            d,
        );
        assert_eq!(v["type"], "response.output_item.done");
        let v = encode(
            &ServerEvent::ContentPartAdded {
                part: p.clone(),
                kind: PartKind::Audio,
                text: String::new(),
            },
            d,
        );
        assert_eq!(
            v,
            json!({"type": "response.content_part.added", "event_id": "event_1", "response_id": "resp_1",
            "item_id": "item_2", "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        );
        let v = encode(
            &ServerEvent::ContentPartDone {
                part: p.clone(),
                kind: PartKind::Text,
                text: "ok".into(),
            },
            d,
        );
        assert_eq!(v["type"], "response.content_part.done");
        assert_eq!(v["part"], json!({"type": "text", "text": "ok"}));
        let v = encode(
            &ServerEvent::AudioDelta {
                part: p.clone(),
                audio: vec![0, 1, 2],
            },
            d,
        );
        assert_eq!(v["delta"], "AAEC");
        assert_eq!(v["item_id"], "item_2");
        let v = encode(
            &ServerEvent::TranscriptDone {
                part: p.clone(),
                transcript: "Hi.".into(),
            },
            d,
        );
        assert_eq!(v["transcript"], "Hi.");
        let v = encode(
            &ServerEvent::TextDone {
                part: p.clone(),
                text: "Hi.".into(),
            },
            d,
        );
        assert_eq!(v["text"], "Hi.");
    }
}

#[test]
fn latency_extension_event() {
    let t = TurnLatency {
        response_id: "resp_1".into(),
        origin: LatencyOrigin::SpeechEnd,
        asr_final_ms: Some(120.04),
        llm_first_token_ms: Some(250.0),
        first_clause_ms: Some(300.0),
        tts_first_audio_ms: Some(410.0),
        first_audio_sent_ms: None,
        speculation_started_ms: None,
        end_of_turn_probability: Some(0.75),
    };
    for d in [Dialect::Ga, Dialect::Beta] {
        let v = encode(&ServerEvent::TurnLatency(t.clone()), d);
        assert_eq!(v["type"], "antiphon.turn.latency");
        assert_eq!(v["origin"], "speech_end");
        assert_eq!(v["asr_final_ms"], 120.0);
        assert_eq!(v["tts_first_audio_ms"], 410.0);
        assert_eq!(v["first_audio_sent_ms"], Value::Null);
        assert_eq!(v["speculative"], false);
        assert_eq!(v["speculation_started_ms"], Value::Null);
        assert_eq!(v["end_of_turn_probability"], 0.75);
    }
}
