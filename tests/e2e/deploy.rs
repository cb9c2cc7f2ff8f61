//! The SAM template as an operator deploying it would meet it: which resources each switch creates, whether
//! every alarm can fire at realistic traffic, whether a change reaches the stage, whether the functions end
//! before API Gateway gives up, and what pages someone when a function fails.
//!
//! The switches are checked by evaluating the template's `Conditions` for a setting of the parameters (the
//! short-form intrinsics it uses: `!Equals`, `!Not`, `!And`, `!Or`, `!Condition`, `!If`, `!Ref AWS::NoValue`),
//! dropping the resources whose condition is false, and following every `!Ref`, `!GetAtt`, `!Sub` and
//! `DependsOn` of what is left: a reference to a resource that a setting removes would fail that deployment.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::Value;

use super::template::{literal, ref_target, resources, sub_text, tagged, template, workspace_root};

/// Parameter values that differ from the template's defaults.
type Settings<'a> = BTreeMap<&'a str, &'a str>;

/// The template evaluated for one setting of its parameters.
struct Evaluated<'t> {
    template: &'t Value,
    settings: Settings<'t>,
}

impl<'t> Evaluated<'t> {
    fn new(template: &'t Value, settings: &[(&'t str, &'t str)]) -> Self {
        let params = template["Parameters"].as_mapping().unwrap();
        for (name, _) in settings {
            assert!(params.contains_key(*name), "no parameter {name}");
        }
        Self { template, settings: settings.iter().copied().collect() }
    }

    /// A parameter's value as text: the setting, else the default.
    fn parameter(&self, name: &str) -> String {
        if let Some(v) = self.settings.get(name) {
            return (*v).to_owned();
        }
        scalar(&self.template["Parameters"][name]["Default"]).unwrap_or_else(|| panic!("parameter {name}"))
    }

    fn value_of(&self, v: &Value) -> String {
        match tagged(v) {
            Some((tag, inner)) if tag == "!Ref" => self.parameter(inner.as_str().unwrap()),
            Some((tag, _)) => panic!("{tag} inside a condition"),
            None => scalar(v).unwrap_or_else(|| panic!("not a scalar: {v:?}")),
        }
    }

    fn expression(&self, v: &Value) -> bool {
        let Some((tag, args)) = tagged(v) else { panic!("not a condition: {v:?}") };
        let list = || args.as_sequence().unwrap().iter();
        match tag.as_str() {
            "!Equals" => {
                let [a, b] = args.as_sequence().unwrap().as_slice() else { panic!("!Equals takes two") };
                self.value_of(a) == self.value_of(b)
            }
            "!Not" => !self.expression(&args[0]),
            "!And" => list().all(|c| self.expression(c)),
            "!Or" => list().any(|c| self.expression(c)),
            "!Condition" => self.condition(args.as_str().unwrap()),
            other => panic!("unsupported condition function {other}"),
        }
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.template["Conditions"][name];
        assert!(!c.is_null(), "no condition {name}");
        self.expression(c)
    }

    /// The logical ids of the resources this setting creates.
    fn resources(&self) -> BTreeSet<&'t str> {
        let all = self.template["Resources"].as_mapping().unwrap();
        all.iter()
            .filter(|(_, body)| body["Condition"].as_str().is_none_or(|c| self.condition(c)))
            .map(|(id, _)| id.as_str().unwrap())
            .collect()
    }

    /// `v` with every `!If` decided and every `!Ref AWS::NoValue` removed; `None` when `v` itself is removed.
    fn resolve(&self, v: &Value) -> Option<Value> {
        match v {
            Value::Tagged(t) if t.tag == "If" => {
                let [cond, yes, no] = t.value.as_sequence().unwrap().as_slice() else { panic!("!If takes three") };
                self.resolve(if self.condition(cond.as_str().unwrap()) { yes } else { no })
            }
            Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some("AWS::NoValue") => None,
            Value::Tagged(t) => {
                let mut t = t.clone();
                t.value = self.resolve(&t.value)?;
                Some(Value::Tagged(t))
            }
            Value::Sequence(items) => Some(Value::Sequence(items.iter().filter_map(|i| self.resolve(i)).collect())),
            Value::Mapping(map) => {
                Some(Value::Mapping(map.iter().filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?))).collect()))
            }
            other => Some(other.clone()),
        }
    }

    /// A resource's body as this setting deploys it.
    fn resource(&self, id: &str) -> Value {
        self.resolve(&self.template["Resources"][id]).unwrap_or_else(|| panic!("{id} resolves to nothing"))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The logical ids `v` refers to (`!Ref`, `!GetAtt`, `!Sub`), pseudo parameters left out.
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            match (tag.as_str(), &t.value) {
                ("!Ref", Value::String(s)) => {
                    out.insert(s.clone());
                }
                ("!GetAtt", Value::String(s)) => {
                    out.insert(s.split('.').next().unwrap_or_default().to_owned());
                }
                ("!GetAtt", Value::Sequence(parts)) => {
                    out.insert(parts[0].as_str().unwrap_or_default().to_owned());
                }
                ("!Sub", Value::String(text)) => sub_references(text, &BTreeSet::new(), out),
                ("!Sub", Value::Sequence(parts)) => {
                    let vars: BTreeSet<String> = parts[1]
                        .as_mapping()
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, _)| k.as_str().map(str::to_owned))
                        .collect();
                    sub_references(parts[0].as_str().unwrap_or_default(), &vars, out);
                    references(&parts[1], out);
                }
                (_, inner) => references(inner, out),
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| references(i, out)),
        Value::Mapping(map) => map.values().for_each(|v| references(v, out)),
        _ => {}
    }
    out.retain(|r| !r.starts_with("AWS::"));
}

fn sub_references(text: &str, vars: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
        let name = &rest[start + 2..start + end];
        rest = &rest[start + end + 1..];
        if name.starts_with('!') || name.starts_with("AWS::") || vars.contains(name) {
            continue;
        }
        out.insert(name.split('.').next().unwrap_or_default().to_owned());
    }
}

/// Every combination of the switches (and the parameters whose emptiness is a condition).
fn every_setting() -> Vec<Vec<(&'static str, &'static str)>> {
    let axes: [(&str, &[&str]); 9] = [
        ("EnableVpcCache", &["true", "false"]),
        ("NatGateways", &["1", "2"]),
        ("PeakCapacity", &["off", "priority", "provisioned"]),
        ("EnableGuardrail", &["true", "false"]),
        ("CreateSearchCollection", &["true", "false"]),
        ("OpenSearchDomainArn", &["", "arn:aws:es:ap-northeast-1:123456789012:domain/manga"]),
        ("ApiGatewayLogRoleArn", &["", "create", "arn:aws:iam::123456789012:role/apigw-logs"]),
        ("AlarmEmail", &["", "ops@example.com"]),
        ("IssuerUrl", &["", "https://issuer.example.com"]),
    ];
    let mut out: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    for (name, values) in axes {
        out =
            out.into_iter().flat_map(|s| values.iter().map(move |v| [s.clone(), vec![(name, *v)]].concat())).collect();
    }
    out
}

#[test]
fn no_setting_of_the_switches_leaves_a_reference_to_a_resource_it_removed() {
    let t = template();
    for setting in every_setting() {
        let ev = Evaluated::new(&t, &setting);
        let present = ev.resources();
        let mut known: BTreeSet<String> = present.iter().map(|id| (*id).to_owned()).collect();
        known.extend(t["Parameters"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()));
        // SAM names each function's generated execution role `<Function>Role`.
        for (id, _) in resources(&t, "AWS::Serverless::Function").into_iter().filter(|(id, _)| present.contains(id)) {
            known.insert(format!("{id}Role"));
        }
        for id in &present {
            let body = ev.resource(id);
            let mut refs = BTreeSet::new();
            references(&body["Properties"], &mut refs);
            match &body["DependsOn"] {
                Value::String(d) => {
                    refs.insert(d.clone());
                }
                Value::Sequence(ds) => refs.extend(ds.iter().filter_map(|d| d.as_str().map(str::to_owned))),
                _ => {}
            }
            let missing: Vec<&String> = refs.iter().filter(|r| !known.contains(*r)).collect();
            assert!(missing.is_empty(), "{id} refers to {missing:?}, which {setting:?} does not create");
        }
        for (name, output) in t["Outputs"].as_mapping().unwrap() {
            if output["Condition"].as_str().is_some_and(|c| !ev.condition(c)) {
                continue;
            }
            let mut refs = BTreeSet::new();
            references(&ev.resolve(&output["Value"]).unwrap(), &mut refs);
            assert!(refs.iter().all(|r| known.contains(r)), "output {name:?} refers to {refs:?} under {setting:?}");
        }
    }
}

/// The resources of `kind` that `settings` creates.
fn created<'t>(t: &'t Value, settings: &[(&'t str, &'t str)], kind: &str) -> BTreeSet<&'t str> {
    let present = Evaluated::new(t, settings).resources();
    resources(t, kind).into_iter().map(|(id, _)| id).filter(|id| present.contains(id)).collect()
}

#[test]
fn the_cheap_switch_removes_the_vpc_nat_endpoints_and_cache_and_nothing_else() {
    let t = template();
    let on = Evaluated::new(&t, &[("EnableVpcCache", "true")]).resources();
    let off = Evaluated::new(&t, &[("EnableVpcCache", "false")]).resources();
    let removed: BTreeSet<&str> = on.difference(&off).copied().collect();
    let kinds: BTreeSet<&str> = removed.iter().map(|id| t["Resources"][*id]["Type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "AWS::EC2::VPC",
            "AWS::EC2::Subnet",
            "AWS::EC2::InternetGateway",
            "AWS::EC2::VPCGatewayAttachment",
            "AWS::EC2::RouteTable",
            "AWS::EC2::Route",
            "AWS::EC2::SubnetRouteTableAssociation",
            "AWS::EC2::EIP",
            "AWS::EC2::NatGateway",
            "AWS::EC2::SecurityGroup",
            "AWS::EC2::VPCEndpoint",
            "AWS::ElastiCache::ServerlessCache",
        ]),
        "removed: {removed:?}"
    );
    assert!(off.is_subset(&on), "switching the VPC off adds nothing");
    // And the functions that lived in it leave it, without a cache to point at.
    let ev = Evaluated::new(&t, &[("EnableVpcCache", "false")]);
    for f in ["ChatFunction", "PrefetchFunction"] {
        let body = ev.resource(f);
        assert!(body["Properties"].get("VpcConfig").is_none(), "{f} is outside any VPC");
        assert_eq!(body["Properties"]["Environment"]["Variables"]["REDIS_URL"].as_str(), Some(""), "{f}");
    }
    let ev = Evaluated::new(&t, &[("EnableVpcCache", "true")]);
    assert!(ev.resource("ChatFunction")["Properties"]["VpcConfig"]["SubnetIds"].as_sequence().is_some());
}

#[test]
fn prod_has_a_nat_gateway_per_az_and_dev_one_or_none() {
    let t = template();
    let nats = |s: &[(&'static str, &'static str)]| created(&t, s, "AWS::EC2::NatGateway").len();
    assert_eq!(nats(&[("EnableVpcCache", "true"), ("NatGateways", "2")]), 2);
    assert_eq!(nats(&[("EnableVpcCache", "true"), ("NatGateways", "1")]), 1);
    assert_eq!(nats(&[("EnableVpcCache", "false"), ("NatGateways", "2")]), 0);
    // With two, each private subnet leaves through the NAT of its own AZ.
    let ev = Evaluated::new(&t, &[("EnableVpcCache", "true"), ("NatGateways", "2")]);
    let table = |assoc: &str| ref_target(&ev.resource(assoc)["Properties"]["RouteTableId"]).map(str::to_owned);
    assert_ne!(table("PrivateSubnetARoutes"), table("PrivateSubnetBRoutes"));

    let samconfig = std::fs::read_to_string(workspace_root().join("samconfig.toml")).unwrap();
    let overrides = |env: &str| {
        let section = samconfig.split(&format!("[{env}.deploy.parameters]")).nth(1).unwrap();
        section.lines().find(|l| l.starts_with("parameter_overrides")).unwrap().to_owned()
    };
    let prod = overrides("prod");
    assert!(prod.contains("NatGateways=2") && prod.contains("DeletionProtection=true"), "{prod}");
    // Prod deploys to ap-northeast-1, which sells no provisioned throughput: its peak runs on the priority tier.
    assert!(prod.contains("PeakCapacity=priority") && !prod.contains("PeakCapacity=provisioned"), "{prod}");
    for env in ["dev", "default"] {
        let dev = overrides(env);
        assert!(dev.contains("PeakCapacity=off") && dev.contains("EnableVpcCache=false"), "{dev}");
    }
    assert!(!samconfig.contains("cached = true"), "SAM's cache hashes target/ and never matches");
}

#[test]
fn peak_capacity_is_off_by_default_and_its_switch_removes_every_part_of_it() {
    let t = template();
    assert_eq!(t["Parameters"]["PeakCapacity"]["Default"].as_str(), Some("off"));
    let schedule = BTreeSet::from([
        "ThroughputFunction",
        "ThroughputFunctionLogGroup",
        "ThroughputSchedulerRole",
        "ThroughputScaleUpSchedule",
        "ThroughputScaleDownSchedule",
        "ThroughputReconcileSchedule",
        "FirstTokenLatencyAlarmRule",
        "ThroughputFunctionAlarmPermission",
        "ThroughputFunctionErrorsAlarm",
        "ThroughputFunctionThrottlesAlarm",
    ]);
    let off = Evaluated::new(&t, &[("PeakCapacity", "off")]).resources();
    let priority = Evaluated::new(&t, &[("PeakCapacity", "priority")]).resources();
    let provisioned = Evaluated::new(&t, &[("PeakCapacity", "provisioned")]).resources();
    assert_eq!(priority.difference(&off).copied().collect::<BTreeSet<_>>(), schedule);
    // Only a plan that may buy throughput watches for the Region not selling it.
    let unsupported = BTreeSet::from(["PeakCapacityUnsupportedFilter", "PeakCapacityUnsupportedAlarm"]);
    assert_eq!(provisioned.difference(&priority).copied().collect::<BTreeSet<_>>(), unsupported);
    // Off, the chat function never reads the record; only the provisioned plan may invoke a provisioned model,
    // and only its throughput function may buy one or ask what the Region sells.
    for (plan, buys) in [("off", false), ("priority", false), ("provisioned", true)] {
        let ev = Evaluated::new(&t, &[("PeakCapacity", plan)]);
        let chat = ev.resource("ChatFunction");
        let cache = chat["Properties"]["Environment"]["Variables"]["ROUTE_CACHE_SECS"].as_str();
        assert_eq!(cache, Some(if plan == "off" { "0" } else { "30" }), "{plan}");
        let grants = serde_yaml_ng::to_string(&chat["Properties"]["Policies"]).unwrap();
        assert_eq!(grants.contains("provisioned-model"), buys, "{plan}");
        if plan != "off" {
            let f = ev.resource("ThroughputFunction");
            assert_eq!(ref_target(&f["Properties"]["Environment"]["Variables"]["PEAK_CAPACITY"]), Some("PeakCapacity"));
            let policies = serde_yaml_ng::to_string(&f["Properties"]["Policies"]).unwrap();
            assert_eq!(policies.contains("bedrock:CreateProvisionedModelThroughput"), buys, "{plan}");
            assert_eq!(policies.contains("bedrock:GetFoundationModel"), buys, "{plan}");
            assert!(
                policies.contains("bedrock:DeleteProvisionedModelThroughput"),
                "{plan}: an earlier purchase is deleted"
            );
        }
    }
    // The purchase id carries its context length.
    let model = &t["Parameters"]["ProvisionedModelId"];
    assert!(model["Default"].as_str().unwrap().ends_with(":200k"));
    assert!(model["AllowedPattern"].as_str().unwrap().contains(":[0-9]+k"));
}

#[test]
fn guardrail_and_search_switches_remove_their_resources() {
    let t = template();
    assert_eq!(created(&t, &[("EnableGuardrail", "false")], "AWS::Bedrock::Guardrail").len(), 0);
    assert_eq!(created(&t, &[("EnableGuardrail", "true")], "AWS::Bedrock::GuardrailVersion").len(), 2);
    let search = |on: &'static str| {
        ["Collection", "SecurityPolicy", "AccessPolicy"]
            .iter()
            .map(|k| created(&t, &[("CreateSearchCollection", on)], &format!("AWS::OpenSearchServerless::{k}")).len())
            .sum::<usize>()
    };
    assert_eq!((search("true"), search("false")), (4, 0));
}

/// `IF(<samples> >= N, <percentile>, 0)`: the id of the sample count and N.
fn guard(expression: &str) -> Option<(&str, u64)> {
    let inner = expression.strip_prefix("IF(")?;
    let (samples, rest) = inner.split_once(">=")?;
    let n = rest.split(',').next()?.trim().parse().ok()?;
    Some((samples.trim(), n))
}

#[test]
fn every_percentile_alarm_can_fire_at_one_turn_per_second() {
    const TURNS_PER_SECOND: u64 = 1;
    let t = template();
    let mut percentile_alarms = 0;
    for (id, alarm) in resources(&t, "AWS::CloudWatch::Alarm") {
        let p = &alarm["Properties"];
        if let Some(stat) = p["ExtendedStatistic"].as_str() {
            // A single-metric percentile alarm: below 10/(1-p) samples per period CloudWatch calls it
            // low-sample, and `ignore` then never changes the state.
            let pct: f64 = stat.trim_start_matches('p').parse::<f64>().unwrap() / 100.0;
            let needed = (10.0 / (1.0 - pct)).ceil() as u64;
            let period = p["Period"].as_u64().unwrap();
            if p["EvaluateLowSampleCountPercentile"].as_str() == Some("ignore") {
                assert!(needed <= period * TURNS_PER_SECOND, "{id}: {stat} needs {needed} samples in {period} s");
            }
            percentile_alarms += 1;
            continue;
        }
        let Some(queries) = p["Metrics"].as_sequence() else { continue };
        let stat_of = |qid: &str| queries.iter().find(|q| q["Id"].as_str() == Some(qid)).map(|q| &q["MetricStat"]);
        let percentiles: Vec<&Value> =
            queries.iter().filter(|q| q["MetricStat"]["Stat"].as_str().is_some_and(|s| s.starts_with('p'))).collect();
        if percentiles.is_empty() {
            continue;
        }
        percentile_alarms += 1;
        let result = queries.iter().find(|q| q["ReturnData"].as_bool() == Some(true)).unwrap();
        let expression = result["Expression"].as_str().unwrap_or_else(|| panic!("{id}: no guard expression"));
        let (samples_id, needed) = guard(expression).unwrap_or_else(|| panic!("{id}: {expression} is not a guard"));
        let samples = stat_of(samples_id).unwrap_or_else(|| panic!("{id}: no query {samples_id}"));
        assert_eq!(samples["Stat"].as_str(), Some("SampleCount"), "{id}: the guard counts samples");
        for q in percentiles {
            let m = &q["MetricStat"];
            assert_eq!(m["Metric"], samples["Metric"], "{id}: the guard counts the same metric");
            assert_eq!(m["Period"], samples["Period"], "{id}");
            let period = m["Period"].as_u64().unwrap();
            assert!(needed <= period * TURNS_PER_SECOND, "{id}: needs {needed} samples in {period} s");
            assert!(needed >= 10, "{id}: a p95 of fewer than 10 samples is one slow turn");
            assert!(expression.contains(q["Id"].as_str().unwrap()), "{id}: the guard returns the percentile");
        }
        assert_eq!(p["EvaluationPeriods"].as_u64(), Some(1), "{id}: one period of 5 minutes decides");
    }
    assert!(percentile_alarms >= 4, "the design's percentile alarms: {percentile_alarms}");
}

#[test]
fn every_function_has_errors_and_throttles_alarms_under_its_own_condition() {
    let t = template();
    let alarms = resources(&t, "AWS::CloudWatch::Alarm");
    for (f, body) in resources(&t, "AWS::Serverless::Function") {
        for metric in ["Errors", "Throttles"] {
            let watching: Vec<&str> = alarms
                .iter()
                .filter(|(_, a)| {
                    let p = &a["Properties"];
                    let single = std::iter::once(p);
                    let math = p["Metrics"].as_sequence().into_iter().flatten().map(|q| &q["MetricStat"]["Metric"]);
                    single.chain(math).any(|m| {
                        literal(&m["Namespace"]) == Some("AWS/Lambda")
                            && literal(&m["MetricName"]) == Some(metric)
                            && m["Dimensions"].as_sequence().is_some_and(|d| {
                                d.iter().any(|d| {
                                    d["Name"].as_str() == Some("FunctionName") && ref_target(&d["Value"]) == Some(f)
                                })
                            })
                    })
                })
                .map(|(id, a)| {
                    assert_eq!(a["Condition"], body["Condition"], "{id} exists exactly when {f} does");
                    let actions = &a["Properties"]["AlarmActions"];
                    assert!(actions.as_sequence().is_some_and(|s| !s.is_empty()), "{id} notifies someone");
                    *id
                })
                .collect();
            assert_eq!(watching.len(), 1, "{f}: one {metric} alarm, got {watching:?}");
        }
    }
}

#[test]
fn the_stage_deploys_itself_and_writes_access_logs() {
    let t = template();
    assert!(resources(&t, "AWS::ApiGatewayV2::Deployment").is_empty(), "a fixed Deployment never redeploys");
    let stages = resources(&t, "AWS::ApiGatewayV2::Stage");
    assert_eq!(stages.len(), 1);
    let (id, stage) = stages[0];
    let p = &stage["Properties"];
    assert_eq!(p["AutoDeploy"].as_bool(), Some(true), "{id}");
    assert!(p.get("DeploymentId").is_none(), "{id}: AutoDeploy manages deployments");
    let logs = &p["AccessLogSettings"];
    let dest = match tagged(&logs["DestinationArn"]) {
        Some((tag, v)) if tag == "!GetAtt" => v.as_str().unwrap().trim_end_matches(".Arn").to_owned(),
        other => panic!("{id}: DestinationArn {other:?}"),
    };
    assert_eq!(t["Resources"][dest.as_str()]["Type"].as_str(), Some("AWS::Logs::LogGroup"));
    let format: serde_json::Value = serde_json::from_str(literal(&logs["Format"]).unwrap()).unwrap();
    for field in ["requestId", "connectionId", "routeKey", "status", "eventType"] {
        assert!(format[field].as_str().is_some_and(|v| v.starts_with("$context.")), "access log has {field}");
    }
    assert!(literal(&logs["Format"]).unwrap().len() < 3 * 1024, "API Gateway's access log template quota is 3 KB");
    // Created after every route (RouteSettings name them by key; creation_order.rs checks the transformed
    // template), and after the account's logging role when this stack sets it.
    let after: BTreeSet<&str> = stage["DependsOn"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    let routes: BTreeSet<&str> = resources(&t, "AWS::ApiGatewayV2::Route").into_iter().map(|(id, _)| id).collect();
    assert_eq!(after, routes, "{id} waits for every route");
    for (setting, waits) in [("", false), ("create", true), ("arn:aws:iam::123456789012:role/apigw-logs", true)] {
        let ev = Evaluated::new(&t, &[("ApiGatewayLogRoleArn", setting)]);
        let mut refs = BTreeSet::new();
        references(&ev.resource(id)["Properties"], &mut refs);
        assert_eq!(refs.contains("ApiGatewayAccount"), waits, "ApiGatewayLogRoleArn={setting:?}");
        assert_eq!(
            ev.resources().contains("ApiGatewayAccount"),
            waits,
            "{setting:?}: the account is set only when asked"
        );
        assert_eq!(ev.resources().contains("ApiGatewayLogRole"), setting == "create", "{setting:?}");
    }
    // A role this stack sets for the account outlives the stack: the setting never points at a deleted role.
    assert_eq!(t["Resources"]["ApiGatewayLogRole"]["DeletionPolicy"].as_str(), Some("RetainExceptOnCreate"));
    assert_eq!(
        t["Parameters"]["ApiGatewayLogRoleArn"]["Default"].as_str(),
        Some(""),
        "the account's own role by default"
    );
}

#[test]
fn data_outlives_the_stack_but_not_a_failed_first_create_and_prod_refuses_deletion() {
    let t = template();
    for id in ["ChatTable", "UserPool"] {
        let r = &t["Resources"][id];
        assert_eq!(r["DeletionPolicy"].as_str(), Some("RetainExceptOnCreate"), "{id}");
        assert_eq!(r["UpdateReplacePolicy"].as_str(), Some("Retain"), "{id}");
    }
    for (setting, on) in [("true", true), ("false", false)] {
        let ev = Evaluated::new(&t, &[("DeletionProtection", setting)]);
        assert_eq!(ev.resource("ChatTable")["Properties"]["DeletionProtectionEnabled"].as_bool(), Some(on));
        let pool = ev.resource("UserPool")["Properties"]["DeletionProtection"].as_str().map(str::to_owned);
        assert_eq!(pool.as_deref(), Some(if on { "ACTIVE" } else { "INACTIVE" }));
    }
}

#[test]
fn the_chat_function_and_its_turn_end_before_api_gateway_cuts_the_integration() {
    const INTEGRATION_TIMEOUT_SECS: u64 = 29;
    let t = template();
    let chat = &t["Resources"]["ChatFunction"]["Properties"];
    let timeout = chat["Timeout"].as_u64().unwrap();
    assert!(timeout < INTEGRATION_TIMEOUT_SECS, "chat Timeout {timeout} s");
    let deadline: u64 = chat["Environment"]["Variables"]["TURN_DEADLINE_MS"].as_str().unwrap().parse().unwrap();
    assert!(deadline + 2_000 <= timeout * 1_000, "TURN_DEADLINE_MS {deadline} leaves the 2 s to finish the turn");
}

#[test]
fn every_function_is_traced_and_logs_to_a_group_created_before_it() {
    let t = template();
    assert_eq!(t["Globals"]["Function"]["Tracing"].as_str(), Some("Active"));
    for (f, body) in resources(&t, "AWS::Serverless::Function") {
        let group = ref_target(&body["Properties"]["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{f}: LoggingConfig.LogGroup names the stack's log group"));
        let g = &t["Resources"][group];
        assert_eq!(g["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{f}");
        assert_eq!(g["Condition"], body["Condition"], "{group} exists exactly when {f} does");
        // The group must not wait for the function (a `/aws/lambda/${Function}` name would): the function
        // depends on the group, so no invocation can create it first.
        let mut refs = BTreeSet::new();
        references(&g["Properties"], &mut refs);
        assert!(!refs.contains(f), "{group} refers to {f}");
        assert!(g["Properties"]["RetentionInDays"].as_u64().is_some(), "{group} keeps logs for a while, not forever");
    }
}

#[test]
fn the_throughput_function_reserves_concurrency_only_when_asked_runs_outside_the_vpc_and_reports_a_failed_pass() {
    let t = template();
    // A new account's concurrency limit (10) leaves nothing to reserve: none by default.
    assert_eq!(t["Parameters"]["ThroughputReservedConcurrency"]["Default"].as_u64(), Some(0));
    for (setting, reserved) in [("0", None), ("1", Some("ThroughputReservedConcurrency"))] {
        let ev = Evaluated::new(&t, &[("PeakCapacity", "priority"), ("ThroughputReservedConcurrency", setting)]);
        let f = ev.resource("ThroughputFunction");
        assert_eq!(ref_target(&f["Properties"]["ReservedConcurrentExecutions"]), reserved, "{setting}");
    }
    let p = &t["Resources"]["ThroughputFunction"]["Properties"];
    let on_failure = &p["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
    assert_eq!(ref_target(&on_failure["Destination"]), Some("AlarmTopic"));
    assert!(p.get("VpcConfig").is_none(), "its control-plane calls never go through the NAT");
}

#[test]
fn the_guardrails_protect_a_shop_for_minors_one_per_side_and_are_wired_to_the_model_callers() {
    let t = template();
    assert_eq!(t["Parameters"]["EnableGuardrail"]["Default"].as_str(), Some("true"));
    // One guardrail per side: each policy is enabled on exactly the side its guardrail serves (a disabled
    // side is not assessed, nor billed), so the output guardrail on the stream never assesses the prompt.
    for (name, input) in [("InputGuardrail", true), ("OutputGuardrail", false)] {
        let g = &t["Resources"][name];
        assert_eq!(g["Condition"].as_str(), Some("GuardrailOn"), "{name}");
        let p = &g["Properties"];
        for field in ["BlockedInputMessaging", "BlockedOutputsMessaging"] {
            assert!(literal(&p[field]).is_some_and(|m| !m.is_empty()), "{name} {field}");
        }
        let topics: Vec<&Value> = p["TopicPolicyConfig"]["TopicsConfig"].as_sequence().unwrap().iter().collect();
        assert!(topics.iter().all(|t| t["Type"].as_str() == Some("DENY")));
        let text = serde_yaml_ng::to_string(&topics).unwrap().to_lowercase();
        assert!(text.contains("scan") && text.contains("pirac"), "{name}: piracy and illegal scans are denied");
        assert!(text.contains("minor"), "{name}: age-inappropriate content for a minor's account is denied");
        let side =
            |v: &Value| (v["InputEnabled"].as_bool().unwrap_or(true), v["OutputEnabled"].as_bool().unwrap_or(true));
        for topic in &topics {
            assert_eq!(side(topic), (input, !input), "{name}: {topic:?}");
        }
        let pii: BTreeMap<&str, &Value> = p["SensitiveInformationPolicyConfig"]["PiiEntitiesConfig"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| (e["Type"].as_str().unwrap(), e))
            .collect();
        for kind in ["CREDIT_DEBIT_CARD_NUMBER", "PHONE"] {
            let e = pii[kind];
            assert_eq!(side(e), (input, !input), "{name}: {kind}");
            // Masked on input; Bedrock does not mask in asynchronous stream mode, so an answer blocks.
            assert_eq!(e["Action"].as_str(), Some(if input { "ANONYMIZE" } else { "BLOCK" }), "{name}: {kind}");
        }
        for f in p["ContentPolicyConfig"]["FiltersConfig"].as_sequence().unwrap() {
            let kind = f["Type"].as_str().unwrap();
            if kind == "PROMPT_ATTACK" {
                assert!(input, "prompt attacks are an input policy");
                assert_eq!(f["OutputStrength"].as_str(), Some("NONE"));
                continue;
            }
            assert_eq!(side(f), (input, !input), "{name}: {kind}");
            let strength = if input { "InputStrength" } else { "OutputStrength" };
            assert_ne!(f[strength].as_str(), Some("NONE"), "{name}: {kind} filters");
        }
        assert_eq!(t["Resources"][format!("{name}Version")]["Condition"].as_str(), Some("GuardrailOn"));
    }

    for setting in [("EnableGuardrail", "true"), ("EnableGuardrail", "false")] {
        let ev = Evaluated::new(&t, &[setting]);
        for f in ["ChatFunction", "PrefetchFunction"] {
            let body = ev.resource(f);
            let vars = &body["Properties"]["Environment"]["Variables"];
            let policies = serde_yaml_ng::to_string(&body["Properties"]["Policies"]).unwrap();
            if setting.1 == "true" {
                assert!(tagged(&vars["GUARDRAIL_ID"]).is_some() && tagged(&vars["GUARDRAIL_VERSION"]).is_some(), "{f}");
                assert!(
                    policies.contains("bedrock:ApplyGuardrail") && policies.contains("OutputGuardrail.GuardrailArn"),
                    "{f}"
                );
                if f == "ChatFunction" {
                    assert!(tagged(&vars["INPUT_GUARDRAIL_ID"]).is_some(), "{f} checks input");
                    assert!(policies.contains("InputGuardrail.GuardrailArn"), "{f}");
                }
            } else {
                assert_eq!((vars["GUARDRAIL_ID"].as_str(), vars["GUARDRAIL_VERSION"].as_str()), (Some(""), Some("")));
                assert!(!policies.contains("ApplyGuardrail"), "{f}");
                if f == "ChatFunction" {
                    assert_eq!(vars["INPUT_GUARDRAIL_ID"].as_str(), Some("off"));
                }
            }
        }
    }
}

#[test]
fn retrieval_and_service_endpoints_are_parameters_that_survive_a_deploy() {
    let t = template();
    for f in ["ChatFunction", "PrefetchFunction"] {
        let vars = &t["Resources"][f]["Properties"]["Environment"]["Variables"];
        for (var, param) in [
            ("PRODUCTS_URL", "ProductsUrl"),
            ("REVIEWS_URL", "ReviewsUrl"),
            ("RECOMMENDATIONS_URL", "RecommendationsUrl"),
            ("PROMOTIONS_URL", "PromotionsUrl"),
            ("OPENSEARCH_INDEX", "OpenSearchIndex"),
        ] {
            assert_eq!(ref_target(&vars[var]), Some(param), "{f}: {var}");
        }
        // The collection's endpoint when the stack creates it (signed for `aoss`), else the parameter's.
        for (on, url, signing) in
            [("true", "SearchCollection", "aoss"), ("false", "OpenSearchUrl", "OpenSearchSigning")]
        {
            let ev = Evaluated::new(&t, &[("CreateSearchCollection", on)]);
            let vars = ev.resource(f)["Properties"]["Environment"]["Variables"].clone();
            let mut refs = BTreeSet::new();
            references(&vars["OPENSEARCH_URL"], &mut refs);
            assert_eq!(refs, BTreeSet::from([url.to_owned()]), "{f} with CreateSearchCollection={on}");
            let sig = ref_target(&vars["OPENSEARCH_SIGV4"]).or(vars["OPENSEARCH_SIGV4"].as_str());
            assert_eq!(sig, Some(signing), "{f}");
        }
    }
    let access = sub_text(&t["Resources"]["SearchAccessPolicy"]["Properties"]["Policy"]).unwrap();
    assert!(access.contains("${ChatFunctionRole.Arn}") && access.contains("${PrefetchFunctionRole.Arn}"));
    assert!(!access.contains("aoss:*") && !access.contains("WriteDocument"), "the functions only read: {access}");
}

#[test]
fn the_guardrails_read_japanese_on_the_standard_tier_through_the_regions_guardrail_profile() {
    let t = template();
    // The Classic tier reads English, French and Spanish only; the Standard tier reads Japanese and needs a
    // guardrail profile, `apac.guardrail.v1:0` from ap-northeast-1 (Bedrock user guide: guardrails-tiers,
    // guardrails-supported-languages, guardrails-cross-region-support).
    let profile = &t["Parameters"]["GuardrailProfileId"];
    assert_eq!(profile["Default"].as_str(), Some("apac.guardrail.v1:0"));
    for name in ["InputGuardrail", "OutputGuardrail"] {
        let p = &t["Resources"][name]["Properties"];
        assert_eq!(
            p["ContentPolicyConfig"]["ContentFiltersTierConfig"]["TierName"].as_str(),
            Some("STANDARD"),
            "{name}"
        );
        assert_eq!(p["TopicPolicyConfig"]["TopicsTierConfig"]["TierName"].as_str(), Some("STANDARD"), "{name}");
        let arn =
            sub_text(&p["CrossRegionConfig"]["GuardrailProfileArn"]).unwrap_or_else(|| panic!("{name}: no profile"));
        assert_eq!(
            arn,
            "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:guardrail-profile/${GuardrailProfileId}",
            "{name}: the profile of the stack's own Region"
        );
        // Prompt attacks are a content filter: on the Standard tier with the rest.
        let filters = serde_yaml_ng::to_string(&p["ContentPolicyConfig"]["FiltersConfig"]).unwrap();
        assert_eq!(filters.contains("PROMPT_ATTACK"), name == "InputGuardrail", "{name}");
        for topic in p["TopicPolicyConfig"]["TopicsConfig"].as_sequence().unwrap() {
            let examples: Vec<&str> =
                topic["Examples"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
            assert!(examples.len() <= 5 && examples.iter().all(|e| e.chars().count() <= 100), "{name}: topic limits");
            assert!(examples.iter().any(|e| !e.is_ascii()), "{name}: {:?} has a Japanese example", topic["Name"]);
        }
    }
    // Applying a Standard-tier guardrail is authorized on the profile in every destination Region too.
    let ev = Evaluated::new(&t, &[("EnableGuardrail", "true")]);
    for f in ["ChatFunction", "PrefetchFunction"] {
        let policies = serde_yaml_ng::to_string(&ev.resource(f)["Properties"]["Policies"]).unwrap();
        assert!(
            policies.contains(":bedrock:*:${AWS::AccountId}:guardrail-profile/${GuardrailProfileId}"),
            "{f}: {policies}"
        );
    }
}

#[test]
fn the_model_callers_may_subscribe_the_account_to_a_third_party_model_on_first_use() {
    let t = template();
    // The first call to an Anthropic model subscribes the account through AWS Marketplace as the caller
    // (Bedrock user guide, "Request access to models").
    for f in ["ChatFunction", "PrefetchFunction"] {
        let policies = serde_yaml_ng::to_string(&t["Resources"][f]["Properties"]["Policies"]).unwrap();
        for action in ["aws-marketplace:Subscribe", "aws-marketplace:Unsubscribe", "aws-marketplace:ViewSubscriptions"]
        {
            assert!(policies.contains(action), "{f} lacks {action}");
        }
    }
}

#[test]
fn the_local_guardrail_blocks_every_japanese_example_of_the_deployed_denied_topics() {
    use mangaassist_local::emulators::guardrail::{Direction, assess};
    let t = template();
    let mut checked = 0;
    for name in ["InputGuardrail", "OutputGuardrail"] {
        for topic in t["Resources"][name]["Properties"]["TopicPolicyConfig"]["TopicsConfig"].as_sequence().unwrap() {
            for example in topic["Examples"].as_sequence().unwrap().iter().filter_map(Value::as_str) {
                if example.is_ascii() {
                    continue;
                }
                for direction in [Direction::Input, Direction::Output] {
                    assert!(assess(direction, example).blocked, "{name}: the emulator lets {example:?} through");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "Japanese examples checked: {checked}");
}
