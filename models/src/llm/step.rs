//! What the decode loop needs from a model, whatever device it runs on: one batched step that
//! appends every sequence's new tokens to its cache and picks the next token of each sequence
//! that asked for one. The CPU model ([`QuantLm`]) samples on the host from its logits; the GPU
//! model samples on the device, so only token ids come back.

use super::LlmError;
use super::gguf::LmConfig;
use super::kv::SeqKv;
use super::model::{QuantLm, StepSeq};
use super::sampling::Pick;
use super::tokenizer::LmTokenizer;

pub trait StepModel: Send + Sync {
    fn config(&self) -> &LmConfig;
    fn tokenizer(&self) -> &LmTokenizer;
    /// Longest sequence (cached + new tokens) a step accepts.
    fn max_positions(&self) -> usize;
    /// A fresh, empty cache for one sequence.
    fn new_cache(&self) -> SeqKv;
    /// Where the model runs, for logs ("cpu", "cuda:0 NVIDIA H200 ...").
    fn device(&self) -> String;
    /// One step over `seqs`; `picks[i]` (if any) says how to choose sequence i's next token.
    /// Returns the chosen token per sequence (`None` where no pick was asked).
    fn step(
        &self,
        seqs: &mut [StepSeq<'_>],
        picks: &[Option<Pick<'_>>],
    ) -> Result<Vec<Option<u32>>, LlmError>;
}

impl StepModel for QuantLm {
    fn config(&self) -> &LmConfig {
        &self.config
    }
    fn tokenizer(&self) -> &LmTokenizer {
        &self.tokenizer
    }
    fn max_positions(&self) -> usize {
        QuantLm::max_positions(self)
    }
    fn new_cache(&self) -> SeqKv {
        QuantLm::new_cache(self)
    }
    fn device(&self) -> String {
        "cpu".into()
    }
    fn step(
        &self,
        seqs: &mut [StepSeq<'_>],
        picks: &[Option<Pick<'_>>],
    ) -> Result<Vec<Option<u32>>, LlmError> {
        let logits = self.forward(seqs)?.to_vec2::<f32>()?;
        Ok(logits
            .into_iter()
            .enumerate()
            .map(|(i, mut row)| picks.get(i).copied().flatten().map(|p| p.apply(&mut row)))
            .collect())
    }
}
