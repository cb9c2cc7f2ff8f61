//! The order CloudFormation creates the stack in, derived from the template it actually receives (the SAM
//! transform of `infra/template.yaml`, `scripts/sam-transform`), for each parameter set a deploy uses.
//!
//! CloudFormation creates a resource only after everything it names through `Ref`, `Fn::GetAtt`, `Fn::Sub`
//! or `DependsOn`; everything else may be created in parallel, in any order. A resource that refers to
//! another *by name* (a string, not an intrinsic) gets no such guarantee, and the first deploy fails when the
//! name does not exist yet. The rules below are the cases this stack has, each from what the service checks at
//! creation:
//!
//! - a WebSocket stage's `RouteSettings` are keyed by route key: API Gateway refuses the stage ("Unable to find
//!   Route by key ... within the provided RouteSettings") until each such route exists;
//! - a stage with access logging needs the account's CloudWatch role set ("CloudWatch Logs role ARN must be
//!   set in account settings"): when the stack sets it (`AWS::ApiGateway::Account`), that comes first;
//! - a function logs to the group its `LoggingConfig` names; a group the stack names after a function (the
//!   default `/aws/lambda/<function>`) can be created first by an early invocation, and the stack's own create
//!   then fails as "already exists";
//! - an OpenSearch Serverless collection is refused until an encryption policy names it;
//! - Lambda checks a function's role at creation: tracing needs X-Ray writes, a VPC function needs the ENI
//!   actions, an asynchronous-invoke destination needs the role to be allowed to send there.
//!
//! Each rule is also checked to *find* its cases (a rule that matches nothing proves nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::template::workspace_root;

/// The template CloudFormation receives for one samconfig environment, and that environment's parameters.
pub(crate) struct Deployed {
    pub(crate) env: String,
    pub(crate) template: Value,
    /// Every parameter's value: the override, else the template's default.
    pub(crate) params: BTreeMap<String, String>,
}

/// Runs the SAM transform for `[<env>.deploy.parameters]` of samconfig.toml (`scripts/sam-transform`).
pub(crate) fn transformed(env: &str) -> Deployed {
    let root = workspace_root();
    let out = Command::new("python3")
        .arg(root.join("scripts/sam-transform"))
        .args(["--config-env", env])
        .output()
        .unwrap_or_else(|e| panic!("python3 scripts/sam-transform: {e}"));
    assert!(
        out.status.success(),
        "the SAM transform of the {env} parameter set failed (cfn-lint installed? python3 -m pip install cfn-lint):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let template: Value = serde_json::from_slice(&out.stdout).unwrap();
    let overrides = template["Metadata"]["MangaAssistParameters"]["overrides"].clone();
    Deployed::new(env, template, overrides.as_object().into_iter().flatten().map(|(k, v)| (k.as_str(), v)))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Deployed {
    fn new<'a>(env: &str, template: Value, overrides: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Self {
        let mut params: BTreeMap<String, String> = template["Parameters"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, p)| Some((k.clone(), scalar(&p["Default"])?)))
            .collect();
        for (k, v) in overrides {
            params.insert(k.to_owned(), scalar(v).unwrap());
        }
        Self { env: env.to_owned(), template, params }
    }

    /// The same template under other parameter values (the transform does not depend on them).
    pub(crate) fn with(&self, settings: &[(&str, &str)]) -> Self {
        let mut params = self.params.clone();
        for (k, v) in settings {
            assert!(params.contains_key(*k) || self.template["Parameters"].get(*k).is_some(), "no parameter {k}");
            params.insert((*k).to_owned(), (*v).to_owned());
        }
        let env = format!("{} with {settings:?}", self.env);
        Self { env, template: self.template.clone(), params }
    }

    fn value(&self, v: &Value) -> String {
        if let Some(name) = v.get("Ref").and_then(Value::as_str) {
            return self.params.get(name).cloned().unwrap_or_else(|| panic!("{}: no value for {name}", self.env));
        }
        scalar(v).unwrap_or_else(|| panic!("not a scalar in a condition: {v}"))
    }

    fn holds(&self, expr: &Value) -> bool {
        let (f, args) = expr.as_object().and_then(|o| o.iter().next()).unwrap_or_else(|| panic!("condition {expr}"));
        let list = || args.as_array().unwrap().iter();
        match f.as_str() {
            "Fn::Equals" => self.value(&args[0]) == self.value(&args[1]),
            "Fn::Not" => !self.holds(&args[0]),
            "Fn::And" => list().all(|c| self.holds(c)),
            "Fn::Or" => list().any(|c| self.holds(c)),
            "Condition" => self.condition(args.as_str().unwrap()),
            other => panic!("unsupported condition function {other}"),
        }
    }

    pub(crate) fn condition(&self, name: &str) -> bool {
        let c = &self.template["Conditions"][name];
        assert!(!c.is_null(), "no condition {name}");
        self.holds(c)
    }

    /// `v` with every `Fn::If` decided and every `Ref: AWS::NoValue` removed; `None` when `v` is removed.
    pub(crate) fn resolve(&self, v: &Value) -> Option<Value> {
        match v {
            Value::Object(o) if o.len() == 1 && o.contains_key("Fn::If") => {
                let args = o["Fn::If"].as_array().unwrap();
                self.resolve(if self.condition(args[0].as_str().unwrap()) { &args[1] } else { &args[2] })
            }
            Value::Object(o) if o.get("Ref").and_then(Value::as_str) == Some("AWS::NoValue") => None,
            Value::Object(o) => {
                Some(Value::Object(o.iter().filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?))).collect()))
            }
            Value::Array(a) => Some(Value::Array(a.iter().filter_map(|i| self.resolve(i)).collect())),
            other => Some(other.clone()),
        }
    }

    /// The resources this deploy creates, as it creates them.
    pub(crate) fn resources(&self) -> BTreeMap<String, Value> {
        self.template["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Condition"].as_str().is_none_or(|c| self.condition(c)))
            .map(|(id, r)| (id.clone(), self.resolve(r).unwrap()))
            .collect()
    }
}

/// The logical ids `v` names through `Ref`, `Fn::GetAtt` and `Fn::Sub` (parameters and pseudo parameters
/// left out by the caller).
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("Ref") => {
            if let Some(s) = o["Ref"].as_str() {
                out.insert(s.to_owned());
            }
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::GetAtt") => match &o["Fn::GetAtt"] {
            Value::String(s) => {
                out.insert(s.split('.').next().unwrap_or_default().to_owned());
            }
            Value::Array(parts) => {
                out.insert(parts[0].as_str().unwrap_or_default().to_owned());
            }
            _ => {}
        },
        Value::Object(o) if o.len() == 1 && o.contains_key("Fn::Sub") => match &o["Fn::Sub"] {
            Value::String(text) => sub_references(text, &BTreeSet::new(), out),
            Value::Array(parts) => {
                let vars: BTreeSet<String> =
                    parts[1].as_object().into_iter().flatten().map(|(k, _)| k.clone()).collect();
                sub_references(parts[0].as_str().unwrap_or_default(), &vars, out);
                references(&parts[1], out);
            }
            _ => {}
        },
        Value::Object(o) => o.values().for_each(|v| references(v, out)),
        Value::Array(a) => a.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

fn sub_references(text: &str, vars: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
        let name = &rest[start + 2..start + end];
        rest = &rest[start + end + 1..];
        if !name.starts_with('!') && !vars.contains(name) {
            out.insert(name.split('.').next().unwrap_or_default().to_owned());
        }
    }
}

/// What CloudFormation waits for: each resource's direct dependencies, among the resources created.
pub(crate) struct Order {
    deps: BTreeMap<String, BTreeSet<String>>,
}

impl Order {
    pub(crate) fn of(d: &Deployed) -> Self {
        let resources = d.resources();
        let mut deps = BTreeMap::new();
        for (id, body) in &resources {
            let mut refs = BTreeSet::new();
            references(&body["Properties"], &mut refs);
            match &body["DependsOn"] {
                Value::String(s) => {
                    refs.insert(s.clone());
                }
                Value::Array(a) => refs.extend(a.iter().filter_map(|s| s.as_str().map(str::to_owned))),
                _ => {}
            }
            refs.retain(|r| !r.starts_with("AWS::") && d.template["Parameters"].get(r).is_none());
            let missing: Vec<&String> = refs.iter().filter(|r| !resources.contains_key(*r)).collect();
            assert!(missing.is_empty(), "{}: {id} refers to {missing:?}, which this deploy does not create", d.env);
            deps.insert(id.clone(), refs);
        }
        let order = Self { deps };
        for id in order.deps.keys() {
            assert!(!order.before(id).contains(id), "{}: {id} depends on itself (a cycle)", d.env);
        }
        order
    }

    /// Everything that is created before `id`.
    pub(crate) fn before(&self, id: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = self.deps.get(id).into_iter().flatten().map(String::as_str).collect();
        while let Some(next) = todo.pop() {
            if seen.insert(next.to_owned()) {
                todo.extend(self.deps.get(next).into_iter().flatten().map(String::as_str));
            }
        }
        seen
    }

    /// The length of the longest chain of dependencies under `id` (0: created in the first wave).
    pub(crate) fn depth(&self, id: &str) -> usize {
        fn go(o: &Order, id: &str, memo: &mut BTreeMap<String, usize>) -> usize {
            if let Some(d) = memo.get(id) {
                return *d;
            }
            let d = o.deps.get(id).into_iter().flatten().map(|p| go(o, p, memo) + 1).max().unwrap_or(0);
            memo.insert(id.to_owned(), d);
            d
        }
        go(self, id, &mut BTreeMap::new())
    }
}

/// A resource that needs another to exist first, without naming it through an intrinsic.
#[derive(Debug)]
pub(crate) struct NameRef {
    rule: &'static str,
    from: String,
    to: String,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) if o.len() == 1 => match &o.get("Fn::Sub") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn of_type<'r>(resources: &'r BTreeMap<String, Value>, kind: &str) -> impl Iterator<Item = (&'r String, &'r Value)> {
    resources.iter().filter(move |(_, r)| r["Type"].as_str() == Some(kind))
}

fn reference(v: &Value) -> Option<String> {
    let mut refs = BTreeSet::new();
    references(v, &mut refs);
    (refs.len() == 1).then(|| refs.into_iter().next().unwrap_or_default())
}

/// Does `role` (its inline policies and managed policy ARNs) allow `action` (case-insensitive, `*` suffix
/// wildcards), or carry a managed policy of `managed`?
fn role_allows(role: &Value, action: &str, managed: &[&str]) -> bool {
    let p = &role["Properties"];
    let arns = serde_json::to_string(&p["ManagedPolicyArns"]).unwrap_or_default();
    if managed.iter().any(|m| arns.contains(m)) {
        return true;
    }
    let matches = |a: &str| {
        let (a, want) = (a.to_ascii_lowercase(), action.to_ascii_lowercase());
        a == want || a.strip_suffix('*').is_some_and(|prefix| want.starts_with(prefix))
    };
    p["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|pol| pol["PolicyDocument"]["Statement"].as_array().into_iter().flatten())
        .any(|s| {
            s["Effect"].as_str() == Some("Allow")
                && match &s["Action"] {
                    Value::String(a) => matches(a),
                    Value::Array(a) => a.iter().filter_map(Value::as_str).any(matches),
                    _ => false,
                }
        })
}

/// Every by-name requirement of this deploy, per rule; a requirement that cannot be met at all (a route key
/// with no route, a role that lacks the permission) is an error message.
pub(crate) fn name_refs(d: &Deployed) -> (Vec<NameRef>, Vec<String>) {
    let r = d.resources();
    let (mut refs, mut errors) = (Vec::new(), Vec::new());
    let mut need = |rule, from: &str, to: &str| refs.push(NameRef { rule, from: from.to_owned(), to: to.to_owned() });

    // Stage route settings, keyed by route key, and the account's logging role.
    let accounts: Vec<&String> = of_type(&r, "AWS::ApiGateway::Account").map(|(id, _)| id).collect();
    for (stage, body) in of_type(&r, "AWS::ApiGatewayV2::Stage") {
        let api = reference(&body["Properties"]["ApiId"]);
        for key in body["Properties"]["RouteSettings"].as_object().into_iter().flatten().map(|(k, _)| k) {
            let route = of_type(&r, "AWS::ApiGatewayV2::Route").find(|(_, rt)| {
                rt["Properties"]["RouteKey"].as_str() == Some(key.as_str())
                    && reference(&rt["Properties"]["ApiId"]) == api
            });
            match route {
                Some((route, _)) => need("route settings are keyed by an existing route", stage, route),
                None => errors.push(format!("{stage}: RouteSettings name {key:?}, which no route of its API has")),
            }
        }
        if !body["Properties"]["AccessLogSettings"].is_null() {
            for account in &accounts {
                need("access logging needs the account's CloudWatch role set", stage, account);
            }
        }
    }

    // Log groups: the one a function names, and none named after a function.
    let groups: BTreeMap<String, &String> = of_type(&r, "AWS::Logs::LogGroup")
        .filter_map(|(id, g)| Some((text_of(&g["Properties"]["LogGroupName"])?, id)))
        .collect();
    for (f, body) in of_type(&r, "AWS::Lambda::Function") {
        let named = &body["Properties"]["LoggingConfig"]["LogGroup"];
        match (reference(named).filter(|g| r.contains_key(g)), text_of(named)) {
            (Some(group), _) => need("a function logs to the group it names", f, &group),
            (None, Some(name)) => {
                if let Some(group) = groups.get(&name) {
                    need("a function logs to the group it names", f, group);
                }
            }
            (None, None) => {}
        }
    }
    for (group, body) in of_type(&r, "AWS::Logs::LogGroup") {
        let mut named = BTreeSet::new();
        references(&body["Properties"]["LogGroupName"], &mut named);
        let functions =
            named.iter().filter(|n| r.get(n.as_str()).is_some_and(|b| b["Type"] == "AWS::Lambda::Function"));
        for f in functions {
            errors.push(format!(
                "{group} is named after {f}: an invocation of {f} before the group exists creates it, and the stack's create fails"
            ));
        }
    }

    // OpenSearch Serverless: an encryption policy naming the collection.
    for (c, body) in of_type(&r, "AWS::OpenSearchServerless::Collection") {
        let name = text_of(&body["Properties"]["Name"]).unwrap_or_default();
        let policy = of_type(&r, "AWS::OpenSearchServerless::SecurityPolicy").find(|(_, p)| {
            p["Properties"]["Type"].as_str() == Some("encryption")
                && text_of(&p["Properties"]["Policy"]).is_some_and(|t| t.contains(&format!("collection/{name}")))
        });
        match policy {
            Some((policy, _)) => need("a collection needs an encryption policy that names it", c, policy),
            None => errors.push(format!("{c}: no encryption policy names collection/{name}")),
        }
    }

    // Lambda's checks of the execution role at creation.
    for (f, body) in of_type(&r, "AWS::Lambda::Function") {
        let Some(role) = reference(&body["Properties"]["Role"]).filter(|id| r.contains_key(id)) else { continue };
        let role_body = &r[&role];
        let mut role_needs = |what: &str, action: &str, managed: &[&str]| {
            if role_allows(role_body, action, managed) {
                need("Lambda checks the execution role at creation", f, &role);
            } else {
                errors.push(format!("{f}: {what}, but {role} does not allow {action}"));
            }
        };
        if body["Properties"]["TracingConfig"]["Mode"].as_str() == Some("Active") {
            role_needs(
                "active tracing",
                "xray:PutTraceSegments",
                &["AWSXrayWriteOnlyAccess", "AWSXRayDaemonWriteAccess"],
            );
        }
        if !body["Properties"]["VpcConfig"].is_null() {
            role_needs("a VPC function", "ec2:CreateNetworkInterface", &["AWSLambdaVPCAccessExecutionRole"]);
        }
    }
    for (config, body) in of_type(&r, "AWS::Lambda::EventInvokeConfig") {
        let Some(f) = reference(&body["Properties"]["FunctionName"]) else { continue };
        let Some(role) = reference(&r[&f]["Properties"]["Role"]).filter(|id| r.contains_key(id)) else { continue };
        for outcome in ["OnFailure", "OnSuccess"] {
            let dest = &body["Properties"]["DestinationConfig"][outcome]["Destination"];
            let Some(target) = reference(dest).filter(|t| r.contains_key(t)) else { continue };
            let action = match r[&target]["Type"].as_str() {
                Some("AWS::SNS::Topic") => "sns:Publish",
                Some("AWS::SQS::Queue") => "sqs:SendMessage",
                Some("AWS::Lambda::Function") => "lambda:InvokeFunction",
                _ => continue,
            };
            if role_allows(&r[&role], action, &[]) {
                need("a destination the role may send to", config, &role);
            } else {
                errors.push(format!("{config}: sends to {target}, but {role} does not allow {action}"));
            }
        }
    }
    (refs, errors)
}

/// The deploy's by-name requirements that CloudFormation's order does not guarantee, as messages.
pub(crate) fn violations(d: &Deployed) -> Vec<String> {
    let order = Order::of(d);
    let (refs, mut errors) = name_refs(d);
    for n in refs {
        if !order.before(&n.from).contains(&n.to) {
            errors.push(format!(
                "{} ({}) may be created before {} ({}), which it needs: {}",
                n.from,
                order.depth(&n.from),
                n.to,
                order.depth(&n.to),
                n.rule
            ));
        }
    }
    errors.into_iter().map(|e| format!("{}: {e}", d.env)).collect()
}

#[test]
fn the_first_deploy_of_dev_and_prod_creates_nothing_before_what_it_needs_by_name() {
    for env in ["dev", "prod"] {
        let d = transformed(env);
        let errors = violations(&d);
        assert!(errors.is_empty(), "depth in parentheses (dependency steps):\n{}", errors.join("\n"));
    }
}

#[test]
fn the_rules_find_the_cases_this_stack_has() {
    let d = transformed("prod").with(&[("CreateSearchCollection", "true"), ("ApiGatewayLogRoleArn", "create")]);
    let (refs, _) = name_refs(&d);
    let rules: BTreeSet<&str> = refs.iter().map(|n| n.rule).collect();
    for rule in [
        "route settings are keyed by an existing route",
        "access logging needs the account's CloudWatch role set",
        "a function logs to the group it names",
        "a collection needs an encryption policy that names it",
        "Lambda checks the execution role at creation",
        "a destination the role may send to",
    ] {
        assert!(rules.contains(rule), "no case of {rule:?}: {rules:?}");
    }
    let routes = refs.iter().filter(|n| n.rule.starts_with("route settings")).count();
    assert!(routes >= 4, "every keyed route setting is checked: {refs:?}");
}

#[test]
fn every_switch_setting_of_both_environments_deploys_in_a_valid_order() {
    let base = [transformed("dev"), transformed("prod")];
    let switches: &[&[(&str, &str)]] = &[
        &[("CreateSearchCollection", "true")],
        &[("EnableGuardrail", "false")],
        &[("EnableVpcCache", "true"), ("NatGateways", "1")],
        &[("IssuerUrl", "https://issuer.example.com")],
        &[("AlarmEmail", "ops@example.com")],
        &[("ApiGatewayLogRoleArn", "create")],
        &[("ApiGatewayLogRoleArn", "arn:aws:iam::123456789012:role/apigw-logs")],
        &[("PeakCapacity", "provisioned"), ("ThroughputReservedConcurrency", "1")],
        &[("PeakCapacity", "priority")],
    ];
    for d in &base {
        for s in switches {
            let errors = violations(&d.with(s));
            assert!(errors.is_empty(), "{}", errors.join("\n"));
        }
    }
}
