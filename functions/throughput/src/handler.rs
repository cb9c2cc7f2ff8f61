//! Turns one invocation into a reconciler [`Trigger`] and runs it.
//!
//! Two event shapes arrive:
//! - from EventBridge Scheduler, the schedule's target input as is: `{"action":"scale_up"}`,
//!   `{"action":"scale_down"}` or `{"action":"reconcile"}`;
//! - from an EventBridge rule, a `CloudWatch Alarm State Change` event: `detail.state.value` `ALARM`
//!   asks for provisioned throughput, `OK` and `INSUFFICIENT_DATA` re-derive the desired state from the
//!   clock (nothing changes during peak).
//!
//! A failed run is returned as a Lambda error, so the asynchronous invoke's own retries (and the next
//! `reconcile`) try again; the reconciler's idempotency makes that safe.

use lambda_runtime::LambdaEvent;
use mangaassist_core::capacity::{Outcome, Reconciler, ThroughputControl, ThroughputStateStore, Trigger};
use mangaassist_core::clock::Clock;
use mangaassist_core::error::chain;
use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

/// An event this function does not understand.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event is neither a schedule payload nor a CloudWatch alarm state change: {0}")]
    BadEvent(String),
    #[error("unknown action {0:?}; expected scale_up, scale_down or reconcile")]
    UnknownAction(String),
}

impl EventError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadEvent(_) => "bad_event",
            Self::UnknownAction(_) => "unknown_action",
        }
    }
}

/// The EventBridge Scheduler target input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scheduled {
    action: String,
}

/// The parts of a `CloudWatch Alarm State Change` event this function reads.
#[derive(Debug, Deserialize)]
struct AlarmEvent {
    source: String,
    #[serde(rename = "detail-type")]
    detail_type: String,
    detail: AlarmDetail,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmDetail {
    alarm_name: String,
    state: AlarmState,
}

#[derive(Debug, Deserialize)]
struct AlarmState {
    value: String,
}

/// Reads the trigger out of an event.
pub fn parse_trigger(event: &Value) -> Result<Trigger, EventError> {
    if event.get("action").is_some() {
        let s: Scheduled = serde_json::from_value(event.clone()).map_err(|e| EventError::BadEvent(e.to_string()))?;
        return match s.action.as_str() {
            "scale_up" => Ok(Trigger::ScaleUp),
            "scale_down" => Ok(Trigger::ScaleDown),
            "reconcile" => Ok(Trigger::Reconcile),
            _ => Err(EventError::UnknownAction(s.action)),
        };
    }
    let a: AlarmEvent = serde_json::from_value(event.clone()).map_err(|e| EventError::BadEvent(e.to_string()))?;
    if a.source != "aws.cloudwatch" || a.detail_type != "CloudWatch Alarm State Change" {
        return Err(EventError::BadEvent(format!("{} / {}", a.source, a.detail_type)));
    }
    let firing = a.detail.state.value == "ALARM";
    tracing::info!(alarm = a.detail.alarm_name, state = a.detail.state.value, "alarm state change");
    Ok(if firing { Trigger::AlarmFiring } else { Trigger::AlarmCleared })
}

/// Handles one invocation.
pub async fn handle<P, S, C>(
    reconciler: &Reconciler<P, S, C>,
    event: LambdaEvent<Value>,
) -> Result<Outcome, lambda_runtime::Error>
where
    P: ThroughputControl,
    S: ThroughputStateStore,
    C: Clock,
{
    let (payload, ctx) = event.into_parts();
    let trigger = match parse_trigger(&payload) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "event rejected");
            return Err(e.into());
        }
    };
    let span = tracing::info_span!("throughput", ?trigger, request_id = %ctx.request_id);
    async move {
        match reconciler.run(trigger).await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                tracing::error!(code = e.code(), retryable = e.is_retryable(), error = %chain(&e), "reconcile failed");
                Err(e.into())
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Value {
        let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn each_sample_event_names_its_trigger() {
        assert_eq!(parse_trigger(&event("schedule-scale-up.json")).unwrap(), Trigger::ScaleUp);
        assert_eq!(parse_trigger(&event("schedule-scale-down.json")).unwrap(), Trigger::ScaleDown);
        assert_eq!(parse_trigger(&event("schedule-reconcile.json")).unwrap(), Trigger::Reconcile);
        assert_eq!(parse_trigger(&event("alarm-scale-up.json")).unwrap(), Trigger::AlarmFiring);
    }

    #[test]
    fn an_alarm_returning_to_ok_clears() {
        let mut ev = event("alarm-scale-up.json");
        ev["detail"]["state"]["value"] = "OK".into();
        assert_eq!(parse_trigger(&ev).unwrap(), Trigger::AlarmCleared);
    }

    #[test]
    fn unknown_events_are_rejected_with_a_code() {
        assert_eq!(parse_trigger(&serde_json::json!({"action": "buy"})).unwrap_err().code(), "unknown_action");
        assert_eq!(parse_trigger(&serde_json::json!({"hello": 1})).unwrap_err().code(), "bad_event");
        let mut ev = event("alarm-scale-up.json");
        ev["source"] = "aws.ec2".into();
        assert_eq!(parse_trigger(&ev).unwrap_err().code(), "bad_event");
    }
}
