//! Secret values in memory: zeroized on drop, and printed as `[REDACTED]` by `Debug`, so a `{:?}` of any
//! struct that holds one (a client, a credential, an error) cannot leak it into a log.

use std::fmt;
use std::ops::Deref;

use zeroize::{Zeroize, Zeroizing};

/// A secret: a client secret, an identity header, a storage-account key.
#[derive(Clone)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value, for the one place that sends or uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<Zeroizing<T>> for Secret<T> {
    fn from(value: Zeroizing<T>) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> Deref for Secret<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    [REDACTED],\n)");
        assert_eq!(s.expose(), "hunter2");
    }
}
