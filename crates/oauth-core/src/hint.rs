//! Cache hints for the pool's hot path.
//!
//! Over thousands of credentials, every call touches the state of a credential no call touched
//! lately, which is no longer in any cache: each of its cache lines costs a trip to memory, one
//! after the other where one load needs the address another returns. Round-robin knows which
//! credential comes next, so the pool asks for its lines a call or two before it needs them
//! (`safe_arch`'s prefetch instructions: no `unsafe` here, and nothing at all on targets without
//! them).
//!
//! A hint changes nothing observable: the line is fetched or not, never written.

/// Asks for the cache line holding `value`, to be read soon.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    safe_arch::prefetch_t0(value);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    let _ = value;
}

/// Asks for the cache line holding `value`, to be written soon (a reference count, a lock, a
/// counter): where the CPU can, it fetches the line ready for writing.
#[inline(always)]
pub fn prefetch_write<T>(value: &T) {
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    safe_arch::prefetch_et0(value);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    let _ = value;
}
