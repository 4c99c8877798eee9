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
    /// Feeds `seq` (its cache grows by its tokens) and returns the probability that the next
    /// token is one of `tokens`: a scoring pass, nothing sampled. `None`, with the cache left
    /// as it was, where the model does not expose its distribution.
    fn next_token_mass(
        &self,
        _seq: &mut StepSeq<'_>,
        _tokens: &[u32],
    ) -> Result<Option<f32>, LlmError> {
        Ok(None)
    }
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
    fn next_token_mass(
        &self,
        seq: &mut StepSeq<'_>,
        tokens: &[u32],
    ) -> Result<Option<f32>, LlmError> {
        let row = self
            .forward(std::slice::from_mut(seq))?
            .to_vec2::<f32>()?
            .pop()
            .unwrap_or_default();
        Ok(Some(probability_mass(&row, tokens)))
    }
}

/// Softmax probability of `tokens` under `logits` (ids outside the row count as 0).
pub fn probability_mass(logits: &[f32], tokens: &[u32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0.0;
    }
    let total: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let mass: f32 = tokens
        .iter()
        .filter_map(|&t| logits.get(t as usize))
        .map(|v| (v - max).exp())
        .sum();
    mass / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_mass_is_the_softmax_share_of_the_tokens() {
        let logits = [0.0, (3.0f32).ln(), 0.0];
        assert!((probability_mass(&logits, &[1]) - 0.6).abs() < 1e-6);
        assert!((probability_mass(&logits, &[0, 2]) - 0.4).abs() < 1e-6);
        assert_eq!(probability_mass(&logits, &[7]), 0.0);
        assert_eq!(probability_mass(&[], &[0]), 0.0);
    }
}
