//! Keeps freed buffers from piling up in the heap.
//!
//! glibc serves allocations above `M_MMAP_THRESHOLD` (128 KiB at start) with their own mappings,
//! returned to the system when freed — but every such free *raises* the threshold to the freed
//! size (up to 32 MiB). After the first 8 MiB S3 part is freed, later parts and 1 MiB pipeline
//! chunks come from the heap, whose freed space is kept: a worker uploading 3 GiB to S3 peaked at
//! 128 MiB RSS. Pinning the threshold at 1 MiB keeps big buffers in their own mappings (and
//! disables the dynamic raise): the same upload peaks at 77 MiB, at no measurable cost in speed.

/// Pins glibc's mmap threshold. Call first thing in `main`, before any thread starts.
pub fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; it is called before any other
    // thread exists, so nothing allocates concurrently.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
