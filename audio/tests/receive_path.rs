//! The receive path end to end, in virtual time: Opus packets over a lossy, reordering
//! network -> jitter buffer -> Opus decode with FEC/PLC -> resample 48 -> 16 kHz -> ring ->
//! model-side frames. Checks the pieces fit and that the arrival stamp and media time survive
//! every stage.

use std::time::{Duration, Instant};

use antiphon_audio::AudioFrame;
use antiphon_audio::jitter::{JitterBuffer, JitterConfig, JitterOutput};
use antiphon_audio::opus_codec::{FRAME_SAMPLES, OpusDecoder, OpusEncoder, OpusEncoderConfig};
use antiphon_audio::resample::StreamResampler;
use antiphon_audio::ring;

fn tone_frame(k: usize) -> Vec<f32> {
    (0..FRAME_SAMPLES)
        .map(|i| {
            let t = (k * FRAME_SAMPLES + i) as f32 / 48_000.0;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 660.0 * t).sin()
        })
        .collect()
}

#[test]
fn packets_to_model_frames_keep_arrival_and_media_time() {
    let t0 = Instant::now();
    let mut enc = OpusEncoder::new(OpusEncoderConfig::default()).expect("encoder");
    const N: usize = 50;
    // Packet k is sent at 20k ms; 7 and 30 are lost, 12 and 13 swap places.
    let mut arrivals: Vec<(u64, u16, u32, Vec<u8>)> = (0..N)
        .filter(|&k| k != 7 && k != 30)
        .map(|k| {
            let packet = enc.encode(&tone_frame(k)).expect("encode");
            let delay = if k == 12 { 45 } else { 10 };
            (
                20 * k as u64 + delay,
                k as u16,
                (k * FRAME_SAMPLES) as u32,
                packet,
            )
        })
        .collect();
    arrivals.sort_by_key(|a| a.0);

    let mut jitter = JitterBuffer::new(JitterConfig::new(48_000));
    let mut decoder = OpusDecoder::new().expect("decoder");
    let mut resampler = StreamResampler::new(48_000, 16_000).expect("resampler");
    let (mut tx, mut rx) = ring::channel(16_000, t0).expect("ring");
    let mut next_arrival = 0;
    let mut concealed = 0;
    let mut media_48k = 0u64;
    let mut model_frames: Vec<AudioFrame> = Vec::new();
    let mut last_packet_arrival = t0;

    for ms in 0..=(20 * N as u64 + 200) {
        let now = t0 + Duration::from_millis(ms);
        while next_arrival < arrivals.len() && arrivals[next_arrival].0 == ms {
            let (_, seq, ts, ref payload) = arrivals[next_arrival];
            jitter.push(now, seq, ts, payload.clone());
            next_arrival += 1;
        }
        while let Some(out) = jitter.pop(now) {
            let mut pcm = Vec::new();
            let arrival = match out {
                JitterOutput::Packet {
                    payload, arrival, ..
                } => {
                    decoder.decode(&payload, &mut pcm).expect("decode");
                    last_packet_arrival = arrival;
                    arrival
                }
                JitterOutput::Missing { .. } => {
                    concealed += 1;
                    match jitter.peek_next_payload() {
                        Some(next) => decoder.decode_fec(next, &mut pcm).expect("fec"),
                        None => decoder.conceal(&mut pcm).expect("plc"),
                    };
                    // Concealed audio carries the stamp of the last real packet.
                    last_packet_arrival
                }
            };
            assert_eq!(pcm.len(), FRAME_SAMPLES);
            let frame = AudioFrame::new(pcm, 48_000, media_48k, arrival);
            media_48k += FRAME_SAMPLES as u64;
            let at_16k = resampler.process_frame(&frame).expect("resample");
            assert_eq!(at_16k.arrival, arrival);
            tx.push(&at_16k.samples, at_16k.arrival);
        }
        // The model thread takes 20 ms frames at 16 kHz.
        while rx.len() >= 320 {
            model_frames.push(rx.pop_frame(320, 16_000).expect("frame"));
        }
    }

    assert_eq!(concealed, 2);
    assert_eq!(jitter.stats().lost, 2);
    assert_eq!(tx.dropped(), 0);
    // 50 frames of 20 ms in; the resampler holds back its 10 ms filter delay.
    let total: usize = model_frames.iter().map(|f| f.len()).sum();
    assert_eq!(total, N * 320 - 160 - (N * 320 - 160) % 320);
    for (i, f) in model_frames.iter().enumerate() {
        assert_eq!(f.media_time, 320 * i as u64, "contiguous media time");
        // Each frame is stamped with the arrival of the newest packet in it; playout adds the
        // 60 ms jitter delay, so arrival is never later than the frame's media end plus that.
        let media_end = t0 + Duration::from_millis(20 * (i as u64 + 1));
        assert!(f.arrival <= media_end + Duration::from_millis(60 + 45));
        assert!(f.arrival >= t0);
    }
    // Concealment kept the tone going: no 20 ms stretch of the output is silent.
    for f in &model_frames[2..] {
        assert!(f.rms_dbfs() > -30.0, "frame at {} is silent", f.media_time);
    }
}
