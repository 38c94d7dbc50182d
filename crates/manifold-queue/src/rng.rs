//! A per-thread fast random generator, seeded from the OS once per thread.

use std::cell::RefCell;

use rand::rngs::{SmallRng, StdRng};
use rand::SeedableRng;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
    /// A cryptographic generator (ChaCha12) for task ids, which are capabilities: SmallRng's
    /// output reveals its state, so its next ids could be computed from a few earlier ones.
    static SECURE: RefCell<StdRng> = RefCell::new(StdRng::from_os_rng());
}

/// Runs `f` with this thread's generator.
pub(crate) fn with_rng<R>(f: impl FnOnce(&mut SmallRng) -> R) -> R {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// Runs `f` with this thread's cryptographic generator (for secrets such as task ids).
pub(crate) fn with_secure_rng<R>(f: impl FnOnce(&mut StdRng) -> R) -> R {
    SECURE.with(|rng| f(&mut rng.borrow_mut()))
}
