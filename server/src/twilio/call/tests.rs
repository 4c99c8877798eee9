use std::collections::BTreeMap;

use super::*;
use crate::session::events::ResponseStatus;
use crate::session::events::{AudioFormat, PartRef, ResponseInfo};
use crate::twilio::codec::MediaFormat;

const SID: &str = "MZ00000000000000000000000000000001";

fn start_info(encoding: &str, rate: u32) -> StartInfo {
    StartInfo {
        stream_sid: SID.into(),
        account_sid: "AC1".into(),
        call_sid: "CA1".into(),
        tracks: vec!["inbound".into()],
        media_format: MediaFormat {
            encoding: encoding.into(),
            sample_rate: rate,
            channels: 1,
        },
        custom_parameters: BTreeMap::new(),
    }
}

fn started() -> Call {
    let mut call = Call::new();
    assert!(
        call.on_twilio(TwilioInbound::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into()
        })
        .is_empty()
    );
    let steps = call.on_twilio(TwilioInbound::Start(start_info("audio/x-mulaw", 8000)));
    assert!(matches!(steps.as_slice(), [Step::Started(s)] if s.stream_sid == SID));
    call
}

fn media(ts: u64, payload: Vec<u8>) -> TwilioInbound {
    TwilioInbound::Media(MediaFrame {
        stream_sid: SID.into(),
        track: "inbound".into(),
        chunk: 1,
        timestamp_ms: ts,
        payload,
    })
}

fn mark(name: &str) -> TwilioInbound {
    TwilioInbound::Mark {
        stream_sid: SID.into(),
        name: name.into(),
    }
}

fn delta(item: &str, bytes: usize) -> ServerEvent {
    ServerEvent::AudioDelta {
        part: PartRef {
            response_id: format!("resp_{item}"),
            item_id: item.into(),
            output_index: 0,
            content_index: 0,
        },
        audio: vec![0x55; bytes],
    }
}

fn done(item: &str, status: ResponseStatus) -> ServerEvent {
    ServerEvent::ResponseDone(ResponseInfo {
        id: format!("resp_{item}"),
        status,
        cancel_reason: None,
        error: None,
        output: vec![],
        output_modalities: vec![],
        output_format: AudioFormat::G711Ulaw,
        voice: String::new(),
        conversation_id: None,
    })
}

fn speech() -> ServerEvent {
    ServerEvent::SpeechStarted {
        audio_start_ms: 0,
        item_id: "item_u".into(),
    }
}

fn marks_sent(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::ToTwilio(TwilioOutbound::Mark { name, .. }) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

fn codes(steps: &[Step]) -> Vec<&'static str> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Rejected(e) | Step::Fatal(e) => Some(e.code),
            _ => None,
        })
        .collect()
}

#[test]
fn caller_audio_goes_straight_to_the_session() {
    let mut call = started();
    let steps = call.on_twilio(media(0, vec![1; 160]));
    assert_eq!(steps, [Step::Audio(vec![1; 160])]);
    assert_eq!(call.on_twilio(media(20, vec![2; 160])).len(), 1);
}

#[test]
fn lost_caller_audio_is_filled_with_silence_up_to_a_cap() {
    let mut call = started();
    call.on_twilio(media(0, vec![1; 160]));
    // Frames at 20 and 40 ms never arrived.
    let steps = call.on_twilio(media(60, vec![2; 160]));
    assert_eq!(
        steps,
        [Step::Audio(vec![0xFF; 320]), Step::Audio(vec![2; 160]),]
    );
    // A ten-minute jump fills only MAX_GAP_FILL_MS.
    let steps = call.on_twilio(media(600_000, vec![3; 160]));
    let Step::Audio(audio) = &steps[0] else {
        panic!("fill expected, got {steps:?}");
    };
    assert_eq!(audio.len() as u64, MAX_GAP_FILL_MS * 8);
}

#[test]
fn wrong_order_and_wrong_stream_are_rejected_without_ending_the_call() {
    let mut call = Call::new();
    assert_eq!(
        codes(&call.on_twilio(media(0, vec![1; 160]))),
        ["event_before_start"]
    );
    assert_eq!(codes(&call.on_twilio(mark("x"))), ["event_before_start"]);
    assert_eq!(call.stream_sid(), None);
    call.on_twilio(TwilioInbound::Start(start_info("audio/x-mulaw", 8000)));
    assert_eq!(call.stream_sid(), Some(SID));
    assert_eq!(
        codes(&call.on_twilio(TwilioInbound::Start(start_info("audio/x-mulaw", 8000)))),
        ["duplicate_start"]
    );
    assert_eq!(
        codes(&call.on_twilio(TwilioInbound::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into()
        })),
        ["unexpected_connected"]
    );
    let other = TwilioInbound::Media(MediaFrame {
        stream_sid: "MZother".into(),
        track: "inbound".into(),
        chunk: 1,
        timestamp_ms: 0,
        payload: vec![1; 160],
    });
    assert_eq!(codes(&call.on_twilio(other)), ["wrong_stream_sid"]);
    let outbound_track = TwilioInbound::Media(MediaFrame {
        stream_sid: SID.into(),
        track: "outbound".into(),
        chunk: 1,
        timestamp_ms: 0,
        payload: vec![1; 160],
    });
    assert_eq!(codes(&call.on_twilio(outbound_track)), ["unexpected_track"]);
    // Still streaming: audio flows.
    assert!(matches!(
        call.on_twilio(media(0, vec![1; 160])).as_slice(),
        [Step::Audio(_)]
    ));
    assert_eq!(
        call.on_twilio(TwilioInbound::Stop {
            stream_sid: SID.into()
        }),
        [Step::Stopped]
    );
    assert_eq!(
        codes(&call.on_twilio(media(20, vec![1; 160]))),
        ["event_after_stop"]
    );
    // Nothing goes to Twilio after stop.
    assert!(call.on_server(&delta("item_a", 800)).is_empty());
}

#[test]
fn a_format_other_than_mulaw_8k_ends_the_call() {
    let mut call = Call::new();
    let steps = call.on_twilio(TwilioInbound::Start(start_info("audio/l16", 16000)));
    assert_eq!(codes(&steps), ["unsupported_media_format"]);
    assert!(matches!(steps[0], Step::Fatal(_)));
    assert_eq!(
        codes(&call.on_twilio(media(0, vec![1; 160]))),
        ["event_after_stop"]
    );
}

#[test]
fn dtmf_reaches_the_session_and_bad_digits_are_rejected() {
    let mut call = started();
    let steps = call.on_twilio(TwilioInbound::Dtmf {
        stream_sid: SID.into(),
        digit: "5".into(),
    });
    assert_eq!(steps, [Step::Dtmf('5')]);
    let steps = call.on_twilio(TwilioInbound::Dtmf {
        stream_sid: SID.into(),
        digit: "#".into(),
    });
    assert_eq!(steps, [Step::Dtmf('#')]);
    for bad in ["55", "x", ""] {
        let steps = call.on_twilio(TwilioInbound::Dtmf {
            stream_sid: SID.into(),
            digit: bad.into(),
        });
        assert_eq!(codes(&steps), ["invalid_dtmf"], "{bad:?}");
    }
}

#[test]
fn reply_audio_is_sent_in_chunks_each_followed_by_a_mark() {
    let mut call = started();
    let steps = call.on_server(&delta("item_a", 2000));
    let sizes: Vec<usize> = steps
        .iter()
        .filter_map(|s| match s {
            Step::ToTwilio(TwilioOutbound::Media {
                stream_sid,
                payload,
            }) => {
                assert_eq!(stream_sid, SID);
                Some(payload.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [800, 800, 400]);
    assert_eq!(marks_sent(&steps).len(), 3);
    // Media then its mark, alternating.
    assert!(matches!(
        steps[0],
        Step::ToTwilio(TwilioOutbound::Media { .. })
    ));
    assert!(matches!(
        steps[1],
        Step::ToTwilio(TwilioOutbound::Mark { .. })
    ));
    assert_eq!(call.unplayed_ms(), 250);
}

#[test]
fn barge_in_clears_and_truncates_to_what_marks_confirmed() {
    let mut call = started();
    // 3000 ms of reply sent: marks every 100 ms.
    let marks = marks_sent(&call.on_server(&delta("item_a", 24_000)));
    assert_eq!(marks.len(), 30);
    // Twilio has played 1200 ms (mark 12); an unknown mark changes nothing.
    assert!(call.on_twilio(mark(&marks[11])).is_empty());
    assert!(call.on_twilio(mark("not-ours")).is_empty());
    assert_eq!(call.unplayed_ms(), 1800);
    // The server decides the caller interrupted: clear, then truncate at 1200 ms.
    let steps = call.on_server(&ServerEvent::StopPlayout);
    assert_eq!(
        steps,
        [
            Step::ToTwilio(TwilioOutbound::Clear {
                stream_sid: SID.into()
            }),
            Step::Played {
                item_id: "item_a".into(),
                audio_end_ms: 1200,
            },
            Step::BargeIn {
                item_id: "item_a".into(),
                heard_ms: 1200,
                dropped_ms: 1800,
            },
        ]
    );
    assert_eq!(call.unplayed_ms(), 0);
    // The cancel and the speech event that follow find nothing left to cut.
    assert!(
        call.on_server(&done("item_a", ResponseStatus::Cancelled))
            .is_empty()
    );
    assert!(call.on_server(&speech()).is_empty());
    // Marks Twilio returns for the cleared audio are ignored; late audio of the cut item too.
    assert!(call.on_twilio(mark(&marks[20])).is_empty());
    assert!(call.on_server(&delta("item_a", 800)).is_empty());
    // The next reply plays normally.
    assert_eq!(marks_sent(&call.on_server(&delta("item_b", 800))).len(), 1);
}

#[test]
fn speech_while_a_finished_reply_is_still_playing_cuts_it() {
    let mut call = started();
    let marks = marks_sent(&call.on_server(&delta("item_a", 8000)));
    // The reply finished generating; nothing played yet.
    assert!(
        call.on_server(&done("item_a", ResponseStatus::Completed))
            .is_empty()
    );
    // The caller speaks: the session says stop (then `speech_started`).
    let steps = call.on_server(&ServerEvent::StopPlayout);
    assert_eq!(
        steps,
        [
            Step::ToTwilio(TwilioOutbound::Clear {
                stream_sid: SID.into()
            }),
            Step::Played {
                item_id: "item_a".into(),
                audio_end_ms: 0,
            },
            Step::BargeIn {
                item_id: "item_a".into(),
                heard_ms: 0,
                dropped_ms: 1000,
            },
        ]
    );
    assert!(call.on_twilio(mark(&marks[0])).is_empty());
}

#[test]
fn speech_while_the_reply_is_generating_waits_for_the_servers_decision() {
    let mut call = started();
    call.on_server(&delta("item_a", 1600));
    // Possibly our own echo: the server has not cancelled, so playout goes on.
    assert!(call.on_server(&speech()).is_empty());
    assert_eq!(marks_sent(&call.on_server(&delta("item_a", 800))).len(), 1);
    assert_eq!(call.unplayed_ms(), 300);
}

#[test]
fn speech_after_everything_played_sends_nothing() {
    let mut call = started();
    let marks = marks_sent(&call.on_server(&delta("item_a", 1600)));
    call.on_server(&done("item_a", ResponseStatus::Completed));
    assert!(call.on_twilio(mark(marks.last().unwrap())).is_empty());
    assert!(call.on_server(&ServerEvent::StopPlayout).is_empty());
    assert!(call.on_server(&speech()).is_empty());
}

#[test]
fn a_cut_covers_every_reply_still_queued() {
    let mut call = started();
    let first = marks_sent(&call.on_server(&delta("item_a", 1600)));
    call.on_server(&done("item_a", ResponseStatus::Completed));
    call.on_server(&delta("item_b", 1600));
    call.on_twilio(mark(&first[0]));
    let steps = call.on_server(&ServerEvent::StopPlayout);
    let truncations: Vec<(String, u32)> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Played {
                item_id,
                audio_end_ms,
            } => Some((item_id.clone(), *audio_end_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        truncations,
        [("item_a".to_string(), 100), ("item_b".to_string(), 0)]
    );
}

#[test]
fn a_cut_reports_what_the_marks_confirmed_whatever_the_session_cut() {
    let mut call = started();
    let marks = marks_sent(&call.on_server(&delta("item_a", 8000)));
    call.on_twilio(mark(&marks[4]));
    // The session truncated at 450 ms when it detected the speech; marks now say 500 ms. The
    // leg reports what it heard; the session keeps the shorter cut (its unit tests).
    assert!(
        call.on_server(&ServerEvent::ItemTruncated {
            item_id: "item_a".into(),
            content_index: 0,
            audio_end_ms: 450,
        })
        .is_empty()
    );
    let steps = call.on_server(&ServerEvent::StopPlayout);
    assert_eq!(
        steps,
        [
            Step::ToTwilio(TwilioOutbound::Clear {
                stream_sid: SID.into()
            }),
            Step::Played {
                item_id: "item_a".into(),
                audio_end_ms: 500,
            },
            Step::BargeIn {
                item_id: "item_a".into(),
                heard_ms: 500,
                dropped_ms: 500,
            },
        ]
    );
    // A cut of another item, or one past what was heard, leaves ours to be sent.
    let mut call = started();
    let marks = marks_sent(&call.on_server(&delta("item_b", 8000)));
    call.on_twilio(mark(&marks[1]));
    call.on_server(&ServerEvent::ItemTruncated {
        item_id: "item_b".into(),
        content_index: 0,
        audio_end_ms: 900,
    });
    let steps = call.on_server(&ServerEvent::StopPlayout);
    assert!(steps.contains(&Step::Played {
        item_id: "item_b".into(),
        audio_end_ms: 200,
    }));
}
