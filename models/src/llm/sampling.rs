//! Per-request sampling: greedy, or temperature + top-p with a repetition penalty; stop strings.

/// Sampling parameters of one request.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass kept when sampling (1.0 = all).
    pub top_p: f32,
    /// >1 discourages tokens seen in the last `repeat_window` tokens (1.0 = off).
    pub repeat_penalty: f32,
    pub repeat_window: usize,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// The reply ends before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Seed of this request's random stream (sampling is reproducible per request).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            repeat_penalty: 1.0,
            repeat_window: 64,
            max_tokens: 256,
            stop: Vec::new(),
            seed: 0x5eed,
        }
    }
}

/// Sampling state of one request.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: u64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = params.seed | 1;
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    fn next_f32(&mut self) -> f32 {
        // xorshift64*: small, seedable, good enough for picking tokens.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The random draw for the next pick, taken only when sampling (so the stream is the same
    /// on every device); 0 when greedy.
    pub fn draw(&mut self) -> f32 {
        if self.params.temperature > 0.0 {
            self.next_f32()
        } else {
            0.0
        }
    }

    /// What picking the next token needs, given the `recent` tokens and a [`Self::draw`].
    pub fn pick_drawn<'a>(&self, recent: &'a [u32], uniform: f32) -> Pick<'a> {
        let p = &self.params;
        let start = recent.len().saturating_sub(p.repeat_window);
        Pick {
            temperature: p.temperature,
            top_p: p.top_p,
            penalty: p.repeat_penalty,
            uniform,
            recent: if p.repeat_penalty != 1.0 {
                &recent[start..]
            } else {
                &[]
            },
        }
    }

    /// Draw and describe the next pick.
    pub fn pick<'a>(&mut self, recent: &'a [u32]) -> Pick<'a> {
        let u = self.draw();
        self.pick_drawn(recent, u)
    }

    /// Pick the next token from `logits` given the `recent` tokens (for the penalty).
    pub fn sample(&mut self, logits: &mut [f32], recent: &[u32]) -> u32 {
        let pick = self.pick(recent);
        pick.apply(logits)
    }
}

/// One row's sampling decision, ready to run on the CPU ([`Pick::apply`]) or on a device.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub penalty: f32,
    /// The random draw in [0, 1) (0 when greedy).
    pub uniform: f32,
    /// Tokens to penalise, once per occurrence (empty when the penalty is off).
    pub recent: &'a [u32],
}

impl Pick<'_> {
    /// Greedy, no penalty: the argmax (warm-up rows, tests).
    pub const GREEDY: Pick<'static> = Pick {
        temperature: 0.0,
        top_p: 1.0,
        penalty: 1.0,
        uniform: 0.0,
        recent: &[],
    };

    /// The CPU sampler: penalty, then argmax or temperature + top-p over the sorted distribution.
    pub fn apply(&self, logits: &mut [f32]) -> u32 {
        if self.penalty != 1.0 {
            for &t in self.recent {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / self.penalty
                    } else {
                        *l * self.penalty
                    };
                }
            }
        }
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
            .filter(|(_, p)| *p > 0.0)
            .collect();
        let total: f32 = probs.iter().map(|(_, p)| p).sum();
        probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let keep_mass = self.top_p.clamp(0.0, 1.0) * total;
        let mut acc = 0.0;
        let mut cut = probs.len();
        for (i, (_, pr)) in probs.iter().enumerate() {
            acc += pr;
            if acc >= keep_mass {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut.max(1));
        let kept: f32 = probs.iter().map(|(_, p)| p).sum();
        let mut r = self.uniform * kept;
        for &(id, pr) in &probs {
            if r < pr {
                return id;
            }
            r -= pr;
        }
        probs.last().map(|(id, _)| *id).unwrap_or(0)
    }
}

pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Holds back text that might be the start of a stop string, and finds stop strings.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    held: String,
}

/// What to emit after a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now.
    Emit(String),
    /// A stop string was found: emit this text and end.
    Stop(String),
}

impl StopFilter {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome::Emit(std::mem::take(&mut self.held));
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return StopOutcome::Stop(out);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in self.held.char_indices() {
                let tail = &self.held[i..];
                if s.starts_with(tail) {
                    keep = keep.max(tail.len());
                    break;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// Text still held back when the reply ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_filter_holds_back_partial_stop_and_cuts_at_stop() {
        let mut f = StopFilter::new(&["User:".to_owned()]);
        assert_eq!(f.push("Hello Us"), StopOutcome::Emit("Hello ".into()));
        assert_eq!(f.push("e"), StopOutcome::Emit(String::new()));
        assert_eq!(f.push("r: hi"), StopOutcome::Stop(String::new()));
        let mut f = StopFilter::new(&["\n\n".to_owned()]);
        assert_eq!(f.push("a\nb"), StopOutcome::Emit("a\nb".into()));
        assert_eq!(f.push("\n\nc"), StopOutcome::Stop(String::new()));
    }

    #[test]
    fn greedy_is_argmax_and_top_p_zero_is_argmax() {
        let mut logits = vec![0.1, 2.0, -1.0, 1.9];
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.8,
            top_p: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut logits, &[]), 1);
    }

    #[test]
    fn repeat_penalty_lowers_recent_tokens() {
        let mut logits = vec![1.0, 1.1];
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            ..Default::default()
        });
        assert_eq!(s.sample(&mut logits, &[1]), 0);
    }
}
