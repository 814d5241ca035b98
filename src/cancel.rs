//! Cancellation of work under way in this process: the Python package's answer to Ctrl-C
//! (docs/model.md §2). The engine checks the flag before each chunk of users, so a request stops
//! every evaluation within one chunk per thread (well under a second at the default chunk size)
//! and it returns [`Error::Cancelled`](crate::Error::Cancelled); a run then removes its
//! unfinished folder as on any other error. The command line does not use it: a signal there
//! ends the process (`folder::interrupted`).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every evaluation under way in this process to stop.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Withdraws a request, once what it cancelled has returned.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// Whether a cancellation has been requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// `Err(Error::Cancelled)` when a cancellation has been requested.
pub fn check() -> crate::Result<()> {
    if requested() {
        Err(crate::Error::Cancelled)
    } else {
        Ok(())
    }
}
