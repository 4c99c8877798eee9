//! The fbank front end on the GPU: every whole frame of every session's audio in one launch
//! (`fbank_frames`, one block per frame). Same window, mel matrix and steps as the CPU
//! [`crate::fbank::Fbank`], which is its reference.

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::{CudaError, FBANK_SOURCE, Gpu, Kernels};
use crate::fbank::{Fbank, FbankConfig};

/// Longest frame the kernel takes (its shared buffer).
const MAX_FRAME: usize = 1024;
const THREADS: u32 = 256;

pub struct GpuFbank {
    gpu: Arc<Gpu>,
    kernels: Kernels,
    cpu: Fbank,
    window: CudaSlice<f32>,
    mel: CudaSlice<f32>,
    cos: CudaSlice<f64>,
    sin: CudaSlice<f64>,
}

impl GpuFbank {
    pub fn new(gpu: Arc<Gpu>, config: FbankConfig) -> Result<Self, CudaError> {
        let cpu = Fbank::new(config).map_err(|e| CudaError::Invalid(e.to_string()))?;
        if cpu.fft_len() > MAX_FRAME {
            return Err(CudaError::Invalid(format!(
                "fbank frames of {} samples exceed the GPU kernel's {MAX_FRAME}",
                cpu.fft_len()
            )));
        }
        let kernels = gpu.load(&FBANK_SOURCE)?;
        let (window, mel) = cpu.tables();
        let n = cpu.fft_len();
        let angle = |k: usize| 2.0 * std::f64::consts::PI * k as f64 / n as f64;
        let cos: Vec<f64> = (0..n).map(|k| angle(k).cos()).collect();
        let sin: Vec<f64> = (0..n).map(|k| angle(k).sin()).collect();
        Ok(Self {
            window: gpu.upload(window)?,
            mel: gpu.upload(&mel)?,
            cos: gpu.upload(&cos)?,
            sin: gpu.upload(&sin)?,
            gpu,
            kernels,
            cpu,
        })
    }

    pub fn num_bins(&self) -> usize {
        self.cpu.num_bins()
    }

    /// Features of all whole frames of each session's samples (`[frames][num_bins]` each), one
    /// launch for all of them.
    pub fn compute_batch(&self, sessions: &[&[f32]]) -> Result<Vec<Vec<f32>>, CudaError> {
        let mut samples = Vec::new();
        let mut starts: Vec<i64> = Vec::new();
        let mut frames_of = Vec::with_capacity(sessions.len());
        for s in sessions {
            let base = samples.len() as i64;
            let frames = self.cpu.num_frames(s.len());
            starts.extend((0..frames).map(|f| base + (f * self.cpu.frame_shift()) as i64));
            samples.extend_from_slice(s);
            frames_of.push(frames);
        }
        let bins = self.num_bins();
        if starts.is_empty() {
            return Ok(frames_of.iter().map(|_| Vec::new()).collect());
        }
        let g = &self.gpu;
        let d_samples = g.upload(&samples)?;
        let d_starts = g.upload(&starts)?;
        let out = g.zeros::<f32>(starts.len() * bins)?;
        let f = self.kernels.get("fbank_frames")?;
        // fbank_frames(samples, frame_start, window, mel, cos, sin, out, frame_len, padded,
        //              num_bins, preemphasis, remove_dc): one block per frame.
        g.launch(
            f,
            (starts.len() as u32, 1, 1),
            THREADS,
            &[
                &g.ptr(&d_samples),
                &g.ptr(&d_starts),
                &g.ptr(&self.window),
                &g.ptr(&self.mel),
                &g.ptr(&self.cos),
                &g.ptr(&self.sin),
                &g.ptr(&out),
                &(self.cpu.frame_len() as i32),
                &(self.cpu.fft_len() as i32),
                &(bins as i32),
                &self.cpu.config().preemphasis,
                &(self.cpu.config().remove_dc_offset as i32),
            ],
        )?;
        let flat = g.download(&out, starts.len() * bins)?;
        let mut rest = flat.as_slice();
        Ok(frames_of
            .into_iter()
            .map(|n| {
                let (mine, tail) = rest.split_at(n * bins);
                rest = tail;
                mine.to_vec()
            })
            .collect())
    }
}
