//! Giving freed heap memory back to the operating system.
//!
//! Model inference allocates and frees large buffers (activations, KV caches of sessions that
//! come and go). glibc's allocator keeps freed memory in its arenas for reuse and returns it to
//! the OS only from the top of a heap, so after a peak (several long conversations at once) the
//! process's RSS stays at that peak although the memory is free: RSS then ratchets up with each
//! new peak and says little about what is live (the soak's leak check reads RSS).
//! `malloc_trim(0)` also releases free pages in the middle of every arena (glibc >= 2.8).

/// Returns the allocator's free pages to the OS. `true` when some memory was released. A
/// no-op (false) where the allocator is not glibc's.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes an integer by value and works only on the allocator's own state
    // under the allocator's own locks (glibc documents it MT-Safe): no memory of ours is touched.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_can_be_released() {
        // 64 MiB in 64 KiB blocks, touched, then freed: blocks under glibc's mmap threshold
        // (128 KiB at least) live in the heap, which keeps the pages until trimmed.
        let blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8; 64 << 10]).collect();
        assert_eq!(blocks.iter().map(Vec::len).sum::<usize>(), 64 << 20);
        drop(blocks);
        // Calling it is safe at any time, and on glibc something was there to release.
        let released = super::release_free_memory();
        assert_eq!(released, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
