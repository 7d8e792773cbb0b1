//! Gives memory that connections freed back to the operating system.
//!
//! glibc's allocator keeps freed chunks resident unless they end at the top of a
//! heap: after 1000 slow readers left, fulcrum's RSS stayed at ~55 KB per client
//! (60 MB), although a `malloc_trim(0)` brought it back to 7.5 MB. Neither
//! `M_TRIM_THRESHOLD` nor one arena changed that (the free space is holes, not a
//! heap's top), and mimalloc and jemalloc held more per connection. So a thread
//! looks at the allocator once a second and trims when it holds more free memory
//! than it has in use (HAProxy trims its pools with `malloc_trim` the same way,
//! unless `no-memory-trimming` is set). Under steady load free memory stays below
//! what is in use, so the hot path is not made to fault pages back in.

use std::time::Duration;

/// How often the allocator is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Free memory below this is never worth a trim.
const SLACK: usize = 4 << 20;

/// Starts the trimming thread (a no-op where the allocator is not glibc's).
pub fn start_trimming() {
    if !glibc::AVAILABLE {
        return;
    }
    let started = std::thread::Builder::new()
        .name("fulcrum-trim".into())
        .spawn(|| loop {
            std::thread::sleep(EVERY);
            let (in_use, free) = glibc::usage();
            if worth_trimming(in_use, free) {
                glibc::trim();
                tracing::debug!(in_use, free, "returned free memory to the system");
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the memory trimming thread; freed memory stays resident");
    }
}

/// Trim once the allocator holds more free memory than in use, and enough of it.
fn worth_trimming(in_use: usize, free: usize) -> bool {
    free > SLACK && free > in_use
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    //! The unsafe island: two glibc calls (malloc(3)), both thread-safe.

    pub const AVAILABLE: bool = true;

    /// glibc's `struct mallinfo2` (glibc 2.33+): every field a `size_t`.
    #[repr(C)]
    #[derive(Default)]
    struct MallInfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }

    extern "C" {
        fn mallinfo2() -> MallInfo2;
        fn malloc_trim(pad: usize) -> i32;
    }

    /// Bytes the allocator has handed out, and bytes it holds free.
    pub fn usage() -> (usize, usize) {
        // SAFETY: mallinfo2 takes no arguments, returns a plain struct by value and
        // locks each arena while it reads it.
        let info = unsafe { mallinfo2() };
        (info.uordblks, info.fordblks)
    }

    pub fn trim() {
        // SAFETY: malloc_trim locks each arena in turn and only releases pages of
        // free chunks (madvise MADV_DONTNEED); no pointer of ours is involved.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub const AVAILABLE: bool = false;
    pub fn usage() -> (usize, usize) {
        (0, 0)
    }
    pub fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_when_free_memory_outweighs_what_is_used() {
        assert!(!worth_trimming(100 << 20, 50 << 20));
        assert!(!worth_trimming(0, 1 << 20));
        assert!(worth_trimming(5 << 20, 55 << 20));
    }

    #[test]
    fn the_allocator_reports_what_it_holds() {
        if !glibc::AVAILABLE {
            return;
        }
        // Below the mmap threshold, so it comes from an arena.
        let block = vec![1u8; 64 << 10];
        let (in_use, _) = glibc::usage();
        assert!(in_use >= block.len(), "{in_use} bytes in use");
        drop(block);
        glibc::trim();
    }
}
