//! The peak-capacity reconciler: decides whether peak capacity is wanted (the desired state), what that
//! means where the stack runs (the [`plan`]: the priority tier, and Bedrock provisioned throughput where the
//! Region sells it), and converges what exists (the actual state) to it, idempotently.
//!
//! # The plan
//! With [`PeakPlan::Priority`] nothing is ever bought: the record's `priority` flag is set at peak and the chat
//! turn sends the priority tier to the models that offer it. With [`PeakPlan::Provisioned`] the first pass asks
//! the control plane whether the Region sells provisioned throughput for the configured model
//! ([`ThroughputControl::provisioned_offer`]) and records the answer ([`PlanCheck`], keyed by model and
//! Region, asked again only when either changes). Not sold: one error log line carrying
//! [`UNSUPPORTED_MARKER`] (the stack's metric filter makes it one alarm), written once, after the state that
//! records it is saved; from then on the pass buys nothing, deletes anything an earlier configuration bought,
//! and the peak runs on the priority tier; no pass fails for it. Sold: the convergence below.
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
//! One pass: load the `CONFIG/THROUGHPUT` state, look for the stack's provisioned throughputs (by the stored
//! ARNs and by its two names), then create, delete or just record what was found. Nothing is ever bought twice: an
//! existing one is found first, and `CreateProvisionedModelThroughput` carries a client token derived from
//! the name, the JST date and the state version the decision was made on, so a retried or concurrent
//! invocation that decided on the same state sends the same token. A `Failed` one is reported (log and
//! `last_error`) on the pass that sees it, and deleted and bought again on the next pass.
//!
//! # Changing the model units
//! Bedrock cannot change the model units of an existing provisioned throughput (`UpdateProvisionedModelThroughput`
//! changes only its name or, for a custom model, its model). So when `model_units` differs from what exists,
//! the reconciler buys a replacement of the new size under the stack's second name ([`ThroughputSpec::slots`]),
//! keeps routing to the old one while the replacement is `Creating` (recorded as `replacement_*`), routes to the
//! replacement once it is `InService`, and only then deletes the old one. Both are billed for that window, on
//! purpose; nothing else is ever bought twice: at most one purchase per name, one name per size, and a
//! purchase of a size that is no longer wanted and serves no traffic is deleted before anything is bought.
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

use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::error::chain;

/// How long a desired state set by an alarm survives `reconcile`.
pub const ALARM_HOLD_MS: u64 = 3_600_000;
/// How often a pass that lost the optimistic lock is redone.
pub const MAX_STATE_RETRIES: u32 = 3;

mod jst;
mod model;
pub mod plan;

pub use crate::clock::JstTime;
pub use jst::{PEAK_END_SECS, PEAK_START_SECS, is_peak};
pub use model::*;
pub use plan::{Capacity, Offer, PeakPlan, PlanCheck, PlanConfig, UNSUPPORTED_MARKER, peak_capacity};

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
    /// What the peak switches on, and the Region it is checked in ([`PlanConfig::default`]: provisioned
    /// throughput, checked with the control plane only).
    pub plan: PlanConfig,
}

impl<P: ThroughputControl, S: ThroughputStateStore, C: Clock> Reconciler<P, S, C> {
    pub fn new(control: P, store: S, clock: C, spec: ThroughputSpec) -> Self {
        Self { control, store, clock, spec, plan: PlanConfig::default() }
    }

    /// The same reconciler with the stack's plan.
    #[must_use]
    pub fn with_plan(self, plan: PlanConfig) -> Self {
        Self { plan, ..self }
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
                tracing::error!(code = e.code(), error = %chain(e), "converging peak capacity failed");
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
                self.announce_unsupported(&current, &next);
            }
            result?;
            tracing::info!(
                desired = next.desired.as_str(),
                plan = self.plan.plan.as_str(),
                priority = next.priority,
                status = next.status.as_str(),
                arn = next.arn.as_deref().unwrap_or(""),
                ?actions,
                "peak capacity reconciled"
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
        // The priority tier is the peak's under every plan (the chat sends it only where provisioned throughput
        // does not serve and the model offers it).
        next.priority = next.desired == Desired::Provisioned;
        let buys = self.provisioned_sold(current, next, now).await;
        let ours = self.observe(current).await?;
        match next.desired {
            Desired::Provisioned if buys => self.provide(&ours, current, next, actions, now).await,
            Desired::OnDemand | Desired::Provisioned => self.release(&ours, current, next, actions, now).await,
        }
    }

    /// Whether this pass may buy: the plan buys, and the Region sells the model (the recorded check, else the
    /// control plane's answer, recorded; when the control plane cannot say, the documented table for a known
    /// Region, else yes: the purchase itself will tell).
    async fn provisioned_sold(&self, current: &ThroughputState, next: &mut ThroughputState, now: u64) -> bool {
        if !self.plan.plan.buys() {
            next.plan_check = None;
            return false;
        }
        let (model, region) = (self.spec.model_id.as_str(), self.plan.region.as_str());
        let key = plan::check_key(model, region);
        if let Some(check) = current.plan_check.as_ref().filter(|c| c.key == key) {
            return check.sold;
        }
        let documented = if region.is_empty() { None } else { plan::documented_provisioned(model, region) };
        let offer = match self.control.provisioned_offer(model).await {
            Ok(offer) => offer,
            Err(e) => {
                tracing::warn!(model, region, code = e.code(), error = %chain(&e), "could not ask what the Region sells; asking again next pass");
                return documented.unwrap_or(true);
            }
        };
        let (sold, detail) = match offer {
            Offer::Unknown => return documented.unwrap_or(true),
            Offer::Sold => (true, String::new()),
            Offer::NotSold { reason, sold_here } => {
                let here = if sold_here.is_empty() { "none".to_owned() } else { sold_here.join(", ") };
                (false, format!("{reason}; sold here: {here}"))
            }
        };
        if documented.is_some_and(|d| d != sold) {
            tracing::warn!(
                model,
                region,
                sold,
                "the control plane and the documented table disagree; following the control plane"
            );
        }
        next.plan_check = Some(PlanCheck { key, sold, checked_at_ms: now, detail });
        sold
    }

    /// The one log line of an unsupported plan, written by the pass whose saved state first records it.
    fn announce_unsupported(&self, current: &ThroughputState, saved: &ThroughputState) {
        let Some(check) = saved.plan_check.as_ref().filter(|c| !c.sold) else { return };
        if current.plan_check.as_ref().is_some_and(|c| c.key == check.key) {
            return;
        }
        tracing::error!(
            marker = UNSUPPORTED_MARKER,
            model = self.spec.model_id,
            region = self.plan.region,
            detail = check.detail,
            "{UNSUPPORTED_MARKER}: provisioned throughput is not sold for this model in this Region; nothing will be \
             bought, and at peak the priority tier serves the models that offer it"
        );
    }

    /// Off-peak: delete everything, except what a commitment term keeps (still routed to: paid either way).
    async fn release(
        &self,
        ours: &[ProvisionedThroughput],
        current: &ThroughputState,
        next: &mut ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<(), ControlError> {
        let mut kept: Option<&ProvisionedThroughput> = None;
        for pt in ours {
            if let Some(ends) = committed_until(pt, current, now) {
                let ends_jst = JstTime::from_unix_ms(ends).date_compact();
                tracing::warn!(arn = %pt.arn, ends_ms = ends, ends_jst, "off-peak, but the commitment term has not ended; kept");
                actions.push(Action::KeptForCommitment(pt.arn.clone()));
                if kept.is_none_or(|k| k.status != ThroughputStatus::InService) {
                    kept = Some(pt);
                }
                continue;
            }
            // Recorded before the delete, so a delete that fails leaves the state naming what still exists.
            record(next, pt, current, now);
            self.delete(pt, actions).await?;
            record_absent(next);
        }
        clear_replacement(next);
        if let Some(pt) = kept {
            record(next, pt, current, now);
        }
        Ok(())
    }

    /// Peak: one provisioned throughput of `spec.model_units`, routed to once it is in service.
    async fn provide(
        &self,
        ours: &[ProvisionedThroughput],
        current: &ThroughputState,
        next: &mut ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<(), ControlError> {
        let wanted = self.spec.model_units;
        let fits = |pt: &&ProvisionedThroughput| pt.model_units == wanted;
        // The one of the wanted size (in service first), the one that failed, and the old size still serving.
        let fit = ours
            .iter()
            .filter(fits)
            .filter(|pt| pt.status != ThroughputStatus::Failed)
            .max_by_key(|pt| pt.status == ThroughputStatus::InService);
        let failed = ours.iter().filter(fits).find(|pt| pt.status == ThroughputStatus::Failed);
        let serving = ours.iter().find(|pt| pt.model_units != wanted && pt.status == ThroughputStatus::InService);

        if let Some(fit) = fit.filter(|pt| pt.status == ThroughputStatus::InService) {
            // The wanted size serves: route to it, then let everything else go.
            for pt in ours.iter().filter(|pt| pt.arn != fit.arn) {
                self.delete_unless_committed(pt, current, actions, now).await?;
            }
            record(next, fit, current, now);
            clear_replacement(next);
            return Ok(());
        }

        // Nothing of the wanted size serves yet. A size that serves no traffic and is no longer wanted goes now
        // (it could only be bought twice over); the old size that serves stays until the new one does.
        for pt in ours {
            let keep = fit.is_some_and(|f| f.arn == pt.arn)
                || failed.is_some_and(|f| f.arn == pt.arn)
                || serving.is_some_and(|s| s.arn == pt.arn);
            if !keep {
                self.delete_unless_committed(pt, current, actions, now).await?;
            }
        }
        if let Some(old) = serving {
            record(next, old, current, now);
        } else {
            record_absent(next);
        }
        clear_replacement(next);

        if let Some(fit) = fit {
            // Bought, not in service yet: follow it.
            record_pending(next, fit, serving.is_some(), current, now);
            return Ok(());
        }
        if let Some(failed) = failed {
            let reported = (current.arn.as_deref() == Some(&failed.arn) && current.status == ThroughputStatus::Failed)
                || (current.replacement_arn.as_deref() == Some(&failed.arn)
                    && current.replacement_status == ThroughputStatus::Failed);
            if !reported {
                // Reported on the pass that sees it (log and last_error), bought again on the next.
                record_pending(next, failed, serving.is_some(), current, now);
                return Ok(());
            }
            self.delete(failed, actions).await?;
            tracing::info!(arn = %failed.arn, "failed provisioned throughput deleted; buying again");
        }
        let in_use: Vec<&str> = ours
            .iter()
            .filter(|pt| serving.is_some_and(|s| s.arn == pt.arn) || committed_until(pt, current, now).is_some())
            .map(|pt| pt.name.as_str())
            .collect();
        let Some(name) = self.spec.slots().into_iter().find(|slot| !in_use.contains(&slot.as_str())) else {
            let why = "both names of the stack's provisioned throughput are in use".to_owned();
            return Err(ControlError::Conflict(why.clone(), why.into()));
        };
        let pt = self.buy(&name, current, actions, now).await?;
        record_pending(next, &pt, serving.is_some(), current, now);
        Ok(())
    }

    /// The stack's provisioned throughputs: by the stored ARNs (consistent right after a purchase), then by
    /// each of its names (a purchase whose state write was lost). A `Failed` one found by name is fetched
    /// again, since only `Get` says why it failed.
    async fn observe(&self, current: &ThroughputState) -> Result<Vec<ProvisionedThroughput>, ControlError> {
        let mut found: Vec<ProvisionedThroughput> = Vec::new();
        for arn in [&current.arn, &current.replacement_arn].into_iter().flatten() {
            if let Some(pt) = self.control.get(arn).await?
                && !found.iter().any(|f| f.arn == pt.arn)
            {
                found.push(pt);
            }
        }
        for name in self.spec.slots() {
            if found.iter().any(|f| f.name == name) {
                continue;
            }
            let Some(pt) = self.control.find_by_name(&name).await? else { continue };
            let pt = if pt.status == ThroughputStatus::Failed && pt.failure_message.is_none() {
                self.control.get(&pt.arn).await?.unwrap_or(pt)
            } else {
                pt
            };
            if !found.iter().any(|f| f.arn == pt.arn) {
                found.push(pt);
            }
        }
        Ok(found)
    }

    async fn delete(&self, pt: &ProvisionedThroughput, actions: &mut Vec<Action>) -> Result<(), ControlError> {
        self.control.delete(&pt.arn).await?;
        tracing::info!(arn = %pt.arn, units = pt.model_units, "provisioned throughput deleted");
        actions.push(Action::Deleted(pt.arn.clone()));
        Ok(())
    }

    async fn delete_unless_committed(
        &self,
        pt: &ProvisionedThroughput,
        current: &ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<(), ControlError> {
        if let Some(ends) = committed_until(pt, current, now) {
            tracing::warn!(arn = %pt.arn, ends_ms = ends, "no longer wanted, but its commitment term has not ended; kept");
            actions.push(Action::KeptForCommitment(pt.arn.clone()));
            return Ok(());
        }
        self.delete(pt, actions).await
    }

    /// Buys `spec.model_units` under `name`; returns it as the control plane reports it.
    async fn buy(
        &self,
        name: &str,
        current: &ThroughputState,
        actions: &mut Vec<Action>,
        now: u64,
    ) -> Result<ProvisionedThroughput, ControlError> {
        let token = client_token(name, now, current.version);
        let spec = ThroughputSpec { name: name.to_owned(), ..self.spec.clone() };
        let arn = self.control.create(&spec, &token).await?;
        tracing::info!(%arn, token, units = spec.model_units, "provisioned throughput bought");
        actions.push(Action::Created(arn.clone()));
        // Not visible yet (eventual consistency): it exists, the next pass will see it.
        let assumed = ProvisionedThroughput {
            arn: arn.clone(),
            name: spec.name.clone(),
            status: ThroughputStatus::Creating,
            model_units: spec.model_units,
            failure_message: None,
            commitment: spec.commitment,
            commitment_ends_ms: None,
        };
        Ok(self.control.get(&arn).await?.unwrap_or(assumed))
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

/// When the commitment term of `pt` ends, if it has not ended yet: as the control plane reports it, else as
/// recorded before for the same ARN, else the whole term counted from now (rounded up: deleting early is
/// refused and breaks the term; a day late costs a day).
fn committed_until(pt: &ProvisionedThroughput, previous: &ThroughputState, now: u64) -> Option<u64> {
    let term = pt.commitment?;
    let recorded = previous.commitment_ends_ms.filter(|_| previous.arn.as_deref() == Some(pt.arn.as_str()));
    pt.commitment_ends_ms.or(recorded).or(Some(now + term.term_ms())).filter(|ends| *ends > now)
}

/// Records what was observed as the routed-to provisioned throughput; a `Failed` one is reported here (log and
/// `last_error`), and bought again by the next pass that still finds it failed.
fn record(state: &mut ThroughputState, pt: &ProvisionedThroughput, previous: &ThroughputState, now: u64) {
    let recorded = previous.commitment_ends_ms.filter(|_| previous.arn.as_deref() == Some(pt.arn.as_str()));
    state.commitment_ends_ms = match pt.commitment {
        None => None,
        Some(term) => pt.commitment_ends_ms.or(recorded).or(Some(now + term.term_ms())),
    };
    state.arn = Some(pt.arn.clone());
    state.status = pt.status;
    state.model_units = pt.model_units;
    report_failure(state, pt);
}

/// Records a purchase that is not in service yet: as the replacement when an older size still serves, else
/// as the only one.
fn record_pending(
    state: &mut ThroughputState,
    pt: &ProvisionedThroughput,
    replacing: bool,
    previous: &ThroughputState,
    now: u64,
) {
    if !replacing {
        record(state, pt, previous, now);
        return;
    }
    state.replacement_arn = Some(pt.arn.clone());
    state.replacement_status = pt.status;
    state.replacement_units = pt.model_units;
    report_failure(state, pt);
}

fn report_failure(state: &mut ThroughputState, pt: &ProvisionedThroughput) {
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

fn clear_replacement(state: &mut ThroughputState) {
    state.replacement_arn = None;
    state.replacement_status = ThroughputStatus::NotProvisioned;
    state.replacement_units = 0;
}

/// The waits between the record's optimistic-lock retries (up to 40, 80, 160 ms), bounded by
/// [`MAX_STATE_RETRIES`].
const STATE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(40), Duration::from_millis(320));

fn backoff(attempt: u32) -> Duration {
    STATE_BACKOFF.delay(attempt.saturating_sub(1))
}

#[cfg(test)]
mod tests;
