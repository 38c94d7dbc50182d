//! What an operator may see of a secret: the one rule is `manifold_config::redact` (the lowest
//! crate every user reaches); this module re-exports it and adds the queue's own [`task`].

pub use manifold_config::redact::*;

/// A task as it may be shown (dead-letter listings): its headers redacted. The task itself is
/// left alone, since its stored form must keep what the upstream needs.
pub fn task(task: &crate::Task) -> crate::Task {
    crate::Task {
        headers: headers(&task.headers),
        ..task.clone()
    }
}
