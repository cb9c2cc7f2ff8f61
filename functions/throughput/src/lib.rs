//! The throughput Lambda: converges peak capacity (the priority tier; Bedrock provisioned throughput where the
//! Region sells it) to the desired state set by the EventBridge Scheduler (`scale_up` 09:00, `scale_down`
//! 23:00, `reconcile` every 5 minutes, Asia/Tokyo) and by the first-token-latency alarm. `main.rs` is wiring; [`handler`] turns an event into a
//! [`mangaassist_core::capacity::Trigger`] and runs the reconciler; [`config`] is read once.

pub mod config;
pub mod handler;
