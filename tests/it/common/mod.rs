//! Shared by the process-level tests.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A child process killed and reaped when dropped: a test that fails halfway
/// must not leave a server running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}
