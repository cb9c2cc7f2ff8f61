//! The reconciler's vocabulary: the desired and actual states, what triggered a run, the control-plane and
//! state-store ports, and their errors.

use std::future::Future;

use serde::Serialize;

use super::jst::is_peak;
use super::plan::{Offer, PlanCheck};
use crate::error::{BoxError, StoreError};

/// Whether peak capacity is wanted: `Provisioned` is the peak (the schedule's 09:00-23:00, or the latency
/// alarm), `OnDemand` is standard capacity. At peak the plan decides what that means (provisioned throughput
/// where sold, the priority tier); the names are the stored values, kept from before plans existed.
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

    pub(super) fn from_clock(now_ms: u64) -> Self {
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

    /// The term's length, rounded up (31 and 184 days), for when the control plane does not say when the
    /// term ends: deleting a day late costs a day of units, deleting early is refused and breaks the term.
    pub fn term_ms(self) -> u64 {
        const DAY_MS: u64 = 86_400_000;
        match self {
            Self::OneMonth => 31 * DAY_MS,
            Self::SixMonths => 184 * DAY_MS,
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

impl ThroughputSpec {
    /// The names the stack's provisioned throughput may have: `name`, and `name-next` for a replacement of
    /// another size bought while the first still serves (Bedrock cannot resize one in place). Two suffice: a
    /// size is replaced only once its replacement serves.
    pub fn slots(&self) -> [String; 2] {
        [self.name.clone(), format!("{}-next", self.name)]
    }
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
    /// Its commitment term (`commitmentDuration`); `None`: billed hourly, deletable at any time.
    pub commitment: Option<Commitment>,
    /// When the term ends (`commitmentExpirationTime`, Unix ms), when the control plane says.
    pub commitment_ends_ms: Option<u64>,
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
    /// Whether provisioned throughput is sold for `model_id` (a provisioned-throughput id) in this Region.
    /// A control plane that cannot tell answers [`Offer::Unknown`] (then the purchase itself will tell).
    fn provisioned_offer(&self, _model_id: &str) -> impl Future<Output = Result<Offer, ControlError>> + Send {
        async { Ok(Offer::Unknown) }
    }
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
    /// When the commitment term of the provisioned throughput ends (Unix ms): it is not deleted before.
    pub commitment_ends_ms: Option<u64>,
    /// A purchase of the new size while the old one (`arn`) still serves, until it is in service.
    pub replacement_arn: Option<String>,
    pub replacement_status: ThroughputStatus,
    pub replacement_units: u32,
    pub last_error: Option<String>,
    /// Whether the Region sells the plan's provisioned throughput, as the control plane answered (asked once
    /// per model and Region); `None` for a plan that buys none, or before it could be asked.
    pub plan_check: Option<PlanCheck>,
    /// The priority service tier is in force now (peak, under any plan): the chat turn sends it to the models
    /// that offer it and are not served by provisioned throughput.
    pub priority: bool,
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
            commitment_ends_ms: None,
            replacement_arn: None,
            replacement_status: ThroughputStatus::NotProvisioned,
            replacement_units: 0,
            last_error: None,
            plan_check: None,
            priority: false,
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

    /// What the chat function routes by: the provisioned ARN in service, and whether the priority tier is in
    /// force.
    pub fn route_record(&self) -> RouteRecord {
        RouteRecord { arn: self.route().map(str::to_owned), priority: self.priority }
    }

    /// Equal apart from the write bookkeeping (`updated_at_ms`, `version`).
    pub(super) fn same_content(&self, other: &Self) -> bool {
        let strip = |s: &Self| Self { updated_at_ms: 0, version: 0, ..s.clone() };
        strip(self) == strip(other)
    }
}

/// The part of `CONFIG/THROUGHPUT` the chat function caches: where to route, and whether the peak's priority
/// tier is in force. The default (no record, no schedule) is on-demand, standard tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteRecord {
    /// The provisioned-throughput ARN while it is in service.
    pub arn: Option<String>,
    /// The priority tier is in force (peak).
    pub priority: bool,
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
    /// Off-peak, but its commitment term has not ended (the state's `commitment_ends_ms` says when): kept,
    /// and still routed to, since it is paid for either way.
    KeptForCommitment(String),
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
