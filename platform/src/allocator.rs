//! The allocator settings every Quill process starts with. Each binary
//! makes mimalloc its global allocator; this tunes it.

/// `mi_option_purge_delay`'s place in mimalloc's `mi_option_t`, the same
/// in its v2 and v3 headers; the sys crate names no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS at once. mimalloc otherwise purges it
/// after a delay counted in allocator activity, which an idle process
/// never has: auth held 54 MiB idle after a burst of registrations, 25
/// with this, at no throughput cost within the bench's spread. An
/// operator's `MIMALLOC_PURGE_DELAY` still wins.
///
/// The one `unsafe` outside tests: an FFI call with no pointers. Setting the
/// environment variable from `main` instead would be `unsafe` as well
/// (`std::env::set_var`), and too late if mimalloc has read it already.
#[allow(unsafe_code)]
pub fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's process-wide integer options, which
        // it reads atomically; valid at any time, from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}
