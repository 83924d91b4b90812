//! Workflow steps: the one parser from a workflow's `steps` JSON array to typed [`Step`]s.
//!
//! The API calls [`parse_steps`] when a workflow is created or its steps are replaced, and
//! refuses what it rejects (422); the `workflow.execute` worker calls it again before
//! running an execution, so a workflow stored before these rules existed fails its execution
//! with the same message instead of running halfway. Whether an agent step's agent exists
//! needs the database: both sides ask [`agent_exists`] (the API when the steps are written,
//! the worker when the step runs, as the agent may have been deleted since).
//!
//! The rules, per step (a JSON object):
//! - `name`: optional (absent or `null`: `step-<position>`); a string that is not blank, at
//!   most [`limits::NAME`] characters, no control characters; unique in the workflow (a
//!   default name counts too);
//! - `type`: required, one of [`STEP_TYPES`];
//! - no other field than the type's own:
//!   - `echo`: `value` (any JSON; absent: the step outputs its input);
//!   - `webhook`: `url` (required; an absolute `http` or `https` URL with a host) and
//!     `timeout_ms` (optional; a whole number of milliseconds, 1 to
//!     [`MAX_WEBHOOK_TIMEOUT`]; default [`DEFAULT_WEBHOOK_TIMEOUT`]);
//!   - `agent`: `agent_id` (required; a positive integer);
//!   - `fail`: `message` (optional string) and `retryable` (optional boolean, default
//!     `true`).
//!
//! Optional fields may also be `null`, meaning absent (except `echo`'s `value`, where `null`
//! is the value to output).

use std::time::Duration;

use axum::http::Uri;
use groundwork_db::{Database, DbError, limits};
use serde_json::{Map, Value};

/// The step types, as `type` names them.
pub const STEP_TYPES: [&str; 4] = ["echo", "webhook", "agent", "fail"];
/// The timeout of a webhook step without `timeout_ms`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `timeout_ms` of a webhook step: 15 minutes, well within RabbitMQ's default
/// 30-minute limit on an unacknowledged delivery (one attempt runs within one delivery).
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The message of a `fail` step without `message`.
pub const DEFAULT_FAIL_MESSAGE: &str = "the step failed";

/// Strings longer than this are shortened when quoted in an error message.
const QUOTE_MAX_CHARS: usize = 200;

/// One step of a workflow, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its position in the workflow, from 1.
    pub position: usize,
    /// Its name (`step-<position>` unless given): the key of its checkpoint.
    pub name: String,
    /// What it does.
    pub kind: StepKind,
}

impl Step {
    /// How error messages name it: `step 2 ("notify")`, or `step 2` when its name is the
    /// default one.
    #[must_use]
    pub fn label(&self) -> String {
        label(self.position, Some(&self.name))
    }
}

/// What a step does, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Outputs `value`, or its input when there is none.
    Echo {
        /// What to output (`Some(Value::Null)` outputs `null`).
        value: Option<Value>,
    },
    /// POSTs `{"execution_id", "workflow_id", "step", "input"}` to `url` and outputs the
    /// answer.
    Webhook {
        /// An absolute `http` or `https` URL with a host.
        url: String,
        /// The time limit of one request.
        timeout: Duration,
    },
    /// Runs the built-in prompt agent of agent `agent_id` on its input.
    Agent {
        /// The agent (positive; whether it exists is [`agent_exists`]'s question).
        agent_id: i64,
    },
    /// Fails, for testing retries and failure handling.
    Fail {
        /// The error.
        message: String,
        /// Whether another attempt may succeed (it never does).
        retryable: bool,
    },
}

/// Why a workflow's steps are refused: which step (when it is about one) and what is wrong.
/// Displays as `step 2 ("notify"): webhook url "file:///etc/passwd" must be http or https`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", .step.as_ref().map(|s| format!("{s}: ")).unwrap_or_default())]
pub struct InvalidSteps {
    /// The step, as its label names it (`step 2 ("notify")`); `None` when the steps as a
    /// whole are wrong (not an array).
    pub step: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl InvalidSteps {
    /// `reason` about `step`.
    #[must_use]
    pub fn at(step: &Step, reason: impl Into<String>) -> Self {
        Self {
            step: Some(step.label()),
            reason: reason.into(),
        }
    }

    fn at_position(position: usize, name: Option<&str>, reason: impl Into<String>) -> Self {
        Self {
            step: Some(label(position, name)),
            reason: reason.into(),
        }
    }
}

/// Parses a workflow's `steps` (a JSON array of step objects) into typed steps, checking
/// every rule of the [module docs](self) but the agents' existence.
///
/// # Errors
/// [`InvalidSteps`] naming the first step that breaks a rule (by position, and by name when
/// it has one) and the rule.
pub fn parse_steps(steps: &Value) -> Result<Vec<Step>, InvalidSteps> {
    let Value::Array(items) = steps else {
        return Err(InvalidSteps {
            step: None,
            reason: format!(
                "steps must be a JSON array, got {}",
                groundwork_core::json_type(steps)
            ),
        });
    };
    let mut out: Vec<Step> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let position = index + 1;
        let step = parse_step(position, item)?;
        if let Some(first) = out.iter().find(|s| s.name == step.name) {
            return Err(InvalidSteps::at(
                &step,
                format!(
                    "the name {} is already taken by step {}",
                    quote(&step.name),
                    first.position
                ),
            ));
        }
        out.push(step);
    }
    Ok(out)
}

/// Whether agent `agent_id` exists.
///
/// # Errors
/// When the database fails (a missing agent is `Ok(false)`).
pub async fn agent_exists(db: &Database, agent_id: i64) -> Result<bool, DbError> {
    match db.agents().get(agent_id).await {
        Ok(_) => Ok(true),
        Err(DbError::NotFound { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

fn parse_step(position: usize, item: &Value) -> Result<Step, InvalidSteps> {
    let Value::Object(fields) = item else {
        return Err(InvalidSteps::at_position(
            position,
            None,
            format!(
                "a step must be a JSON object, got {}",
                groundwork_core::json_type(item)
            ),
        ));
    };
    let name = parse_name(position, fields)?;
    let fail = |reason: String| InvalidSteps::at_position(position, Some(&name), reason);
    let type_name = match fields.get("type") {
        None | Some(Value::Null) => {
            return Err(fail(format!(
                "the step has no type ({})",
                STEP_TYPES.join(", ")
            )));
        }
        Some(Value::String(type_name)) => type_name.as_str(),
        Some(other) => {
            return Err(fail(format!(
                "type must be a string ({}), got {}",
                STEP_TYPES.join(", "),
                groundwork_core::json_type(other)
            )));
        }
    };
    let allowed: &[&str] = match type_name {
        "echo" => &["value"],
        "webhook" => &["url", "timeout_ms"],
        "agent" => &["agent_id"],
        "fail" => &["message", "retryable"],
        other => {
            return Err(fail(format!(
                "unknown step type {} ({})",
                quote(other),
                STEP_TYPES.join(", ")
            )));
        }
    };
    let unknown: Vec<String> = fields
        .keys()
        .filter(|k| !matches!(k.as_str(), "name" | "type") && !allowed.contains(&k.as_str()))
        .map(|k| quote(k))
        .collect();
    if !unknown.is_empty() {
        let (noun, list) = match unknown.as_slice() {
            [one] => ("field", one.clone()),
            many => ("fields", many.join(", ")),
        };
        return Err(fail(format!(
            "unknown {noun} {list} (a{} {type_name} step takes name, type, {})",
            if type_name.starts_with(['a', 'e']) {
                "n"
            } else {
                ""
            },
            allowed.join(", ")
        )));
    }
    let kind = match type_name {
        "echo" => StepKind::Echo {
            value: fields.get("value").cloned(),
        },
        "webhook" => StepKind::Webhook {
            url: parse_url(fields.get("url")).map_err(fail)?,
            timeout: parse_timeout(fields.get("timeout_ms")).map_err(fail)?,
        },
        "agent" => StepKind::Agent {
            agent_id: parse_agent_id(fields.get("agent_id")).map_err(fail)?,
        },
        _ => StepKind::Fail {
            message: match present(fields.get("message")) {
                None => DEFAULT_FAIL_MESSAGE.to_owned(),
                Some(Value::String(message)) => message.clone(),
                Some(other) => {
                    return Err(fail(format!(
                        "message must be a string, got {}",
                        groundwork_core::json_type(other)
                    )));
                }
            },
            retryable: match present(fields.get("retryable")) {
                None => true,
                Some(Value::Bool(retryable)) => *retryable,
                Some(other) => {
                    return Err(fail(format!(
                        "retryable must be true or false, got {}",
                        groundwork_core::json_type(other)
                    )));
                }
            },
        },
    };
    Ok(Step {
        position,
        name,
        kind,
    })
}

/// The step's name: given, or `step-<position>`.
fn parse_name(position: usize, fields: &Map<String, Value>) -> Result<String, InvalidSteps> {
    let fail = |reason: String| InvalidSteps::at_position(position, None, reason);
    let name = match present(fields.get("name")) {
        None => return Ok(default_name(position)),
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(fail(format!(
                "name must be a string, got {}",
                groundwork_core::json_type(other)
            )));
        }
    };
    if name.trim().is_empty() {
        return Err(fail("name must not be blank".to_owned()));
    }
    let len = name.chars().count();
    if len > limits::NAME {
        return Err(fail(format!(
            "name must be at most {} characters, got {len}",
            limits::NAME
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(fail(format!(
            "name {} must not contain control characters",
            quote(name)
        )));
    }
    Ok(name.clone())
}

fn parse_url(url: Option<&Value>) -> Result<String, String> {
    let url = match present(url) {
        None => return Err("a webhook step needs a url".to_owned()),
        Some(Value::String(url)) => url,
        Some(other) => {
            return Err(format!(
                "url must be a string, got {}",
                groundwork_core::json_type(other)
            ));
        }
    };
    let shown = quote(url);
    // The scheme as RFC 3986 spells it, before parsing: a clear message for `file:`,
    // `ftp:`, `mailto:` and the like whatever the rest looks like.
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
        Some(_) => return Err(format!("webhook url {shown} must be http or https")),
        None => {
            return Err(format!(
                "webhook url {shown} is not a valid URL (expected http://host/... or https://host/...)"
            ));
        }
    }
    let uri: Uri = url
        .parse()
        .map_err(|err| format!("webhook url {shown} is not a valid URL: {err}"))?;
    // `http:host` parses as an authority with a port `host`: an absolute URL has `://`.
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "webhook url {shown} is not a valid URL (expected http://host/... or https://host/...)"
        ));
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(format!("webhook url {shown} must be http or https"));
    }
    if authority.host().is_empty() {
        return Err(format!("webhook url {shown} has no host"));
    }
    // `Uri` keeps a port it cannot read (`:99999`, `:8x`) and answers `None` for it.
    let host_and_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    let port = match host_and_port.rsplit_once(']') {
        Some((_, after_ip6)) => after_ip6.strip_prefix(':'),
        None => host_and_port.split_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port.filter(|p| !p.is_empty())
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "webhook url {shown} has an invalid port {}",
            quote(port)
        ));
    }
    Ok(url.clone())
}

fn parse_timeout(timeout_ms: Option<&Value>) -> Result<Duration, String> {
    let Some(value) = present(timeout_ms) else {
        return Ok(DEFAULT_WEBHOOK_TIMEOUT);
    };
    let max = MAX_WEBHOOK_TIMEOUT.as_millis();
    match value.as_u64() {
        Some(ms) if ms >= 1 && u128::from(ms) <= max => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "timeout_ms must be a whole number of milliseconds from 1 to {max}, got {}",
            shown_value(value)
        )),
    }
}

fn parse_agent_id(agent_id: Option<&Value>) -> Result<i64, String> {
    let Some(value) = present(agent_id) else {
        return Err("an agent step needs an agent_id".to_owned());
    };
    match value.as_i64() {
        Some(id) if id > 0 => Ok(id),
        _ => Err(format!(
            "agent_id must be a positive integer, got {}",
            shown_value(value)
        )),
    }
}

/// `value` unless it is absent or `null`.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn default_name(position: usize) -> String {
    format!("step-{position}")
}

fn label(position: usize, name: Option<&str>) -> String {
    match name {
        Some(name) if name != default_name(position) => {
            format!("step {position} ({})", quote(name))
        }
        _ => format!("step {position}"),
    }
}

/// `text` in double quotes, escaped, shortened when long.
fn quote(text: &str) -> String {
    if text.chars().count() > QUOTE_MAX_CHARS {
        let short: String = text.chars().take(QUOTE_MAX_CHARS).collect();
        format!("{short:?}…")
    } else {
        format!("{text:?}")
    }
}

/// A JSON value for an error message, shortened when long.
fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        Value::Array(_) | Value::Object(_) => groundwork_core::json_type(value).to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(steps: Value) -> String {
        match parse_steps(&steps) {
            Ok(parsed) => format!("accepted: {parsed:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn valid_steps_parse_with_their_defaults() {
        let steps = parse_steps(&json!([
            { "type": "echo" },
            { "type": "echo", "name": "b", "value": null },
            { "type": "webhook", "url": "https://example.com/hook" },
            { "type": "webhook", "url": "HTTP://127.0.0.1:8080/x?y=1", "timeout_ms": 250 },
            { "type": "agent", "agent_id": 7, "name": null },
            { "type": "webhook", "url": "https://u:p@[::1]:8443/h#f", "name": "v6" },
            { "type": "fail" },
            { "type": "fail", "message": "boom", "retryable": false },
        ]));
        let kinds: Vec<(String, StepKind)> = steps
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.name, s.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("step-1".to_owned(), StepKind::Echo { value: None }),
                (
                    "b".to_owned(),
                    StepKind::Echo {
                        value: Some(Value::Null)
                    }
                ),
                (
                    "step-3".to_owned(),
                    StepKind::Webhook {
                        url: "https://example.com/hook".to_owned(),
                        timeout: DEFAULT_WEBHOOK_TIMEOUT
                    }
                ),
                (
                    "step-4".to_owned(),
                    StepKind::Webhook {
                        url: "HTTP://127.0.0.1:8080/x?y=1".to_owned(),
                        timeout: Duration::from_millis(250)
                    }
                ),
                ("step-5".to_owned(), StepKind::Agent { agent_id: 7 }),
                (
                    "v6".to_owned(),
                    StepKind::Webhook {
                        url: "https://u:p@[::1]:8443/h#f".to_owned(),
                        timeout: DEFAULT_WEBHOOK_TIMEOUT
                    }
                ),
                (
                    "step-7".to_owned(),
                    StepKind::Fail {
                        message: DEFAULT_FAIL_MESSAGE.to_owned(),
                        retryable: true
                    }
                ),
                (
                    "step-8".to_owned(),
                    StepKind::Fail {
                        message: "boom".to_owned(),
                        retryable: false
                    }
                ),
            ]
        );
        assert_eq!(parse_steps(&json!([])), Ok(Vec::new()));
    }

    #[test]
    fn every_rule_names_the_step_and_the_problem() {
        let cases = [
            (json!({}), "steps must be a JSON array, got an object"),
            (
                json!([1, 2]),
                "step 1: a step must be a JSON object, got a number",
            ),
            (
                json!([{ "value": 1 }]),
                "step 1: the step has no type (echo, webhook, agent, fail)",
            ),
            (
                json!([{ "type": "echo" }, { "type": "nope", "name": "x" }]),
                "step 2 (\"x\"): unknown step type \"nope\" (echo, webhook, agent, fail)",
            ),
            (
                json!([{ "type": 3 }]),
                "step 1: type must be a string (echo, webhook, agent, fail), got a number",
            ),
            (
                json!([{ "type": "webhook", "name": "notify" }]),
                "step 1 (\"notify\"): a webhook step needs a url",
            ),
            (
                json!([{ "type": "webhook", "url": "not a url" }]),
                "step 1: webhook url \"not a url\" is not a valid URL (expected http://host/... or https://host/...)",
            ),
            (
                json!([{ "type": "webhook", "name": "notify", "url": "file:///etc/passwd" }]),
                "step 1 (\"notify\"): webhook url \"file:///etc/passwd\" must be http or https",
            ),
            (
                json!([{ "type": "webhook", "url": "http:///nohost" }]),
                "step 1: webhook url \"http:///nohost\" is not a valid URL",
            ),
            (
                json!([{ "type": "webhook", "url": "http:host" }]),
                "step 1: webhook url \"http:host\" is not a valid URL (expected",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h:99999/" }]),
                "step 1: webhook url \"http://h:99999/\" has an invalid port \"99999\"",
            ),
            (
                json!([{ "type": "webhook", "url": "http://a b/" }]),
                "step 1: webhook url \"http://a b/\" is not a valid URL",
            ),
            (
                json!([{ "type": "webhook", "url": "http://[::1]:70000/" }]),
                "has an invalid port \"70000\"",
            ),
            (
                json!([{ "type": "webhook", "url": "mailto:a@b" }]),
                "step 1: webhook url \"mailto:a@b\" must be http or https",
            ),
            (
                json!([{ "type": "webhook", "url": 5 }]),
                "step 1: url must be a string, got a number",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h/", "timeout_ms": -5 }]),
                "step 1: timeout_ms must be a whole number of milliseconds from 1 to 900000, got -5",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h/", "timeout_ms": 0 }]),
                "got 0",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h/", "timeout_ms": 1.5 }]),
                "got 1.5",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h/", "timeout_ms": 900_001 }]),
                "got 900001",
            ),
            (
                json!([{ "type": "webhook", "url": "http://h/", "timeout_ms": "5" }]),
                "got \"5\"",
            ),
            (
                json!([{ "type": "agent" }]),
                "step 1: an agent step needs an agent_id",
            ),
            (
                json!([{ "type": "agent", "agent_id": "7" }]),
                "step 1: agent_id must be a positive integer, got \"7\"",
            ),
            (
                json!([{ "type": "agent", "agent_id": 0 }]),
                "agent_id must be a positive integer, got 0",
            ),
            (
                json!([{ "type": "fail", "message": 1 }]),
                "step 1: message must be a string, got a number",
            ),
            (
                json!([{ "type": "fail", "retryable": "no" }]),
                "step 1: retryable must be true or false, got a string",
            ),
            (
                json!([{ "type": "echo", "name": "a" }, { "type": "echo", "name": "a" }]),
                "step 2 (\"a\"): the name \"a\" is already taken by step 1",
            ),
            (
                json!([{ "type": "echo", "name": "step-2" }, { "type": "echo" }]),
                "step 2: the name \"step-2\" is already taken by step 1",
            ),
            (
                json!([{ "type": "echo", "name": "" }]),
                "step 1: name must not be blank",
            ),
            (
                json!([{ "type": "echo", "name": 1 }]),
                "step 1: name must be a string, got a number",
            ),
            (
                json!([{ "type": "echo", "name": "n".repeat(129) }]),
                "step 1: name must be at most 128 characters, got 129",
            ),
            (
                json!([{ "type": "echo", "name": "a\nb" }]),
                "step 1: name \"a\\nb\" must not contain control characters",
            ),
            (
                json!([{ "type": "webhook", "name": "w", "url": "http://h/", "retries": 2 }]),
                "step 1 (\"w\"): unknown field \"retries\" (a webhook step takes name, type, url, timeout_ms)",
            ),
            (
                json!([{ "type": "echo", "valu": 1, "x": 2 }]),
                "step 1: unknown fields \"valu\", \"x\" (an echo step takes name, type, value)",
            ),
        ];
        for (steps, expected) in cases {
            let message = error(steps.clone());
            assert!(
                message.contains(expected),
                "{steps}: {message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let url = format!("ftp://{}", "x".repeat(1000));
        let message = error(json!([{ "type": "webhook", "url": url }]));
        assert!(message.len() < 300, "{message}");
        assert!(message.ends_with("must be http or https"), "{message}");
    }
}
