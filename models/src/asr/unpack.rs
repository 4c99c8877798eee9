//! Turns an ORT-format model back into an ONNX graph that onnxruntime will optimise.
//!
//! Why: the Moonshine decoder ships in ORT format with int8 weights that the graph dequantises
//! (Cast, Mul, Add) and the tied output projection transposes on EVERY run. onnxruntime applies
//! no graph optimisations to ORT-format models, so that constant work is never folded: a
//! profile showed it at about half of each decoder step. onnxruntime can save a loaded model as
//! ONNX; the saved subgraphs of `If` nodes lack the names the ONNX checker requires, which this
//! module fills in (a minimal protobuf rewrite: ModelProto.graph -> GraphProto.node ->
//! NodeProto.attribute -> AttributeProto.g / graphs). Loading the result with full
//! optimisation folds the dequantisation once, at load time.

use std::path::Path;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("onnxruntime could not convert {path}: {message}")]
    Convert { path: String, message: String },
    #[error("the converted model is not valid protobuf: {0}")]
    Protobuf(&'static str),
    #[error("cannot use a temporary file: {0}")]
    Io(#[from] std::io::Error),
}

/// Loads `model` (ORT format), converts it to ONNX and returns the patched ONNX bytes.
pub fn ort_to_onnx(env: &Environment, model: &Path) -> Result<Vec<u8>, UnpackError> {
    let err = |message: String| UnpackError::Convert {
        path: model.display().to_string(),
        message,
    };
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("model.onnx");
    let session = Session::builder(env)
        .map_err(|e| err(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| err(e.to_string()))?
        .with_optimized_model_path(&out)
        .map_err(|e| err(e.to_string()))?
        .commit_from_file(model)
        .map_err(|e| err(e.to_string()))?;
    drop(session);
    let bytes = std::fs::read(&out)?;
    let mut counter = 0;
    patch_message(&bytes, Kind::Model, &mut counter)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, UnpackError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*pos)
            .ok_or(UnpackError::Protobuf("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(UnpackError::Protobuf("varint too long"))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Copies a message, recursing into the fields that lead to graphs and naming unnamed graphs.
fn patch_message(buf: &[u8], kind: Kind, counter: &mut usize) -> Result<Vec<u8>, UnpackError> {
    let mut out = Vec::with_capacity(buf.len() + 16);
    let mut pos = 0;
    let mut named = false;
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(buf, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                read_varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?)
                    .map_err(|_| UnpackError::Protobuf("length overflow"))?;
                let body = buf
                    .get(pos..pos + len)
                    .ok_or(UnpackError::Protobuf("truncated field"))?;
                pos += len;
                let child = match (kind, field) {
                    (Kind::Model, 7) | (Kind::Attribute, 6) | (Kind::Attribute, 11) => {
                        Some(Kind::Graph)
                    }
                    (Kind::Graph, 1) => Some(Kind::Node),
                    (Kind::Node, 5) => Some(Kind::Attribute),
                    _ => None,
                };
                if kind == Kind::Graph && field == 2 && len > 0 {
                    named = true;
                }
                if let Some(child) = child {
                    let patched = patch_message(body, child, counter)?;
                    write_varint(&mut out, key);
                    write_varint(&mut out, patched.len() as u64);
                    out.extend_from_slice(&patched);
                    continue;
                }
                if kind == Kind::Graph && field == 2 && len == 0 {
                    // An empty name: dropped here, added below.
                    continue;
                }
            }
            _ => return Err(UnpackError::Protobuf("unsupported wire type")),
        }
        if pos > buf.len() {
            return Err(UnpackError::Protobuf("truncated field"));
        }
        out.extend_from_slice(&buf[start..pos]);
    }
    if kind == Kind::Graph && !named {
        *counter += 1;
        let name = format!("subgraph_{counter}");
        write_varint(&mut out, (2 << 3) | 2);
        write_varint(&mut out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
    }
    Ok(out)
}
