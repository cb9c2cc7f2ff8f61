//! Configuration of the throughput function, read from the environment once at cold start.
//!
//! The Bedrock and DynamoDB endpoints are not here: the SDK's own `AWS_ENDPOINT_URL_BEDROCK` and
//! `AWS_ENDPOINT_URL_DYNAMODB` variables override them.

use mangaassist_core::capacity::{Commitment, PeakPlan, PlanConfig, ThroughputSpec};
use mangaassist_core::models::ModelId;

pub use mangaassist_adapters::env::ConfigError;
use mangaassist_adapters::env::{Env, FromEnv};

/// Everything the throughput function reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThroughputConfig {
    /// DynamoDB table holding `CONFIG/THROUGHPUT` (`TABLE_NAME`).
    pub table_name: String,
    /// What to buy: `PT_NAME` (default `mangaassist-peak`), `PT_MODEL_ID` (required), `PT_MODEL_UNITS`
    /// (default 1), `PT_COMMITMENT` (`OneMonth`, `SixMonths`; default none, i.e. hourly and deletable).
    pub spec: ThroughputSpec,
    /// What the peak switches on: `PEAK_CAPACITY` (`priority`, or `provisioned`, the default: provisioned
    /// throughput where the Region sells it), checked in `AWS_REGION` (Lambda sets it).
    pub plan: PlanConfig,
}

/// `^([0-9a-zA-Z][_-]?)+$`, 1 to 63 characters: what Bedrock accepts as a provisioned model name.
fn valid_name(s: &str) -> bool {
    let mut prev_sep = true;
    for c in s.chars() {
        let sep = c == '_' || c == '-';
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return false;
        }
        prev_sep = sep;
    }
    (1..=63).contains(&s.len())
}

impl FromEnv for ThroughputConfig {
    type Error = ConfigError;

    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error> {
        let nonempty = |name: &str| env.nonempty(name);
        let table_name = nonempty("TABLE_NAME").unwrap_or_else(|| "mangaassist".to_owned());
        let Some(model_id) = nonempty("PT_MODEL_ID") else {
            return Err(ConfigError {
                name: "PT_MODEL_ID",
                value: String::new(),
                reason: "required: the model to buy provisioned throughput for",
            });
        };
        // What `CreateProvisionedModelThroughput` accepts as `modelId`: not an on-demand id or a profile.
        if !ModelId::parse(&model_id).is_ok_and(|m| m.provisioned_purchase_ok()) {
            return Err(ConfigError {
                name: "PT_MODEL_ID",
                value: model_id,
                reason: "expected a provisioned-throughput model id with its context length (e.g. \
                         anthropic.claude-haiku-4-5-20251001-v1:0:200k) or a custom model ARN",
            });
        }
        let name = nonempty("PT_NAME").unwrap_or_else(|| "mangaassist-peak".to_owned());
        // A replacement of another size is bought as `<name>-next`, which must be valid too.
        if !valid_name(&name) || !valid_name(&format!("{name}-next")) {
            return Err(ConfigError { name: "PT_NAME", value: name, reason: "expected 1-58 of [0-9a-zA-Z_-]" });
        }
        let model_units = match nonempty("PT_MODEL_UNITS") {
            None => 1,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(ConfigError { name: "PT_MODEL_UNITS", value: v, reason: "expected a count >= 1" }),
            },
        };
        let commitment = match nonempty("PT_COMMITMENT") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("none") => None,
            Some(v) => Some(Commitment::parse(&v).ok_or(ConfigError {
                name: "PT_COMMITMENT",
                value: v,
                reason: "expected none, OneMonth or SixMonths",
            })?),
        };
        let plan = match nonempty("PEAK_CAPACITY") {
            None => PeakPlan::Provisioned,
            Some(v) => PeakPlan::parse(&v).ok_or(ConfigError {
                name: "PEAK_CAPACITY",
                value: v,
                reason: "expected priority or provisioned (off: the stack has no throughput function)",
            })?,
        };
        let region = nonempty("AWS_REGION").unwrap_or_default();
        Ok(Self {
            table_name,
            spec: ThroughputSpec { name, model_id, model_units, commitment },
            plan: PlanConfig { plan, region },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAIKU_200K: &str = "anthropic.claude-haiku-4-5-20251001-v1:0:200k";

    fn cfg(pairs: &[(&str, &str)]) -> Result<ThroughputConfig, ConfigError> {
        ThroughputConfig::from_pairs(pairs)
    }

    #[test]
    fn only_the_model_is_required() {
        let c = cfg(&[("PT_MODEL_ID", "anthropic.claude-haiku-4-5-20251001-v1:0:200k")]).unwrap();
        assert_eq!(c.spec.name, "mangaassist-peak");
        assert_eq!(c.spec.model_units, 1);
        assert_eq!(c.spec.commitment, None);
        assert_eq!(c.table_name, "mangaassist");
        assert_eq!(c.plan, PlanConfig { plan: PeakPlan::Provisioned, region: String::new() });
        assert_eq!(cfg(&[]).unwrap_err().name, "PT_MODEL_ID");
    }

    #[test]
    fn the_plan_and_the_region_it_is_checked_in_are_read() {
        let m = ("PT_MODEL_ID", HAIKU_200K);
        let c = cfg(&[m, ("PEAK_CAPACITY", "priority"), ("AWS_REGION", "ap-northeast-1")]).unwrap();
        assert_eq!(c.plan, PlanConfig { plan: PeakPlan::Priority, region: "ap-northeast-1".into() });
        assert_eq!(cfg(&[m, ("PEAK_CAPACITY", "provisioned")]).unwrap().plan.plan, PeakPlan::Provisioned);
        assert_eq!(cfg(&[m, ("PEAK_CAPACITY", "off")]).unwrap_err().name, "PEAK_CAPACITY");
    }

    #[test]
    fn bad_settings_are_named() {
        let m = ("PT_MODEL_ID", HAIKU_200K);
        assert_eq!(cfg(&[m, ("PT_MODEL_UNITS", "0")]).unwrap_err().name, "PT_MODEL_UNITS");
        assert_eq!(cfg(&[m, ("PT_COMMITMENT", "1y")]).unwrap_err().name, "PT_COMMITMENT");
        assert_eq!(cfg(&[m, ("PT_NAME", "has space")]).unwrap_err().name, "PT_NAME");
        assert_eq!(cfg(&[m, ("PT_NAME", &"n".repeat(60))]).unwrap_err().name, "PT_NAME", "no room for -next");
    }

    #[test]
    fn the_model_needs_its_context_length_or_a_custom_model_arn() {
        for ok in [
            HAIKU_200K,
            "amazon.nova-lite-v1:0:300k",
            "arn:aws:bedrock:ap-northeast-1:123456789012:custom-model/amazon.nova-lite-v1:0:300k/abc123",
        ] {
            assert_eq!(cfg(&[("PT_MODEL_ID", ok)]).unwrap().spec.model_id, ok);
        }
        for bad in [
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "jp.anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "in.anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "global.amazon.nova-2-lite-v1:0:300k",
            "anthropic.claude-haiku-4-5-20251001-v1:0:200",
            "m",
            "",
        ] {
            assert_eq!(cfg(&[("PT_MODEL_ID", bad)]).unwrap_err().name, "PT_MODEL_ID", "{bad}");
        }
    }

    #[test]
    fn settings_are_read() {
        let c = cfg(&[
            ("PT_MODEL_ID", HAIKU_200K),
            ("PT_MODEL_UNITS", "2"),
            ("PT_COMMITMENT", "OneMonth"),
            ("PT_NAME", "peak_2"),
            ("TABLE_NAME", "t"),
        ])
        .unwrap();
        assert_eq!(c.spec.model_units, 2);
        assert_eq!(c.spec.commitment, Some(Commitment::OneMonth));
        assert_eq!(c.spec.name, "peak_2");
        assert_eq!(c.table_name, "t");
        assert_eq!(cfg(&[("PT_MODEL_ID", HAIKU_200K), ("PT_COMMITMENT", "none")]).unwrap().spec.commitment, None);
    }
}
