//! CAM++ speaker embedding (3D-Speaker "campplus_cn_en_common": 192-d, 6.93M parameters) on
//! candle, CPU. Written from the checkpoint's state-dict layout and the CAM++ paper:
//!
//! - FCM head: 2-D conv (1 -> 32) + two stages of two residual blocks, each stage and a final
//!   conv halving the frequency axis (80 -> 10), flattened to 320 channels.
//! - TDNN: conv1d 320 -> 128, kernel 5, stride 2 (time halves), BN + ReLU.
//! - Three densely connected blocks (12, 24, 16 layers, growth 32; dilation 1, 2, 2). Each layer:
//!   BN-ReLU, 1x1 conv to 128, BN-ReLU, then a context-aware masking (CAM) layer: a local
//!   kernel-3 conv to 32 channels, scaled by a sigmoid mask computed from the global mean plus
//!   the mean of the 100-frame segment each frame falls in.
//! - Transit layers (BN-ReLU, 1x1 conv) halve the channels after each block; BN-ReLU; mean and
//!   standard deviation over time; 1x1 dense 1024 -> 192 with a non-affine BN.
//!
//! All BatchNorms run in eval mode with their running statistics.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};

use super::DiarError;

/// Output dimension of the embedding.
pub const EMBEDDING_DIM: usize = 192;
/// Input feature dimension (Kaldi fbank bins).
pub const FEATURE_DIM: usize = 80;
/// Store id and file name of the checkpoint.
pub const CAMPPLUS_MODEL: &str = "campplus";
pub const CAMPPLUS_FILE: &str = "campplus_cn_en_common.pt";

const BN_EPS: f64 = 1e-5;
/// Frames (after the TDNN's 2x subsampling) per CAM pooling segment.
const SEGMENT_FRAMES: usize = 100;
/// Shortest input the network accepts, in fbank frames (the TDNN needs a few frames).
pub const MIN_FRAMES: usize = 8;

type Weights = HashMap<String, Tensor>;

fn take(w: &Weights, name: &str) -> Result<Tensor, DiarError> {
    w.get(name)
        .cloned()
        .ok_or_else(|| DiarError::MissingTensor(name.to_owned()))
}

/// BatchNorm folded into a per-channel scale and shift; `rank` is the input's rank.
struct BatchNorm {
    scale: Tensor,
    shift: Tensor,
}

impl BatchNorm {
    fn load(w: &Weights, prefix: &str, affine: bool, rank: usize) -> Result<Self, DiarError> {
        let mean = take(w, &format!("{prefix}.running_mean"))?.to_dtype(DType::F32)?;
        let var = take(w, &format!("{prefix}.running_var"))?.to_dtype(DType::F32)?;
        let channels = mean.dim(0)?;
        let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
        let (scale, shift) = if affine {
            let gamma = take(w, &format!("{prefix}.weight"))?.to_dtype(DType::F32)?;
            let beta = take(w, &format!("{prefix}.bias"))?.to_dtype(DType::F32)?;
            let scale = (gamma * inv_std)?;
            let shift = (beta - (&mean * &scale)?)?;
            (scale, shift)
        } else {
            let shift = (mean.neg()? * &inv_std)?;
            (inv_std, shift)
        };
        // Channels sit at dim 1; trailing dims broadcast.
        let shape: Vec<usize> = std::iter::once(channels)
            .chain(std::iter::repeat_n(1, rank - 2))
            .collect();
        Ok(Self {
            scale: scale.reshape(shape.as_slice())?,
            shift: shift.reshape(shape.as_slice())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, DiarError> {
        Ok(x.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?)
    }

    fn forward_relu(&self, x: &Tensor) -> Result<Tensor, DiarError> {
        Ok(self.forward(x)?.relu()?)
    }
}

fn weight(w: &Weights, name: &str) -> Result<Tensor, DiarError> {
    Ok(take(w, name)?.to_dtype(DType::F32)?)
}

/// 3x3 (or 1x1) conv with a frequency stride of 1 or 2 and time stride 1. candle's conv2d has
/// one stride for both axes, so stride 2 runs at stride 1 and keeps every other frequency row.
fn conv2d_freq_stride(
    x: &Tensor,
    k: &Tensor,
    stride: usize,
    device: &Device,
) -> Result<Tensor, DiarError> {
    let pad = k.dim(2)? / 2;
    let y = x.conv2d(k, pad, 1, 1, 1)?;
    if stride == 1 {
        return Ok(y);
    }
    let rows = y.dim(2)?;
    let keep: Vec<u32> = (0..rows as u32).step_by(stride).collect();
    let idx = Tensor::new(keep.as_slice(), device)?;
    Ok(y.index_select(&idx, 2)?)
}

struct ResBlock {
    conv1: Tensor,
    bn1: BatchNorm,
    conv2: Tensor,
    bn2: BatchNorm,
    shortcut: Option<(Tensor, BatchNorm)>,
    stride: usize,
}

impl ResBlock {
    fn load(w: &Weights, p: &str, stride: usize) -> Result<Self, DiarError> {
        let shortcut = if w.contains_key(&format!("{p}.shortcut.0.weight")) {
            Some((
                weight(w, &format!("{p}.shortcut.0.weight"))?,
                BatchNorm::load(w, &format!("{p}.shortcut.1"), true, 4)?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: weight(w, &format!("{p}.conv1.weight"))?,
            bn1: BatchNorm::load(w, &format!("{p}.bn1"), true, 4)?,
            conv2: weight(w, &format!("{p}.conv2.weight"))?,
            bn2: BatchNorm::load(w, &format!("{p}.bn2"), true, 4)?,
            shortcut,
            stride,
        })
    }

    fn forward(&self, x: &Tensor, dev: &Device) -> Result<Tensor, DiarError> {
        let y = self
            .bn1
            .forward_relu(&conv2d_freq_stride(x, &self.conv1, self.stride, dev)?)?;
        let y = self
            .bn2
            .forward(&conv2d_freq_stride(&y, &self.conv2, 1, dev)?)?;
        let skip = match &self.shortcut {
            Some((k, bn)) => bn.forward(&conv2d_freq_stride(x, k, self.stride, dev)?)?,
            None => x.clone(),
        };
        Ok((y + skip)?.relu()?)
    }
}

/// The 2-D front module: (B, 80, T) fbank -> (B, 320, T).
struct Fcm {
    conv1: Tensor,
    bn1: BatchNorm,
    blocks: Vec<ResBlock>,
    conv2: Tensor,
    bn2: BatchNorm,
}

impl Fcm {
    fn load(w: &Weights) -> Result<Self, DiarError> {
        let mut blocks = Vec::new();
        for layer in ["head.layer1", "head.layer2"] {
            blocks.push(ResBlock::load(w, &format!("{layer}.0"), 2)?);
            blocks.push(ResBlock::load(w, &format!("{layer}.1"), 1)?);
        }
        Ok(Self {
            conv1: weight(w, "head.conv1.weight")?,
            bn1: BatchNorm::load(w, "head.bn1", true, 4)?,
            blocks,
            conv2: weight(w, "head.conv2.weight")?,
            bn2: BatchNorm::load(w, "head.bn2", true, 4)?,
        })
    }

    fn forward(&self, x: &Tensor, dev: &Device) -> Result<Tensor, DiarError> {
        let x = x.unsqueeze(1)?;
        let mut y = self
            .bn1
            .forward_relu(&conv2d_freq_stride(&x, &self.conv1, 1, dev)?)?;
        for block in &self.blocks {
            y = block.forward(&y, dev)?;
        }
        let y = self
            .bn2
            .forward_relu(&conv2d_freq_stride(&y, &self.conv2, 2, dev)?)?;
        let (b, c, f, t) = y.dims4()?;
        Ok(y.reshape((b, c * f, t))?)
    }
}

/// Global mean plus the mean of each frame's 100-frame segment (the last segment may be short).
fn context(x: &Tensor) -> Result<Tensor, DiarError> {
    let t = x.dim(2)?;
    let global = x.mean_keepdim(2)?;
    let mut parts = Vec::with_capacity(t.div_ceil(SEGMENT_FRAMES));
    let mut start = 0;
    while start < t {
        let len = SEGMENT_FRAMES.min(t - start);
        let seg = x.narrow(2, start, len)?.mean_keepdim(2)?;
        parts.push(seg.repeat((1, 1, len))?);
        start += len;
    }
    let segments = Tensor::cat(&parts, 2)?;
    Ok(segments.broadcast_add(&global)?)
}

struct CamLayer {
    local: Tensor,
    linear1: (Tensor, Tensor),
    linear2: (Tensor, Tensor),
    dilation: usize,
}

fn conv1x1_bias(x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor, DiarError> {
    Ok(x.conv1d(w, 0, 1, 1, 1)?.broadcast_add(&b.unsqueeze(1)?)?)
}

impl CamLayer {
    fn forward(&self, x: &Tensor) -> Result<Tensor, DiarError> {
        let pad = (self.local.dim(2)? - 1) / 2 * self.dilation;
        let y = x.conv1d(&self.local, pad, 1, self.dilation, 1)?;
        let ctx = conv1x1_bias(&context(x)?, &self.linear1)?.relu()?;
        let mask = candle_nn::ops::sigmoid(&conv1x1_bias(&ctx, &self.linear2)?)?;
        Ok(y.mul(&mask)?)
    }
}

struct DenseLayer {
    bn1: BatchNorm,
    linear1: Tensor,
    bn2: BatchNorm,
    cam: CamLayer,
}

impl DenseLayer {
    fn load(w: &Weights, p: &str, dilation: usize) -> Result<Self, DiarError> {
        let cam = format!("{p}.cam_layer");
        Ok(Self {
            bn1: BatchNorm::load(w, &format!("{p}.nonlinear1.batchnorm"), true, 3)?,
            linear1: weight(w, &format!("{p}.linear1.weight"))?,
            bn2: BatchNorm::load(w, &format!("{p}.nonlinear2.batchnorm"), true, 3)?,
            cam: CamLayer {
                local: weight(w, &format!("{cam}.linear_local.weight"))?,
                linear1: (
                    weight(w, &format!("{cam}.linear1.weight"))?,
                    weight(w, &format!("{cam}.linear1.bias"))?,
                ),
                linear2: (
                    weight(w, &format!("{cam}.linear2.weight"))?,
                    weight(w, &format!("{cam}.linear2.bias"))?,
                ),
                dilation,
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, DiarError> {
        let y = self
            .bn1
            .forward_relu(x)?
            .conv1d(&self.linear1, 0, 1, 1, 1)?;
        self.cam.forward(&self.bn2.forward_relu(&y)?)
    }
}

/// A dense block and the transit layer after it.
struct Stage {
    layers: Vec<DenseLayer>,
    transit_bn: BatchNorm,
    transit: Tensor,
}

impl Stage {
    fn forward(&self, x: &Tensor) -> Result<Tensor, DiarError> {
        let mut x = x.clone();
        for layer in &self.layers {
            let y = layer.forward(&x)?;
            x = Tensor::cat(&[&x, &y], 1)?;
        }
        Ok(self
            .transit_bn
            .forward_relu(&x)?
            .conv1d(&self.transit, 0, 1, 1, 1)?)
    }
}

/// The CAM++ network with its weights on one device.
pub struct CamPlusPlus {
    head: Fcm,
    tdnn: Tensor,
    tdnn_bn: BatchNorm,
    stages: Vec<Stage>,
    out_bn: BatchNorm,
    dense: Tensor,
    dense_bn: BatchNorm,
    device: Device,
}

impl std::fmt::Debug for CamPlusPlus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CamPlusPlus")
            .field("stages", &self.stages.len())
            .finish_non_exhaustive()
    }
}

impl CamPlusPlus {
    /// Loads a zip-format torch state dict (the 3D-Speaker checkpoint) onto the CPU.
    pub fn load(path: &Path) -> Result<Self, DiarError> {
        let device = Device::Cpu;
        let tensors = candle_core::pickle::read_all(path)
            .map_err(|e| DiarError::Checkpoint(format!("{}: {e}", path.display())))?;
        let w: Weights = tensors.into_iter().collect();
        let mut stages = Vec::new();
        for (i, dilation) in [(1usize, 1usize), (2, 2), (3, 2)] {
            let mut layers = Vec::new();
            let mut j = 1;
            while w.contains_key(&format!("xvector.block{i}.tdnnd{j}.linear1.weight")) {
                layers.push(DenseLayer::load(
                    &w,
                    &format!("xvector.block{i}.tdnnd{j}"),
                    dilation,
                )?);
                j += 1;
            }
            if layers.is_empty() {
                return Err(DiarError::MissingTensor(format!("xvector.block{i}.tdnnd1")));
            }
            stages.push(Stage {
                layers,
                transit_bn: BatchNorm::load(
                    &w,
                    &format!("xvector.transit{i}.nonlinear.batchnorm"),
                    true,
                    3,
                )?,
                transit: weight(&w, &format!("xvector.transit{i}.linear.weight"))?,
            });
        }
        Ok(Self {
            head: Fcm::load(&w)?,
            tdnn: weight(&w, "xvector.tdnn.linear.weight")?,
            tdnn_bn: BatchNorm::load(&w, "xvector.tdnn.nonlinear.batchnorm", true, 3)?,
            stages,
            out_bn: BatchNorm::load(&w, "xvector.out_nonlinear.batchnorm", true, 3)?,
            dense: weight(&w, "xvector.dense.linear.weight")?,
            dense_bn: BatchNorm::load(&w, "xvector.dense.nonlinear.batchnorm", false, 2)?,
            device,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeddings of a batch of mean-normalised fbank matrices, all `frames` x 80, row-major and
    /// concatenated in `feats`. Returns `batch` embeddings of 192 values (not length-normalised).
    pub fn embed(
        &self,
        feats: &[f32],
        batch: usize,
        frames: usize,
    ) -> Result<Vec<Vec<f32>>, DiarError> {
        if frames < MIN_FRAMES {
            return Err(DiarError::TooShort {
                frames,
                min: MIN_FRAMES,
            });
        }
        if feats.len() != batch * frames * FEATURE_DIM {
            return Err(DiarError::Shape(format!(
                "{} values for {batch} x {frames} x {FEATURE_DIM}",
                feats.len()
            )));
        }
        let x = Tensor::from_slice(feats, (batch, frames, FEATURE_DIM), &self.device)?
            .transpose(1, 2)?
            .contiguous()?;
        let x = self.head.forward(&x, &self.device)?;
        let pad = (self.tdnn.dim(2)? - 1) / 2;
        let mut x = self
            .tdnn_bn
            .forward_relu(&x.conv1d(&self.tdnn, pad, 2, 1, 1)?)?;
        for stage in &self.stages {
            x = stage.forward(&x)?;
        }
        let x = self.out_bn.forward_relu(&x)?;
        // Statistics pooling: mean and unbiased standard deviation over time.
        let t = x.dim(2)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / (t.max(2) - 1) as f64)?;
        let stats = Tensor::cat(&[&mean, &var.sqrt()?], 1)?;
        let emb = stats.conv1d(&self.dense, 0, 1, 1, 1)?.squeeze(2)?;
        let emb = self.dense_bn.forward(&emb)?;
        Ok(emb.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
