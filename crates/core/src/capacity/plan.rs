//! The peak capacity plan: what the 09:00-23:00 Asia/Tokyo peak (or the first-token alarm) switches on, checked
//! against what the Region and model actually offer.
//!
//! Bedrock sells provisioned throughput only for some models in some Regions: the Bedrock feature-by-Region
//! table lists none in Asia Pacific (Tokyo), and the supported-models table
//! (<https://docs.aws.amazon.com/bedrock/latest/userguide/prov-thru-supported.html>, checked 2026-12) lists no
//! Claude Haiku 4.5 in any Region. So a plan never assumes: with [`PeakPlan::Provisioned`] the reconciler asks
//! the control plane once per model and Region ([`Offer`], recorded as a [`PlanCheck`]) and buys only what is
//! sold; where nothing is sold it says so once (a log line the stack turns into one alarm) and the peak runs on
//! the priority service tier instead. The priority tier is per request (`serviceTier = priority`), offered by
//! some models (the capability table, [`crate::models::FAMILIES`]), billed at a premium per token, and needs no
//! purchase; the chat turn sends it at peak to the models that offer it ([`peak_capacity`]).
//!
//! Two further options are documented, not automated: the reserved tier (a 1- or 3-month tokens-per-minute
//! reservation arranged with the AWS account team, overflowing to standard) and routing through another
//! Region's profile where provisioned throughput is sold (`us.` / `global.`), which moves shoppers' prompts out
//! of Japan: a data-residency decision, not a latency one.

use serde::Serialize;

use crate::models::{family, same_base_model};

/// What the stack asked the peak to switch on (`PEAK_CAPACITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PeakPlan {
    /// The priority tier for the intents whose model offers it; nothing is bought.
    Priority,
    /// Provisioned throughput for the configured model where the Region sells it, and the priority tier for
    /// the other intents (and for all of them where it is not sold).
    Provisioned,
}

impl PeakPlan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Provisioned => "provisioned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "priority" => Some(Self::Priority),
            "provisioned" => Some(Self::Provisioned),
            _ => None,
        }
    }

    /// Whether this plan may buy provisioned throughput.
    pub fn buys(self) -> bool {
        self == Self::Provisioned
    }
}

/// The plan and where it runs: the reconciler checks the Region it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    pub plan: PeakPlan,
    /// The stack's Region (`AWS_REGION`); empty when unknown (then only the control plane's answer counts).
    pub region: String,
}

impl Default for PlanConfig {
    /// Provisioned throughput, checked with the control plane only: what a reconciler built without a plan
    /// did before plans existed.
    fn default() -> Self {
        Self { plan: PeakPlan::Provisioned, region: String::new() }
    }
}

/// Whether the control plane sells provisioned throughput for a model, as it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// `GetFoundationModel` lists `PROVISIONED` among its inference types.
    Sold,
    /// Not sold here: why, and the provisioned-throughput model ids that are sold here (for the log line).
    NotSold { reason: String, sold_here: Vec<String> },
    /// The control plane cannot say (a custom model's ARN; a control plane without the listing).
    Unknown,
}

/// The models Bedrock sells provisioned throughput for, by their provisioned-throughput id, and the Regions,
/// as the supported-models table lists them (prov-thru-supported, checked 2026-12; only the families of the
/// capability table). Claude Haiku 4.5 is in no row; no row has ap-northeast-1.
pub const PROVISIONED_SOLD: &[(&str, &[&str])] = &[
    ("amazon.nova-2-lite-v1:0:256k", &["us-east-1"]),
    ("amazon.nova-lite-v1:0:24k", &["us-east-1"]),
    ("amazon.nova-lite-v1:0:300k", &["us-east-1"]),
    ("amazon.nova-micro-v1:0:24k", &["us-east-1"]),
    ("amazon.nova-micro-v1:0:128k", &["us-east-1"]),
    ("amazon.nova-pro-v1:0:24k", &["us-east-1"]),
    ("amazon.nova-pro-v1:0:300k", &["us-east-1"]),
];

/// Whether the documented table sells provisioned throughput for `pt_model_id` in `region`. A custom
/// model's ARN is not in the table (its availability is the control plane's to say): `None`.
pub fn documented_provisioned(pt_model_id: &str, region: &str) -> Option<bool> {
    if pt_model_id.starts_with("arn:") {
        return None;
    }
    Some(PROVISIONED_SOLD.iter().any(|(id, regions)| *id == pt_model_id && regions.contains(&region)))
}

/// The recorded answer for one model and Region: asked once, at the first pass that needs it, and again only
/// when the model or the Region changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanCheck {
    /// `<provisioned-throughput model id>@<region>`: what was checked.
    pub key: String,
    pub sold: bool,
    pub checked_at_ms: u64,
    /// The control plane's reason when not sold, and what it sells here instead.
    pub detail: String,
}

/// The key of a [`PlanCheck`].
pub fn check_key(pt_model_id: &str, region: &str) -> String {
    format!("{pt_model_id}@{region}")
}

/// The marker of the one log line (and, through the stack's metric filter, the one alarm) that says the
/// Region does not sell the plan's provisioned throughput.
pub const UNSUPPORTED_MARKER: &str = "PEAK CAPACITY PLAN UNSUPPORTED";

/// What serves a request to one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Capacity {
    /// The provisioned throughput bought for the peak (routed to while it is in service).
    Provisioned,
    /// On-demand, with `serviceTier = priority`.
    Priority,
    /// On-demand, standard tier.
    Standard,
}

/// The capacity a request to `model_id` gets: `plan` (`None`: no peak schedule), the provisioned-throughput
/// model it buys (`pt_model_id`) and whether the Region sells it (`sold`), and whether it is peak now (the
/// schedule, or the latency alarm). Provisioned throughput serves the intents routed to the same base model;
/// every other model gets the priority tier at peak if its family offers it.
pub fn peak_capacity(plan: Option<PeakPlan>, pt_model_id: &str, sold: bool, model_id: &str, peak: bool) -> Capacity {
    let Some(plan) = plan.filter(|_| peak) else { return Capacity::Standard };
    let same_model = same_base_model(pt_model_id, model_id);
    if plan.buys() && sold && same_model {
        return Capacity::Provisioned;
    }
    if family(model_id).is_some_and(|f| f.priority_tier) { Capacity::Priority } else { Capacity::Standard }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{CLAUDE_HAIKU_4_5, NOVA_2_LITE};

    /// The schedule's own peak test at `hour`:00 JST.
    fn peak_at(hour: u32) -> bool {
        // 2026-12-01 00:00 JST, in Unix ms.
        const MIDNIGHT_JST_MS: u64 = 1_796_050_800_000;
        crate::capacity::is_peak(MIDNIGHT_JST_MS + u64::from(hour) * 3_600_000)
    }

    #[test]
    fn the_peak_gets_what_the_region_and_the_model_offer() {
        let haiku = format!("jp.{CLAUDE_HAIKU_4_5}");
        let nova2 = format!("jp.{NOVA_2_LITE}");
        let haiku_pt = format!("{CLAUDE_HAIKU_4_5}:200k");
        let (nova_pro, nova_pro_pt) = ("us.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0:300k");
        let nova_lite = "amazon.nova-lite-v1:0";
        let pp = Some(PeakPlan::Provisioned);
        use Capacity::{Priority, Provisioned, Standard};
        // (plan, provisioned-throughput model, Region, the turn's model, hour JST, capacity)
        type Row<'a> = (Option<PeakPlan>, &'a str, &'a str, &'a str, u32, Capacity);
        let table: &[Row<'_>] = &[
            // Tokyo: no provisioned throughput at all; Haiku 4.5 offers no priority tier, Nova 2 Lite does.
            (pp, &haiku_pt, "ap-northeast-1", &haiku, 10, Standard),
            (pp, &haiku_pt, "ap-northeast-1", &nova2, 10, Priority),
            (pp, &haiku_pt, "ap-northeast-1", &nova2, 2, Standard),
            (pp, nova_pro_pt, "ap-northeast-1", nova_pro, 10, Priority),
            (pp, "amazon.nova-lite-v1:0:300k", "ap-northeast-1", nova_lite, 10, Standard),
            // us-east-1 sells Nova, not Haiku 4.5.
            (pp, nova_pro_pt, "us-east-1", nova_pro, 10, Provisioned),
            (pp, nova_pro_pt, "us-east-1", nova_pro, 23, Standard),
            (pp, nova_pro_pt, "us-east-1", &nova2, 10, Priority),
            (pp, &haiku_pt, "us-east-1", &haiku, 10, Standard),
            (pp, "amazon.nova-2-lite-v1:0:256k", "us-east-1", &nova2, 9, Provisioned),
            // The priority plan never provisions, whatever is sold.
            (Some(PeakPlan::Priority), nova_pro_pt, "us-east-1", nova_pro, 10, Priority),
            (Some(PeakPlan::Priority), &haiku_pt, "ap-northeast-1", &nova2, 22, Priority),
            (Some(PeakPlan::Priority), &haiku_pt, "ap-northeast-1", &nova2, 23, Standard),
            (Some(PeakPlan::Priority), &haiku_pt, "ap-northeast-1", &nova2, 8, Standard),
            // No schedule: standard, always.
            (None, nova_pro_pt, "us-east-1", nova_pro, 10, Standard),
        ];
        for &(plan, pt, region, model, hour, want) in table {
            let sold = documented_provisioned(pt, region).unwrap_or(false);
            let got = peak_capacity(plan, pt, sold, model, peak_at(hour));
            assert_eq!(got, want, "{plan:?} {pt} in {region}, {model} at {hour}:00");
        }
    }

    #[test]
    fn the_documented_table_sells_nothing_in_tokyo_and_no_claude_haiku_4_5_anywhere() {
        for (id, regions) in PROVISIONED_SOLD {
            assert!(!regions.contains(&"ap-northeast-1"), "{id}");
            assert!(!id.starts_with(CLAUDE_HAIKU_4_5), "{id}");
        }
        assert_eq!(documented_provisioned("arn:aws:bedrock:us-east-1:123456789012:custom-model/x", "us-east-1"), None);
        assert_eq!(PeakPlan::parse("priority"), Some(PeakPlan::Priority));
        assert_eq!(PeakPlan::parse(PeakPlan::Provisioned.as_str()), Some(PeakPlan::Provisioned));
        assert_eq!(PeakPlan::parse("off"), None);
    }
}
