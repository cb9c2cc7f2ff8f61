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
//! The state is written with optimistic locking (a `version` number): if another invocation wrote first,
//! the whole pass is redone on the fresh state, at most [`MAX_STATE_RETRIES`] times. Redoing is safe
//! because every step above is idempotent. The pass never waits for `Creating` to end: the periodic
//! `reconcile` follows it to `InService` or `Failed`.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::error::{BoxError, StoreError, chain};

/// Japan has no daylight saving time: JST is always UTC+9.
const JST_OFFSET_SECS: u64 = 9 * 3600;
/// Peak starts at 09:00 JST (inclusive).
pub const PEAK_START_SECS: u32 = 9 * 3600;
/// Peak ends at 23:00 JST (exclusive).
pub const PEAK_END_SECS: u32 = 23 * 3600;
/// How long a desired state set by an alarm survives `reconcile`.
pub const ALARM_HOLD_MS: u64 = 3_600_000;
/// How often a pass that lost the optimistic lock is redone.
pub const MAX_STATE_RETRIES: u32 = 3;

/// A wall-clock reading in Asia/Tokyo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JstTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    /// Seconds since local midnight.
    pub seconds_of_day: u32,
}

impl JstTime {
    pub fn from_unix_ms(ms: u64) -> Self {
        let secs = ms / 1000 + JST_OFFSET_SECS;
        let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
        let (year, month, day) = civil_from_days(days);
        Self { year, month, day, seconds_of_day: u32::try_from(secs % 86_400).unwrap_or(0) }
    }

    /// 09:00 <= time < 23:00.
    pub fn is_peak(&self) -> bool {
        (PEAK_START_SECS..PEAK_END_SECS).contains(&self.seconds_of_day)
    }

    /// `YYYYMMDD`.
    pub fn date_compact(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }
}

/// Is `now_ms` (Unix ms) inside the JST peak window?
pub fn is_peak(now_ms: u64) -> bool {
    JstTime::from_unix_ms(now_ms).is_peak()
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar (Hinnant's algorithm:
/// count in 400-year eras of 146,097 days, with years starting on 1 March so leap days fall last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

/// Which route the chat traffic should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Desired {
    Provisioned,
    OnDemand,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioned => "Provisioned",
            Self::OnDemand => "OnDemand",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Provisioned" => Some(Self::Provisioned),
            "OnDemand" => Some(Self::OnDemand),
            _ => None,
        }
    }

    fn from_clock(now_ms: u64) -> Self {
        if is_peak(now_ms) { Self::Provisioned } else { Self::OnDemand }
    }
}

/// Who set the desired state: decides whether `reconcile` may override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DesiredSource {
    /// The 09:00 / 23:00 schedules.
    Schedule,
    /// The first-token-latency alarm.
    Alarm,
    /// `reconcile`, from the JST clock.
    Clock,
}

impl DesiredSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "Schedule",
            Self::Alarm => "Alarm",
            Self::Clock => "Clock",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Schedule" => Some(Self::Schedule),
            "Alarm" => Some(Self::Alarm),
            "Clock" => Some(Self::Clock),
            _ => None,
        }
    }
}

/// What invoked the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Trigger {
    ScaleUp,
    ScaleDown,
    Reconcile,
    /// The latency alarm went to `ALARM`.
    AlarmFiring,
    /// The latency alarm went to `OK` (or `INSUFFICIENT_DATA`).
    AlarmCleared,
}

/// The lifecycle of one provisioned throughput, plus `NotProvisioned` for "none exists".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ThroughputStatus {
    NotProvisioned,
    Creating,
    InService,
    /// Being changed, or a status this code does not know: wait for it.
    Updating,
    Failed,
}

impl ThroughputStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotProvisioned => "NotProvisioned",
            Self::Creating => "Creating",
            Self::InService => "InService",
            Self::Updating => "Updating",
            Self::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "NotProvisioned" => Some(Self::NotProvisioned),
            "Creating" => Some(Self::Creating),
            "InService" => Some(Self::InService),
            "Updating" => Some(Self::Updating),
            "Failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A commitment term; none means no commitment (billed hourly, deletable at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Commitment {
    OneMonth,
    SixMonths,
}

impl Commitment {
    /// The Bedrock API's name for the term.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneMonth => "OneMonth",
            Self::SixMonths => "SixMonths",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "OneMonth" => Some(Self::OneMonth),
            "SixMonths" => Some(Self::SixMonths),
            _ => None,
        }
    }
}

/// What to buy when provisioned throughput is desired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughputSpec {
    /// The provisioned throughput's name: how an existing one is found again.
    pub name: String,
    pub model_id: String,
    pub model_units: u32,
    pub commitment: Option<Commitment>,
}

/// One provisioned throughput as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedThroughput {
    pub arn: String,
    pub name: String,
    pub status: ThroughputStatus,
    pub model_units: u32,
    /// Why it failed, when `status` is `Failed` (only `GetProvisionedModelThroughput` says).
    pub failure_message: Option<String>,
}

/// What went wrong talking to the Bedrock control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the Bedrock control plane is throttling requests")]
    Throttled(#[source] BoxError),
    #[error("the Bedrock control plane is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the Bedrock control plane rejected the request: {0}")]
    Rejected(String, #[source] BoxError),
    /// The provisioned throughput is in a state that does not allow the change yet.
    #[error("the provisioned throughput is busy: {0}")]
    Conflict(String, #[source] BoxError),
    #[error("Bedrock control-plane call failed")]
    Other(#[source] BoxError),
}

impl ControlError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Throttled(_) => "control_throttled",
            Self::Unavailable(_) => "control_unavailable",
            Self::Rejected(..) => "control_rejected",
            Self::Conflict(..) => "control_conflict",
            Self::Other(_) => "control_error",
        }
    }

    /// Would the same call, made again later, plausibly succeed?
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected(..))
    }
}

/// Why a reconcile pass did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    #[error("the throughput state could not be read or written")]
    State(#[from] StoreError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the throughput state kept changing underneath; gave up after {0} attempts")]
    Contended(u32),
}

impl ThroughputError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::State(_) => "state_error",
            Self::Control(e) => e.code(),
            Self::Contended(_) => "state_contended",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Control(e) => e.is_retryable(),
            Self::State(_) | Self::Contended(_) => true,
        }
    }
}

/// The Bedrock provisioned-throughput control plane.
pub trait ThroughputControl: Send + Sync {
    /// The provisioned throughput with exactly this name, if any.
    fn find_by_name(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ProvisionedThroughput>, ControlError>> + Send;
    /// One provisioned throughput by ARN (or name); `None` when it does not exist.
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<ProvisionedThroughput>, ControlError>> + Send;
    /// Buys one; returns its ARN. The same `client_token` with the same spec buys nothing new.
    fn create(
        &self,
        spec: &ThroughputSpec,
        client_token: &str,
    ) -> impl Future<Output = Result<String, ControlError>> + Send;
    /// Deletes one; deleting one that does not exist succeeds.
    fn delete(&self, id: &str) -> impl Future<Output = Result<(), ControlError>> + Send;
}

/// The `CONFIG/THROUGHPUT` record: desired and actual state. The chat function routes from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThroughputState {
    pub desired: Desired,
    pub desired_source: DesiredSource,
    /// When `desired` was last set (Unix ms): an alarm's hold runs from here.
    pub desired_at_ms: u64,
    pub arn: Option<String>,
    pub status: ThroughputStatus,
    pub model_units: u32,
    pub last_error: Option<String>,
    pub updated_at_ms: u64,
    /// Optimistic-lock version: 0 before the first write, +1 per write.
    pub version: u64,
}

impl Default for ThroughputState {
    fn default() -> Self {
        Self {
            desired: Desired::OnDemand,
            desired_source: DesiredSource::Clock,
            desired_at_ms: 0,
            arn: None,
            status: ThroughputStatus::NotProvisioned,
            model_units: 0,
            last_error: None,
            updated_at_ms: 0,
            version: 0,
        }
    }
}

impl ThroughputState {
    /// The model id the chat function should send to: the provisioned ARN, only while it is `InService`.
    /// `None` means on-demand.
    pub fn route(&self) -> Option<&str> {
        match self.status {
            ThroughputStatus::InService => self.arn.as_deref(),
            _ => None,
        }
    }

    /// Equal apart from the write bookkeeping (`updated_at_ms`, `version`).
    fn same_content(&self, other: &Self) -> bool {
        let strip = |s: &Self| Self { updated_at_ms: 0, version: 0, ..s.clone() };
        strip(self) == strip(other)
    }
}

/// Given the stored state, where chat traffic should go (see [`ThroughputState::route`]).
pub fn provisioned_route(state: Option<&ThroughputState>) -> Option<&str> {
    state.and_then(ThroughputState::route)
}

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved,
    /// The stored version was not the expected one: another invocation wrote first.
    Conflict,
}

/// Where [`ThroughputState`] lives.
pub trait ThroughputStateStore: Send + Sync {
    /// The stored state; `None` before the first write.
    fn load(&self) -> impl Future<Output = Result<Option<ThroughputState>, StoreError>> + Send;
    /// Writes `state` as is, only if the stored version is `expected_version` (0: nothing stored yet).
    fn save(
        &self,
        state: &ThroughputState,
        expected_version: u64,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;
}

/// A change made to the control plane during a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "arn", rename_all = "snake_case")]
pub enum Action {
    Created(String),
    Deleted(String),
}

/// What a run did and left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub trigger: Trigger,
    pub state: ThroughputState,
    pub actions: Vec<Action>,
    /// Passes made (more than one when the optimistic lock was lost).
    pub attempts: u32,
}

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
            record(next, &pt);
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
            Some(pt) => record(next, &pt),
            None => {
                // Not visible yet (eventual consistency): it exists, the next pass will see it.
                next.arn = Some(arn);
                next.status = ThroughputStatus::Creating;
                next.model_units = self.spec.model_units;
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
/// the next pass that still finds it failed.
fn record(state: &mut ThroughputState, pt: &ProvisionedThroughput) {
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
    state.status = ThroughputStatus::NotProvisioned;
    state.model_units = 0;
}

/// 20-40 ms, 40-80 ms, 80-160 ms: jittered, bounded by [`MAX_STATE_RETRIES`].
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.saturating_sub(1).min(4);
    Duration::from_millis(base + fastrand::u64(0..=base))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use super::*;

    // 2026-11-28 in JST, as Unix ms.
    const JST_0859: u64 = 1_795_823_940_000;
    const JST_0900: u64 = 1_795_824_000_000;
    const JST_2259: u64 = 1_795_874_340_000;
    const JST_2300: u64 = 1_795_874_400_000;
    const MINUTE: u64 = 60_000;

    struct FixedClock(AtomicU64);

    impl Clock for FixedClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[derive(Default)]
    struct Fake {
        pts: Vec<ProvisionedThroughput>,
        tokens: HashMap<String, String>,
        creations: u32,
        deletions: u32,
        fail_next: bool,
    }

    #[derive(Default)]
    struct FakeControl(Mutex<Fake>);

    impl FakeControl {
        fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
            f(&mut self.0.lock().unwrap())
        }

        fn set_all(&self, status: ThroughputStatus) {
            self.with(|f| f.pts.iter_mut().for_each(|p| p.status = status));
        }
    }

    impl ThroughputControl for FakeControl {
        async fn find_by_name(&self, name: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
            // List summaries carry no failure message.
            Ok(self
                .with(|f| f.pts.iter().find(|p| p.name == name).cloned())
                .map(|p| ProvisionedThroughput { failure_message: None, ..p }))
        }

        async fn get(&self, id: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
            Ok(self.with(|f| f.pts.iter().find(|p| p.arn == id || p.name == id).cloned()))
        }

        async fn create(&self, spec: &ThroughputSpec, token: &str) -> Result<String, ControlError> {
            self.with(|f| {
                if let Some(arn) = f.tokens.get(token) {
                    return Ok(arn.clone());
                }
                if f.pts.iter().any(|p| p.name == spec.name) {
                    return Err(ControlError::Rejected("name in use".into(), "name in use".into()));
                }
                f.creations += 1;
                let arn = format!("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt{}", f.creations);
                let failed = std::mem::take(&mut f.fail_next);
                f.pts.push(ProvisionedThroughput {
                    arn: arn.clone(),
                    name: spec.name.clone(),
                    status: if failed { ThroughputStatus::Failed } else { ThroughputStatus::Creating },
                    model_units: spec.model_units,
                    failure_message: failed.then(|| "insufficient capacity".to_owned()),
                });
                f.tokens.insert(token.to_owned(), arn.clone());
                Ok(arn)
            })
        }

        async fn delete(&self, id: &str) -> Result<(), ControlError> {
            self.with(|f| {
                let before = f.pts.len();
                f.pts.retain(|p| p.arn != id && p.name != id);
                if f.pts.len() < before {
                    f.deletions += 1;
                }
            });
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeStore {
        state: Mutex<Option<ThroughputState>>,
        /// Conflicts to report: each one also bumps the stored version, as a competing writer would.
        conflicts: AtomicU32,
        saves: AtomicU32,
    }

    impl ThroughputStateStore for FakeStore {
        async fn load(&self) -> Result<Option<ThroughputState>, StoreError> {
            Ok(self.state.lock().unwrap().clone())
        }

        async fn save(&self, state: &ThroughputState, expected: u64) -> Result<SaveOutcome, StoreError> {
            let mut stored = self.state.lock().unwrap();
            if self.conflicts.load(Ordering::SeqCst) > 0 {
                self.conflicts.fetch_sub(1, Ordering::SeqCst);
                let mut other = stored.clone().unwrap_or_default();
                other.version += 1;
                *stored = Some(other);
                return Ok(SaveOutcome::Conflict);
            }
            if stored.as_ref().map_or(0, |s| s.version) != expected {
                return Ok(SaveOutcome::Conflict);
            }
            self.saves.fetch_add(1, Ordering::SeqCst);
            *stored = Some(state.clone());
            Ok(SaveOutcome::Saved)
        }
    }

    type Rec = Reconciler<FakeControl, FakeStore, FixedClock>;

    fn reconciler(now: u64) -> Rec {
        let spec = ThroughputSpec {
            name: "mangaassist-peak".into(),
            model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
            model_units: 1,
            commitment: None,
        };
        Reconciler::new(FakeControl::default(), FakeStore::default(), FixedClock(AtomicU64::new(now)), spec)
    }

    fn at(r: &Rec, now: u64) {
        r.clock.0.store(now, Ordering::SeqCst);
    }

    #[test]
    fn peak_starts_at_nine_and_ends_before_eleven_pm_jst() {
        assert!(!is_peak(JST_0859), "08:59 is off-peak");
        assert!(is_peak(JST_0900), "09:00 is peak");
        assert!(is_peak(JST_2259), "22:59 is peak");
        assert!(!is_peak(JST_2300), "23:00 is off-peak");
    }

    #[test]
    fn the_jst_date_rolls_over_at_midnight_tokyo_time() {
        assert_eq!(JstTime::from_unix_ms(JST_0859).date_compact(), "20261128");
        // 2026-11-27T23:59Z is already the 28th in Tokyo; 14:59Z on the 28th is still the 28th.
        assert_eq!(JstTime::from_unix_ms(JST_0900 - 9 * 3_600_000 - MINUTE).date_compact(), "20261127");
        assert_eq!(JstTime::from_unix_ms(0).date_compact(), "19700101");
        assert_eq!(JstTime::from_unix_ms(951_782_400_000).date_compact(), "20000229");
    }

    #[tokio::test]
    async fn reconcile_follows_the_clock_at_the_peak_boundaries() {
        for (now, want) in [
            (JST_0859, Desired::OnDemand),
            (JST_0900, Desired::Provisioned),
            (JST_2259, Desired::Provisioned),
            (JST_2300, Desired::OnDemand),
        ] {
            let r = reconciler(now);
            let out = r.run(Trigger::Reconcile).await.unwrap();
            assert_eq!(out.state.desired, want, "at {now}");
        }
    }

    #[tokio::test]
    async fn scaling_up_twice_buys_once() {
        let r = reconciler(JST_0900);
        let first = r.run(Trigger::ScaleUp).await.unwrap();
        assert_eq!(first.actions.len(), 1);
        assert_eq!(first.state.status, ThroughputStatus::Creating);
        let second = r.run(Trigger::ScaleUp).await.unwrap();
        assert!(second.actions.is_empty(), "{:?}", second.actions);
        assert_eq!(r.control.with(|f| f.creations), 1);
        assert_eq!(second.state.arn, first.state.arn);
    }

    #[tokio::test]
    async fn a_retried_purchase_decided_on_the_same_state_reuses_the_client_token() {
        let r = reconciler(JST_0900);
        let token = client_token(&r.spec.name, JST_0900, 0);
        assert_eq!(token, "mangaassist-peak-20261128-v0");
        r.control.create(&r.spec, &token).await.unwrap();
        // The first invocation bought, then died before writing state; the retry finds it and buys nothing.
        let out = r.run(Trigger::ScaleUp).await.unwrap();
        assert!(out.actions.is_empty());
        assert_eq!(r.control.with(|f| f.creations), 1);
        assert!(out.state.arn.is_some());
    }

    #[tokio::test]
    async fn scaling_down_with_nothing_provisioned_is_a_no_op() {
        let r = reconciler(JST_2300);
        let out = r.run(Trigger::ScaleDown).await.unwrap();
        assert!(out.actions.is_empty());
        assert_eq!(out.state.status, ThroughputStatus::NotProvisioned);
        assert_eq!(r.control.with(|f| (f.creations, f.deletions)), (0, 0));
        // Nothing changed the second time, so nothing is written.
        let saves = r.store.saves.load(Ordering::SeqCst);
        r.run(Trigger::ScaleDown).await.unwrap();
        assert_eq!(r.store.saves.load(Ordering::SeqCst), saves);
    }

    #[tokio::test]
    async fn scaling_down_deletes_what_scaling_up_bought() {
        let r = reconciler(JST_0900);
        let up = r.run(Trigger::ScaleUp).await.unwrap();
        at(&r, JST_2300);
        let down = r.run(Trigger::ScaleDown).await.unwrap();
        assert_eq!(down.actions, vec![Action::Deleted(up.state.arn.unwrap())]);
        assert_eq!(down.state.route(), None);
        assert!(r.control.with(|f| f.pts.is_empty()));
    }

    #[tokio::test]
    async fn a_failed_creation_is_reported_then_bought_again_on_the_next_reconcile() {
        let r = reconciler(JST_0900);
        r.control.with(|f| f.fail_next = true);
        let first = r.run(Trigger::ScaleUp).await.unwrap();
        assert_eq!(first.state.status, ThroughputStatus::Failed);
        let err = first.state.last_error.clone().unwrap();
        assert!(err.contains("insufficient capacity"), "{err}");
        assert_eq!(first.state.route(), None);

        at(&r, JST_0900 + 5 * MINUTE);
        let second = r.run(Trigger::Reconcile).await.unwrap();
        let failed_arn = first.state.arn.unwrap();
        assert_eq!(second.actions.first(), Some(&Action::Deleted(failed_arn.clone())));
        assert!(matches!(second.actions.get(1), Some(Action::Created(arn)) if *arn != failed_arn));
        assert_eq!(second.state.status, ThroughputStatus::Creating);
        assert_eq!(second.state.last_error, None);
        assert_eq!(r.control.with(|f| (f.creations, f.deletions)), (2, 1));

        r.control.set_all(ThroughputStatus::InService);
        let third = r.run(Trigger::Reconcile).await.unwrap();
        assert_eq!(third.state.route(), second.state.arn.as_deref());
    }

    #[tokio::test]
    async fn a_lost_optimistic_lock_is_retried_on_fresh_state() {
        let r = reconciler(JST_0900);
        r.store.conflicts.store(2, Ordering::SeqCst);
        let out = r.run(Trigger::ScaleUp).await.unwrap();
        assert_eq!(out.attempts, 3);
        assert_eq!(r.control.with(|f| f.creations), 1, "the redone passes found what the first one bought");
        assert_eq!(r.store.state.lock().unwrap().as_ref().map(|s| s.version), Some(3));
        assert!(out.state.arn.is_some());
    }

    #[tokio::test]
    async fn a_lock_lost_every_time_gives_up_after_the_retries() {
        let r = reconciler(JST_0900);
        r.store.conflicts.store(u32::MAX, Ordering::SeqCst);
        let err = r.run(Trigger::ScaleUp).await.unwrap_err();
        assert!(matches!(err, ThroughputError::Contended(4)), "{err}");
        assert_eq!(err.code(), "state_contended");
    }

    #[tokio::test]
    async fn an_off_peak_alarm_holds_provisioned_for_an_hour_against_reconcile() {
        let r = reconciler(JST_2300 + 60 * MINUTE);
        let fired = r.run(Trigger::AlarmFiring).await.unwrap();
        assert_eq!(fired.state.desired, Desired::Provisioned);
        assert_eq!(fired.actions.len(), 1);

        at(&r, JST_2300 + 119 * MINUTE);
        let held = r.run(Trigger::Reconcile).await.unwrap();
        assert_eq!(held.state.desired, Desired::Provisioned);
        assert!(held.actions.is_empty());

        at(&r, JST_2300 + 120 * MINUTE);
        let released = r.run(Trigger::Reconcile).await.unwrap();
        assert_eq!(released.state.desired, Desired::OnDemand);
        assert!(matches!(released.actions.as_slice(), [Action::Deleted(_)]));
    }

    #[tokio::test]
    async fn an_alarm_clearing_during_peak_changes_nothing() {
        let r = reconciler(JST_0900 + 60 * MINUTE);
        r.run(Trigger::AlarmFiring).await.unwrap();
        let out = r.run(Trigger::AlarmCleared).await.unwrap();
        assert_eq!(out.state.desired, Desired::Provisioned);
        assert!(out.actions.is_empty());
        assert_eq!(r.control.with(|f| f.creations), 1);
    }

    #[test]
    fn only_an_in_service_throughput_is_routed_to() {
        let mut s = ThroughputState { arn: Some("arn:pt".into()), ..ThroughputState::default() };
        for status in [ThroughputStatus::Creating, ThroughputStatus::Failed, ThroughputStatus::Updating] {
            s.status = status;
            assert_eq!(s.route(), None, "{status:?}");
        }
        s.status = ThroughputStatus::InService;
        assert_eq!(provisioned_route(Some(&s)), Some("arn:pt"));
        assert_eq!(provisioned_route(None), None);
    }
}
