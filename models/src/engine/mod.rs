//! Pieces shared by model engines: the slot table sessions lease from, and the named thread an
//! engine runs on.
//!
//! A slot is a fixed place in an engine's batch. A session leases one (or is refused at once
//! when none is free); releasing it bumps the slot's generation, so work the engine finishes
//! for a previous owner is recognised as stale and dropped.

pub mod wake;

/// What an engine reports for liveness and readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealth {
    /// Why the engine can no longer serve, once it has failed (it does not recover).
    pub failure: Option<String>,
    /// Sessions it can hold at once; `None` when it has no per-session limit.
    pub capacity: Option<usize>,
    /// Sessions holding a lease now.
    pub in_use: usize,
    /// How far behind real time the engine is, ms. ASR: the most caller audio waiting in any
    /// session's inbox for the engine to take it. LLM: the longest any reply (or a turn still
    /// queued for a slot) has waited for its next token, less its own prompt's prefill time.
    /// `None` where not measured (TTS, diarization).
    pub backlog_ms: Option<u64>,
}

/// `Some(reason)` when an engine thread that should run for the process's life has ended.
pub fn thread_failure(thread: Option<&JoinHandle<()>>) -> Option<String> {
    thread
        .is_some_and(|t| t.is_finished())
        .then(|| "the engine thread has stopped".to_string())
}

use std::thread::JoinHandle;

/// A leased slot: its index and the generation it was leased at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId {
    pub index: usize,
    pub generation: u64,
}

/// Free list and generations of a fixed number of slots.
#[derive(Debug)]
pub struct SlotTable {
    generations: Vec<u64>,
    leased: Vec<bool>,
    /// Free slots, lowest index last so the table fills from slot 0.
    free: Vec<usize>,
}

impl SlotTable {
    pub fn new(slots: usize) -> Self {
        Self {
            generations: vec![0; slots],
            leased: vec![false; slots],
            free: (0..slots).rev().collect(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.generations.len()
    }

    pub fn in_use(&self) -> usize {
        self.capacity() - self.free.len()
    }

    /// Takes a free slot, or `None` when all are leased.
    pub fn lease(&mut self) -> Option<SlotId> {
        let index = self.free.pop()?;
        self.generations[index] += 1;
        self.leased[index] = true;
        Some(SlotId {
            index,
            generation: self.generations[index],
        })
    }

    /// Gives a slot back. Returns false (and changes nothing) for a stale or unknown id.
    pub fn release(&mut self, id: SlotId) -> bool {
        if !self.is_current(id) {
            return false;
        }
        self.leased[id.index] = false;
        // A new generation at release too: outputs made for the old owner are stale now.
        self.generations[id.index] += 1;
        self.free.push(id.index);
        true
    }

    /// Whether `id` is the slot's current lease.
    pub fn is_current(&self, id: SlotId) -> bool {
        self.leased.get(id.index).copied().unwrap_or(false)
            && self.generations[id.index] == id.generation
    }
}

/// Starts an engine on its own named OS thread.
pub fn spawn_engine_thread<F>(name: &str, body: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_until_full_then_refuses() {
        let mut table = SlotTable::new(2);
        let a = table.lease().expect("free slot");
        let b = table.lease().expect("free slot");
        assert_ne!(a.index, b.index);
        assert_eq!(table.lease(), None);
        assert_eq!(table.in_use(), 2);
        assert!(table.release(a));
        let c = table.lease().expect("slot freed");
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
    }

    #[test]
    fn stale_ids_are_not_current_and_cannot_release() {
        let mut table = SlotTable::new(1);
        let a = table.lease().expect("free slot");
        assert!(table.release(a));
        assert!(!table.is_current(a));
        assert!(!table.release(a));
        let b = table.lease().expect("free slot");
        assert!(table.is_current(b));
        assert!(!table.release(SlotId {
            index: 7,
            generation: 1
        }));
    }
}
