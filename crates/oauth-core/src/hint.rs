//! Cache hints for the pool's hot path.
//!
//! Over thousands of credentials, every call touches the state of a credential no call touched
//! lately, which is no longer in any cache: each of its cache lines costs a trip to memory, one
//! after the other where one load needs the address another returns. Round-robin knows which
//! credential comes next, so the pool asks for its lines a call or two before it needs them
//! (`safe_arch`'s prefetch instructions on x86 and x86-64: no `unsafe` here; on other targets
//! the hints do nothing).
//!
//! A hint changes nothing observable: the line is fetched or not, never written.

#[cfg(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse"
))]
use safe_arch::{prefetch_et0 as write_hint, prefetch_t0 as read_hint};

#[cfg(not(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse"
)))]
fn read_hint<T>(_: &T) {}

#[cfg(not(all(
    any(target_arch = "x86", target_arch = "x86_64"),
    target_feature = "sse"
)))]
fn write_hint<T>(_: &T) {}

/// Asks for the cache line holding `value`, to be read soon.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    read_hint(value);
}

/// Asks for the cache line holding `value`, to be written soon (a reference count, a lock, a
/// counter): a write-intent prefetch where the build enables the `prfchw` target feature, a
/// read prefetch otherwise (a baseline x86-64 build, as measured).
#[inline(always)]
pub fn prefetch_write<T>(value: &T) {
    write_hint(value);
}
