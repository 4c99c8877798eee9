//! WAV files in and out: any rate, bit depth and channel count in; 16-bit mono out.

use std::io::{Read, Seek, Write};
use std::path::Path;

/// Why a WAV file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// The file could not be opened or created.
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a WAV file hound understands (not RIFF/WAVE, truncated, bad chunk).
    #[error("not a readable WAV file: {0}")]
    Format(#[source] hound::Error),
    /// A header field we cannot use (zero channels or rate, unsupported sample format).
    #[error("unsupported WAV: {0}")]
    Unsupported(String),
}

impl From<hound::Error> for WavError {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::Unsupported => WavError::Unsupported("sample format".into()),
            other => WavError::Format(other),
        }
    }
}

/// Decoded audio: mono f32 samples in [-1, 1) and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct MonoAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

/// Reads a WAV file, mixing all channels down to mono (mean of the channels).
pub fn read_mono(path: impl AsRef<Path>) -> Result<MonoAudio, WavError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| WavError::Open {
        path: path.display().to_string(),
        source,
    })?;
    read_mono_from(std::io::BufReader::new(file))
}

/// Reads WAV bytes from any reader, mixing all channels down to mono.
pub fn read_mono_from<R: Read>(reader: R) -> Result<MonoAudio, WavError> {
    let mut wav = hound::WavReader::new(reader)?;
    let spec = wav.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(WavError::Unsupported(format!(
            "{} channels at {} Hz",
            spec.channels, spec.sample_rate
        )));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(WavError::Unsupported(format!(
                    "{}-bit float",
                    spec.bits_per_sample
                )));
            }
            wav.samples::<f32>().collect::<Result<_, _>>()?
        }
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(WavError::Unsupported(format!(
                    "{}-bit integer",
                    spec.bits_per_sample
                )));
            }
            // Full scale of a signed `bits`-wide integer.
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            wav.samples::<i32>()
                .map(|s| s.map(|v| (f64::from(v) * scale) as f32))
                .collect::<Result<_, _>>()?
        }
    };
    let channels = usize::from(spec.channels);
    let samples = if channels == 1 {
        interleaved
    } else {
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect()
    };
    Ok(MonoAudio {
        samples,
        sample_rate: spec.sample_rate,
    })
}

/// Writes mono f32 samples as a 16-bit PCM WAV file (clipping outside [-1, 1)).
pub fn write_mono16(
    path: impl AsRef<Path>,
    samples: &[f32],
    sample_rate: u32,
) -> Result<(), WavError> {
    let path = path.as_ref();
    let file = std::fs::File::create(path).map_err(|source| WavError::Open {
        path: path.display().to_string(),
        source,
    })?;
    write_mono16_to(std::io::BufWriter::new(file), samples, sample_rate)
}

/// Writes mono f32 samples as 16-bit PCM WAV to any seekable writer.
pub fn write_mono16_to<W: Write + Seek>(
    writer: W,
    samples: &[f32],
    sample_rate: u32,
) -> Result<(), WavError> {
    if sample_rate == 0 {
        return Err(WavError::Unsupported("sample rate 0".into()));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::new(writer, spec)?;
    let mut pcm = Vec::with_capacity(samples.len());
    antiphon_kernels::pcm::f32_to_i16(samples, &mut pcm);
    let mut w = wav.get_i16_writer(pcm.len() as u32);
    for s in pcm {
        w.write_sample(s);
    }
    w.flush()?;
    wav.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn write_spec(spec: hound::WavSpec, frames: &[Vec<f64>]) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut buf, spec).expect("in-memory writer");
            for frame in frames {
                for &v in frame {
                    match spec.sample_format {
                        hound::SampleFormat::Float => w.write_sample(v as f32).expect("write"),
                        hound::SampleFormat::Int => {
                            let full = (1i64 << (spec.bits_per_sample - 1)) as f64;
                            w.write_sample((v * full).round() as i32).expect("write")
                        }
                    }
                }
            }
            w.finalize().expect("finalize");
        }
        buf.into_inner()
    }

    #[test]
    fn reads_every_depth_and_mixes_channels_to_mono() {
        let frames: Vec<Vec<f64>> = (0..100)
            .map(|i| vec![0.5 * ((i as f64) * 0.1).sin(), 0.25])
            .collect();
        for (bits, format) in [
            (8, hound::SampleFormat::Int),
            (16, hound::SampleFormat::Int),
            (24, hound::SampleFormat::Int),
            (32, hound::SampleFormat::Int),
            (32, hound::SampleFormat::Float),
        ] {
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: 22_050,
                bits_per_sample: bits,
                sample_format: format,
            };
            let audio = read_mono_from(Cursor::new(write_spec(spec, &frames))).expect("read");
            assert_eq!(audio.sample_rate, 22_050);
            assert_eq!(audio.samples.len(), 100);
            let tolerance = (2.0 / (1u64 << (bits - 1)) as f32).max(1e-6);
            for (got, frame) in audio.samples.iter().zip(&frames) {
                let want = ((frame[0] + frame[1]) / 2.0) as f32;
                assert!(
                    (got - want).abs() <= tolerance,
                    "{bits}-bit: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn write_then_read_round_trips_at_16_bit() {
        let samples: Vec<f32> = (0..480).map(|i| (i as f32 / 480.0) - 0.5).collect();
        let mut buf = Cursor::new(Vec::new());
        write_mono16_to(&mut buf, &samples, 48_000).expect("write");
        let audio = read_mono_from(Cursor::new(buf.into_inner())).expect("read");
        assert_eq!(audio.sample_rate, 48_000);
        assert_eq!(audio.samples.len(), samples.len());
        for (a, b) in audio.samples.iter().zip(&samples) {
            assert!((a - b).abs() <= 1.0 / 32768.0);
        }
    }

    #[test]
    fn files_round_trip_and_missing_files_are_typed_errors() {
        let dir = std::env::temp_dir().join(format!("antiphon-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.wav");
        write_mono16(&path, &[0.25; 160], 8000).expect("write file");
        let audio = read_mono(&path).expect("read file");
        assert_eq!(audio.samples, vec![0.25; 160]);
        std::fs::remove_dir_all(&dir).ok();
        assert!(matches!(
            read_mono(dir.join("missing.wav")),
            Err(WavError::Open { .. })
        ));
    }

    #[test]
    fn non_wav_input_is_a_typed_error_not_a_panic() {
        for bytes in [
            b"".to_vec(),
            b"ID3\x03\x00 this is an mp3".to_vec(),
            b"RIFF\x04\x00\x00\x00WAVE".to_vec(),
            b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00".to_vec(),
        ] {
            match read_mono_from(Cursor::new(bytes.clone())) {
                Err(WavError::Format(_)) | Err(WavError::Unsupported(_)) => {}
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
    }
}
