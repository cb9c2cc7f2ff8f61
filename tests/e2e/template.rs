//! The SAM template read as data: the mistakes `cfn-lint` lets through and a deployment would find late.
//!
//! A binary name that no crate builds, a route aimed at a missing integration, a WebSocket API that does
//! not route on `action`, an alarm on a metric the code never publishes, a schedule in UTC instead of
//! Asia/Tokyo. CloudFormation's short tags (`!Ref`, `!Sub`, `!GetAtt`) parse as tagged YAML values; the
//! checks read through them where the tag does not matter and insist on plain strings where it does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mangaassist_core::metrics;
use serde_yaml_ng::Value;

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn template() -> Value {
    let path = workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The logical ids and bodies of the resources of type `kind`.
pub(crate) fn resources<'t>(template: &'t Value, kind: &str) -> Vec<(&'t str, &'t Value)> {
    let all = template["Resources"].as_mapping().expect("the template has Resources");
    all.iter()
        .filter(|(_, body)| body["Type"].as_str() == Some(kind))
        .map(|(id, body)| (id.as_str().expect("logical ids are strings"), body))
        .collect()
}

/// A plain string, not a tagged value such as `!Ref X` (whose text would be a logical id, not the value).
pub(crate) fn literal(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The tag (`!Sub`, `!Ref`, ...) and the tagged value, or `None` for an untagged value.
pub(crate) fn tagged(v: &Value) -> Option<(String, &Value)> {
    match v {
        Value::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

/// The logical id a `!Ref X` names.
pub(crate) fn ref_target(v: &Value) -> Option<&str> {
    match tagged(v) {
        Some((tag, value)) if tag == "!Ref" => value.as_str(),
        _ => None,
    }
}

/// The binaries the workspace's function crates build: each `[[bin]]` name in `functions/*/Cargo.toml`,
/// or the package name when a crate has `src/main.rs` and no `[[bin]]` table.
fn function_binaries() -> BTreeSet<String> {
    let mut bins = BTreeSet::new();
    let dir = workspace_root().join("functions");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let crate_dir = entry.unwrap().path();
        let Ok(manifest) = std::fs::read_to_string(crate_dir.join("Cargo.toml")) else { continue };
        let (mut table, mut package, mut explicit) = (String::new(), None, false);
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                table = line.to_owned();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            if key.trim() != "name" {
                continue;
            }
            let value = value.trim().trim_matches('"').to_owned();
            match table.as_str() {
                "[[bin]]" => {
                    explicit = true;
                    bins.insert(value);
                }
                "[package]" => package = Some(value),
                _ => {}
            }
        }
        if let Some(package) = package.filter(|_| !explicit && crate_dir.join("src/main.rs").exists()) {
            bins.insert(package);
        }
    }
    bins
}

#[test]
fn every_function_builds_a_binary_that_the_workspace_defines() {
    let t = template();
    let bins = function_binaries();
    assert!(bins.contains("chat") && bins.contains("throughput"), "{bins:?}");
    let functions = resources(&t, "AWS::Serverless::Function");
    assert!(!functions.is_empty());
    for (id, f) in functions {
        let Some(binary) = f["Metadata"]["BuildProperties"]["Binary"].as_str() else { continue };
        assert!(bins.contains(binary), "{id} builds binary {binary:?}, but the workspace builds only {bins:?}");
        assert_eq!(f["Metadata"]["BuildMethod"].as_str(), Some("rust-cargolambda"), "{id}");
    }
}

#[test]
fn every_websocket_route_targets_an_integration_of_the_template() {
    let t = template();
    let integrations: BTreeSet<&str> =
        resources(&t, "AWS::ApiGatewayV2::Integration").into_iter().map(|(id, _)| id).collect();
    let routes = resources(&t, "AWS::ApiGatewayV2::Route");
    let keys: BTreeSet<&str> = routes.iter().filter_map(|(_, r)| r["Properties"]["RouteKey"].as_str()).collect();
    for key in ["$connect", "$disconnect", "sendMessage", "typing", "$default"] {
        assert!(keys.contains(key), "no {key} route: {keys:?}");
    }
    let apis: BTreeSet<&str> = resources(&t, "AWS::ApiGatewayV2::Api").into_iter().map(|(id, _)| id).collect();
    for (id, route) in routes {
        let api = ref_target(&route["Properties"]["ApiId"]);
        assert!(api.is_some_and(|a| apis.contains(a)), "{id}: ApiId {api:?} is not an API of the template");
        let target = &route["Properties"]["Target"];
        let text = match tagged(target) {
            Some((tag, value)) if tag == "!Sub" => value.as_str(),
            Some((tag, _)) => panic!("{id}: Target uses {tag}; expected !Sub integrations/${{Integration}}"),
            None => literal(target),
        };
        let Some(text) = text else { panic!("{id} has no Target") };
        let integration = text
            .strip_prefix("integrations/${")
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{id}: Target {text:?} is not integrations/${{Integration}}"));
        assert!(integrations.contains(integration), "{id} targets {integration}, which is not an integration");
    }
}

#[test]
fn the_websocket_api_routes_on_the_action_field() {
    let t = template();
    let apis: Vec<_> = resources(&t, "AWS::ApiGatewayV2::Api")
        .into_iter()
        .filter(|(_, api)| api["Properties"]["ProtocolType"].as_str() == Some("WEBSOCKET"))
        .collect();
    assert_eq!(apis.len(), 1);
    for (id, api) in apis {
        assert_eq!(literal(&api["Properties"]["RouteSelectionExpression"]), Some("$request.body.action"), "{id}");
    }
}

#[test]
fn every_alarm_watches_a_metric_the_code_publishes_over_all_traffic() {
    let t = template();
    let alarms = resources(&t, "AWS::CloudWatch::Alarm");
    assert!(alarms.len() >= 6, "one alarm per design threshold: {}", alarms.len());
    // Metrics the template itself makes from a log line (a metric filter) are published too.
    let filtered: BTreeSet<&str> = resources(&t, "AWS::Logs::MetricFilter")
        .into_iter()
        .flat_map(|(_, f)| f["Properties"]["MetricTransformations"].as_sequence().into_iter().flatten())
        .filter(|m| literal(&m["MetricNamespace"]) == Some(metrics::NAMESPACE))
        .filter_map(|m| literal(&m["MetricName"]))
        .collect();
    for (id, alarm) in &alarms {
        let p = &alarm["Properties"];
        assert_eq!(p["TreatMissingData"].as_str(), Some("notBreaching"), "{id}");
        if let Some(queries) = p["Metrics"].as_sequence() {
            // Metric math: every metric of ours it reads is published (over all traffic), and it returns one
            // series. Lambda's own metrics are per function (see deploy.rs).
            for q in queries {
                if let Some(m) = q.get("MetricStat") {
                    if literal(&m["Metric"]["Namespace"]) == Some("AWS/Lambda") {
                        continue;
                    }
                    assert_eq!(literal(&m["Metric"]["Namespace"]), Some(metrics::NAMESPACE), "{id}");
                    let name = literal(&m["Metric"]["MetricName"]).unwrap_or_default();
                    assert!(metrics::ALL.contains(&name), "{id} reads {name:?}, which metrics.rs does not define");
                }
            }
            assert_eq!(queries.iter().filter(|q| q["ReturnData"].as_bool() == Some(true)).count(), 1, "{id}");
            continue;
        }
        if literal(&p["Namespace"]) == Some("AWS/Lambda") {
            continue;
        }
        assert_eq!(literal(&p["Namespace"]), Some(metrics::NAMESPACE), "{id}");
        let name = literal(&p["MetricName"]).unwrap_or_else(|| panic!("{id} has no literal MetricName"));
        assert!(
            metrics::ALL.contains(&name) || filtered.contains(name),
            "{id} watches {name:?}, which crates/core/src/metrics.rs does not define"
        );
        // The record's empty dimension set publishes the aggregate; any dimension would narrow the alarm.
        assert!(p.get("Dimensions").is_none(), "{id} should watch the dimension-free aggregate");
        assert!(p.get("ExtendedStatistic").is_some() != p.get("Statistic").is_some(), "{id}: one statistic");
    }
    let watched: BTreeSet<&str> = alarms
        .iter()
        .flat_map(|(_, a)| {
            let p = &a["Properties"];
            let math = p["Metrics"].as_sequence().into_iter().flatten().map(|q| &q["MetricStat"]["Metric"]);
            std::iter::once(p).chain(math).filter_map(|m| m["MetricName"].as_str())
        })
        .collect();
    let table: BTreeSet<&str> = metrics::ALARMED.iter().copied().collect();
    assert!(table.is_subset(&watched), "every metric of the design's alarm table has an alarm: {watched:?}");
}

#[test]
fn the_first_token_alarm_still_drives_the_throughput_function() {
    let t = template();
    let alarms: BTreeSet<&str> =
        resources(&t, "AWS::CloudWatch::Alarm")
            .into_iter()
            .filter(|(_, a)| {
                let p = &a["Properties"];
                p["MetricName"].as_str() == Some(metrics::FIRST_TOKEN_LATENCY_MS)
                    || p["Metrics"].as_sequence().into_iter().flatten().any(|q| {
                        q["MetricStat"]["Metric"]["MetricName"].as_str() == Some(metrics::FIRST_TOKEN_LATENCY_MS)
                    })
            })
            .map(|(id, _)| id)
            .collect();
    assert!(!alarms.is_empty(), "a first-token alarm exists");
    let forwards = resources(&t, "AWS::Events::Rule").into_iter().any(|(_, rule)| {
        let p = &rule["Properties"];
        let watches = p["EventPattern"]["resources"].as_sequence().into_iter().flatten().any(|r| {
            matches!(tagged(r), Some((tag, v)) if tag == "!GetAtt"
                && v.as_str().and_then(|s| s.strip_suffix(".Arn")).is_some_and(|a| alarms.contains(a)))
        });
        let targets = p["Targets"].as_sequence().into_iter().flatten().any(|target| {
            matches!(tagged(&target["Arn"]), Some((tag, v)) if tag == "!GetAtt"
                && v.as_str() == Some("ThroughputFunction.Arn"))
        });
        watches && targets
    });
    assert!(forwards, "no EventBridge rule sends the first-token alarm ({alarms:?}) to ThroughputFunction");
}

#[test]
fn every_schedule_runs_on_tokyo_time() {
    let t = template();
    let schedules = resources(&t, "AWS::Scheduler::Schedule");
    assert!(schedules.len() >= 3);
    for (id, s) in schedules {
        assert_eq!(literal(&s["Properties"]["ScheduleExpressionTimezone"]), Some("Asia/Tokyo"), "{id}");
    }
}

#[test]
fn the_dashboard_graphs_only_published_metrics() {
    let t = template();
    let dashboards = resources(&t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1);
    for (id, d) in dashboards {
        let body = d["Properties"]["DashboardBody"].as_str().unwrap_or_else(|| panic!("{id} has no body"));
        // `!Sub` placeholders (`${AWS::Region}`, `${BudgetTotalTokens}`, `${X.Arn}`) become a number, which
        // is valid JSON both inside and outside a string.
        let mut json = String::new();
        let mut rest = body;
        while let Some(start) = rest.find("${") {
            json.push_str(&rest[..start]);
            json.push('1');
            let end = rest[start..].find('}').unwrap_or_else(|| panic!("{id}: unclosed ${{"));
            rest = &rest[start + end + 1..];
        }
        json.push_str(rest);
        let body: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{id}: {e}"));
        let mut named = BTreeSet::new();
        for widget in body["widgets"].as_array().unwrap() {
            for line in widget["properties"]["metrics"].as_array().into_iter().flatten() {
                let line = line.as_array().unwrap();
                if let [ns, name, ..] = line.as_slice()
                    && let (Some(ns), Some(name)) = (ns.as_str(), name.as_str())
                {
                    assert_eq!(ns, metrics::NAMESPACE, "{id}");
                    named.insert(name.to_owned());
                }
                if let Some(expr) = line[0]["expression"].as_str() {
                    let (_, after) = expr.split_once("MetricName=\"").unwrap_or_else(|| panic!("{expr}"));
                    named.insert(after.split('"').next().unwrap_or_default().to_owned());
                }
            }
        }
        for name in &named {
            assert!(metrics::ALL.contains(&name.as_str()), "{id} graphs {name:?}, which is not published");
        }
        assert_eq!(named.len(), metrics::ALL.len(), "{id} graphs every metric: {named:?}");
    }
}

/// The text of a `!Sub` string.
pub(crate) fn sub_text(v: &Value) -> Option<&str> {
    match tagged(v) {
        Some((tag, value)) if tag == "!Sub" => value.as_str(),
        _ => None,
    }
}

#[test]
fn bedrock_permissions_name_the_profiles_and_the_base_models_in_every_region() {
    let t = template();
    let params = &t["Parameters"];
    let (model, base) =
        (params["ModelId"]["Default"].as_str().unwrap(), params["BaseModelId"]["Default"].as_str().unwrap());
    assert_eq!(model, format!("jp.{base}"), "the chat model defaults to the Japan profile of the base model");
    assert_eq!(base, mangaassist_core::models::CLAUDE_HAIKU_4_5);
    let small = params["SmallModelId"]["Default"].as_str().unwrap();
    assert_eq!(small, format!("jp.{}", params["SmallBaseModelId"]["Default"].as_str().unwrap()));
    for id in [model, small] {
        assert!(mangaassist_core::models::check(id).is_ok(), "{id} is an active model");
    }

    let chat = &t["Resources"]["ChatFunction"]["Properties"]["Policies"];
    let statements: Vec<&Value> = chat
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["Statement"].as_sequence())
        .flatten()
        .filter(|s| {
            s["Action"]
                .as_sequence()
                .is_some_and(|a| a.iter().any(|a| a.as_str().is_some_and(|a| a.starts_with("bedrock:Invoke"))))
                || s["Action"].as_str().is_some_and(|a| a.starts_with("bedrock:Invoke"))
        })
        .collect();
    assert_eq!(statements.len(), 1, "one statement grants model invocation");
    let actions: Vec<&str> = statements[0]["Action"].as_sequence().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(actions, ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]);
    let resources: Vec<&str> = statements[0]["Resource"].as_sequence().unwrap().iter().filter_map(sub_text).collect();
    for want in [
        ":inference-profile/${ModelId}",
        ":inference-profile/${SmallModelId}",
        ":bedrock:*::foundation-model/${BaseModelId}",
        ":bedrock:*::foundation-model/${SmallBaseModelId}",
    ] {
        assert!(resources.iter().any(|r| r.ends_with(want)), "missing {want}: {resources:?}");
    }
    assert!(
        !resources.iter().any(|r| r.ends_with("inference-profile/*") || r.ends_with("foundation-model/*")),
        "no grant on every model: {resources:?}"
    );
}

#[test]
fn connect_alone_is_authorized_by_the_token_authorizer_and_only_the_auth_functions_read_the_guest_key() {
    let t = template();
    let authorizers = resources(&t, "AWS::ApiGatewayV2::Authorizer");
    assert_eq!(authorizers.len(), 1, "one WebSocket authorizer");
    let (auth_id, auth) = authorizers[0];
    let p = &auth["Properties"];
    assert_eq!(literal(&p["AuthorizerType"]), Some("REQUEST"));
    let sources: Vec<&str> = p["IdentitySource"].as_sequence().unwrap().iter().filter_map(literal).collect();
    assert_eq!(sources, ["route.request.querystring.token"], "browsers pass the token in the query string");
    assert!(sub_text(&p["AuthorizerUri"]).unwrap().contains("${AuthorizerFunction.Arn}"));

    for (id, route) in resources(&t, "AWS::ApiGatewayV2::Route") {
        let rp = &route["Properties"];
        if literal(&rp["RouteKey"]) == Some("$connect") {
            assert_eq!(literal(&rp["AuthorizationType"]), Some("CUSTOM"), "{id}");
            assert_eq!(ref_target(&rp["AuthorizerId"]), Some(auth_id), "{id}");
        } else {
            assert_eq!(literal(&rp["AuthorizationType"]), Some("NONE"), "{id}: only $connect takes an authorizer");
        }
    }

    let may_invoke = resources(&t, "AWS::Lambda::Permission").into_iter().any(|(_, perm)| {
        let pp = &perm["Properties"];
        ref_target(&pp["FunctionName"]) == Some("AuthorizerFunction")
            && sub_text(&pp["SourceArn"]).is_some_and(|s| s.contains("/authorizers/"))
    });
    assert!(may_invoke, "API Gateway may invoke the authorizer");

    let secret = &t["Resources"]["GuestTokenSecret"];
    assert_eq!(secret["Type"].as_str(), Some("AWS::SecretsManager::Secret"));
    assert!(secret["Properties"]["SecretString"].is_null(), "the key is generated, never written in the template");
    assert!(!secret["Properties"]["GenerateSecretString"].is_null());

    let readers: BTreeSet<&str> = resources(&t, "AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, f)| {
            serde_yaml_ng::to_string(&f["Properties"]["Policies"]).unwrap().contains("secretsmanager:GetSecretValue")
        })
        .map(|(id, _)| id)
        .collect();
    assert_eq!(readers, BTreeSet::from(["AuthorizerFunction", "TokenFunction"]));
}
