//! The process's heap: fewer glibc malloc arenas, and freed memory handed back to the system.
//!
//! glibc gives each thread that meets a locked arena a new one (up to 8 per core) and keeps
//! every arena's freed pages, so after a burst (a publish to every holder) a server stays tens
//! of MB above idle. Two arenas are enough for a runtime on a few cores, and `malloc_trim`
//! returns the free pages of every arena. Both are no-ops off glibc.
//!
//! The only `unsafe` of the crate: two calls into the C library that take plain integers.

#![allow(unsafe_code)]

/// Arenas the allocator may create, unless `MALLOC_ARENA_MAX` says otherwise.
const ARENA_MAX: i32 = 2;

/// Caps glibc's malloc arenas, unless the operator chose a number (`MALLOC_ARENA_MAX`, or
/// `glibc.malloc.arena_max` in `GLIBC_TUNABLES`). Call first thing in `main`, before any other
/// thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.arena_max"))
    {
        // SAFETY: mallopt only sets an allocator parameter; it reads no memory of ours.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        }
    }
}

/// Hands free heap pages of every arena back to the system.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
