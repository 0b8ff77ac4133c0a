//! The boxed future the object-safe traits return (key backends, watermark stores, token sources).

use std::future::Future;
use std::pin::Pin;

/// A heap-allocated, sendable future borrowing for `'a`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
