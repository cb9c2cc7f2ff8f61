//! The provisioned-throughput reconciler: decides whether Bedrock provisioned throughput *should* exist
//! (the desired state) and converges what exists (the actual state) to it, idempotently.
//!
//! # Desired state
//! - `scale_up` (the 09:00 Asia/Tokyo schedule) and a first-token-latency alarm going to `ALARM` ask for
//!   [`Desired::Provisioned`]; `scale_down` (23:00) asks for [`Desired::OnDemand`].
//! - `reconcile` (every few minutes) re-derives the desired state from the clock: peak is
//!   09:00 <= JST time < 23:00. The one exception: a desired state set by an alarm less than
//!   [`ALARM_HOLD_MS`] ago is kept, so an off-peak latency alarm is not undone five minutes later.
//! - An alarm going back to `OK` re-derives from the clock (so it changes nothing during peak).
//!
//! # Convergence
//! One pass: load the `CONFIG/THROUGHPUT` state, look for the provisioned throughput (by the stored ARN,
//! else by name), then create, delete or just record what was found. Nothing is ever bought twice: an
//! existing one is found first, and `CreateProvisionedModelThroughput` carries a client token derived from
//! the name, the JST date and the state version the decision was made on, so a retried or concurrent
//! invocation that decided on the same state sends the same token. A `Failed` one is reported (log and
//! `last_error`) on the pass that sees it, and deleted and bought again on the next pass.
//!
//! A purchase with a commitment term (`OneMonth`, `SixMonths`) cannot be deleted before the term ends
//! (Bedrock refuses, and the term is billed anyway). The state records the term's end
//! (`commitment_ends_ms`: the control plane's `commitmentExpirationTime`, else the configured term counted
//! from the first pass that saw it), and scaling down before then keeps it
//! ([`Action::KeptForCommitment`], logged) and keeps routing to it.
//!
//! The state is written with optimistic locking (a `version` number): if another invocation wrote first,
//! the whole pass is redone on the fresh state, at most [`MAX_STATE_RETRIES`] times. Redoing is safe
//! because every step above is idempotent. The pass never waits for `Creating` to end: the periodic
//! `reconcile` follows it to `InService` or `Failed`.

use std::time::Duration;

use crate::clock::Clock;
use crate::error::chain;

/// How long a desired state set by an alarm survives `reconcile`.
pub const ALARM_HOLD_MS: u64 = 3_600_000;
/// How often a pass that lost the optimistic lock is redone.
pub const MAX_STATE_RETRIES: u32 = 3;

mod jst;
mod model;

pub use jst::{JstTime, PEAK_END_SECS, PEAK_START_SECS, is_peak};
pub use model::*;

/// The client token for a purchase decided on state `version` at `now_ms`: deterministic, so the same
/// decision retried sends the same token; different after any state change, so a purchase after a failed
/// one is not answered with the failed one. Bedrock allows `[a-zA-Z0-9]` and inner `-` only.
pub fn client_token(name: &str, now_ms: u64, version: u64) -> String {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let name = name.trim_matches('-');
    let date = JstTime::from_unix_ms(now_ms).date_compact();
    format!("{name}-{date}-v{version}").trim_start_matches('-').to_owned()
}

/// The reconciler, generic over the control plane, the state store and the clock.
pub struct Reconciler<P, S, C> {
    pub control: P,
    pub store: S,
    pub clock: C,
    pub spec: ThroughputSpec,
}

impl<P: ThroughputControl, S: ThroughputStateStore, C: Clock> Reconciler<P, S, C> {
    pub fn new(control: P, store: S, clock: C, spec: ThroughputSpec) -> Self {
        Self { control, store, clock, spec }
    }

    /// Sets the desired state from `trigger` and converges to it (see the module docs).
    ///
    /// A control-plane error is recorded in `last_error` before it is returned, so the stored state
    /// always says what went wrong last.
    pub async fn run(&self, trigger: Trigger) -> Result<Outcome, ThroughputError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.store.load().await?.unwrap_or_default();
            let now = self.clock.now_ms();
            let mut next = current.clone();
            set_desired(&mut next, trigger, now);
            let mut actions = Vec::new();
            let result = self.converge(&current, &mut next, &mut actions, now).await;
            if let Err(e) = &result {
                tracing::error!(code = e.code(), error = %chain(e), "converging provisioned throughput failed");
                next.last_error = Some(format!("{}: {}", e.code(), chain(e)));
            }
            if next.same_content(&current) {
                next = current;
            } else {
                next.version = current.version + 1;
                next.updated_at_ms = now;
                if self.store.save(&next, current.version).await? == SaveOutcome::Conflict {
                    if attempts > MAX_STATE_RETRIES {
                        return Err(ThroughputError::Contended(attempts));
                    }
                    tracing::info!(attempts, "throughput state changed underneath; redoing the pass");
                    tokio::time::sleep(backoff(attempts)).await;
                    continue;
                }
            }
            result?;
            tracing::info!(
                desired = next.desired.as_str(),
                status = next.status.as_str(),
                arn = next.arn.as_deref().unwrap_or(""),
                ?actions,
                "provisioned throughput reconciled"
            );
            return Ok(Outcome { trigger, state: next, actions, attempts });
        }
    }

    async fn converge(
        &self,
        current: &ThroughputState,
        next: &mut ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<(), ControlError> {
        next.last_error = None;
        let observed = self.observe(current).await?;
        let Some(pt) = observed else {
            record_absent(next);
            if next.desired == Desired::Provisioned {
                self.buy(current, next, actions, now).await?;
            }
            return Ok(());
        };
        if next.desired == Desired::OnDemand {
            record(next, &pt, current, now);
            if let Some(ends) = next.commitment_ends_ms.filter(|ends| *ends > now) {
                let ends_jst = JstTime::from_unix_ms(ends).date_compact();
                tracing::warn!(arn = %pt.arn, ends_ms = ends, ends_jst, "off-peak, but the commitment term has not ended; kept");
                actions.push(Action::KeptForCommitment(pt.arn));
                return Ok(());
            }
            self.control.delete(&pt.arn).await?;
            tracing::info!(arn = %pt.arn, "provisioned throughput deleted");
            actions.push(Action::Deleted(pt.arn));
            record_absent(next);
            return Ok(());
        }
        let already_reported = pt.status == ThroughputStatus::Failed
            && current.status == ThroughputStatus::Failed
            && current.arn.as_deref() == Some(&pt.arn);
        if !already_reported {
            record(next, &pt, current, now);
            return Ok(());
        }
        self.control.delete(&pt.arn).await?;
        tracing::info!(arn = %pt.arn, "failed provisioned throughput deleted; buying again");
        actions.push(Action::Deleted(pt.arn));
        record_absent(next);
        self.buy(current, next, actions, now).await
    }

    /// The provisioned throughput this state refers to: by stored ARN first, else by name. A `Failed`
    /// one found by name is fetched again, since only `Get` says why it failed.
    async fn observe(&self, current: &ThroughputState) -> Result<Option<ProvisionedThroughput>, ControlError> {
        if let Some(arn) = &current.arn
            && let Some(pt) = self.control.get(arn).await?
        {
            return Ok(Some(pt));
        }
        let Some(found) = self.control.find_by_name(&self.spec.name).await? else { return Ok(None) };
        if found.status == ThroughputStatus::Failed && found.failure_message.is_none() {
            return Ok(Some(self.control.get(&found.arn).await?.unwrap_or(found)));
        }
        Ok(Some(found))
    }

    async fn buy(
        &self,
        current: &ThroughputState,
        next: &mut ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<(), ControlError> {
        let token = client_token(&self.spec.name, now, current.version);
        let arn = self.control.create(&self.spec, &token).await?;
        tracing::info!(%arn, token, units = self.spec.model_units, "provisioned throughput bought");
        actions.push(Action::Created(arn.clone()));
        match self.control.get(&arn).await? {
            Some(pt) => record(next, &pt, current, now),
            None => {
                // Not visible yet (eventual consistency): it exists, the next pass will see it.
                next.arn = Some(arn);
                next.status = ThroughputStatus::Creating;
                next.model_units = self.spec.model_units;
                next.commitment_ends_ms = self.spec.commitment.map(|c| now + c.term_ms());
            }
        }
        Ok(())
    }
}

fn set_desired(state: &mut ThroughputState, trigger: Trigger, now: u64) {
    let (desired, source) = match trigger {
        Trigger::ScaleUp => (Desired::Provisioned, DesiredSource::Schedule),
        Trigger::ScaleDown => (Desired::OnDemand, DesiredSource::Schedule),
        Trigger::AlarmFiring => (Desired::Provisioned, DesiredSource::Alarm),
        Trigger::AlarmCleared => (Desired::from_clock(now), DesiredSource::Clock),
        Trigger::Reconcile => {
            let held =
                state.desired_source == DesiredSource::Alarm && now.saturating_sub(state.desired_at_ms) < ALARM_HOLD_MS;
            if held {
                return;
            }
            (Desired::from_clock(now), DesiredSource::Clock)
        }
    };
    // An alarm firing again restarts its hold.
    if state.desired != desired || state.desired_source != source || source == DesiredSource::Alarm {
        state.desired = desired;
        state.desired_source = source;
        state.desired_at_ms = now;
    }
}

/// Records what was observed; a `Failed` one is reported here (log and `last_error`), and bought again by
/// the next pass that still finds it failed. The end of a commitment term: as the control plane reports
/// it, else as recorded before for the same ARN, else the whole term counted from now (rounded up).
fn record(state: &mut ThroughputState, pt: &ProvisionedThroughput, previous: &ThroughputState, now: u64) {
    let recorded = previous.commitment_ends_ms.filter(|_| previous.arn.as_deref() == Some(pt.arn.as_str()));
    state.commitment_ends_ms = match pt.commitment {
        None => None,
        Some(term) => pt.commitment_ends_ms.or(recorded).or(Some(now + term.term_ms())),
    };
    state.arn = Some(pt.arn.clone());
    state.status = pt.status;
    state.model_units = pt.model_units;
    if pt.status == ThroughputStatus::Failed {
        let why = pt.failure_message.as_deref().unwrap_or("no reason given");
        tracing::error!(arn = %pt.arn, reason = why, "provisioned throughput failed; buying again on the next pass");
        state.last_error = Some(format!("provisioned throughput {} failed: {why}", pt.arn));
    }
}

fn record_absent(state: &mut ThroughputState) {
    state.arn = None;
    state.commitment_ends_ms = None;
    state.status = ThroughputStatus::NotProvisioned;
    state.model_units = 0;
}

/// 20-40 ms, 40-80 ms, 80-160 ms: jittered, bounded by [`MAX_STATE_RETRIES`].
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.saturating_sub(1).min(4);
    Duration::from_millis(base + fastrand::u64(0..=base))
}

#[cfg(test)]
mod tests;
