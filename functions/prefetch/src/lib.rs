//! The prefetch Lambda: invoked asynchronously by the chat function after each turn with a
//! [`mangaassist_core::ahead::prefetch::PrefetchJob`], it predicts the shopper's next intent and fills ElastiCache
//! with the context that follow-up needs. `main.rs` is wiring; [`handler`] parses the job and runs the
//! prefetcher; [`config`] is read once.

pub mod config;
pub mod handler;
