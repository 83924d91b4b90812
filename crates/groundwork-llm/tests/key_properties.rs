//! Property tests of the response-cache key (`groundwork_llm::key`).
//!
//! The spelling of a request must not matter: member order at any depth, whitespace, string
//! escapes and number spellings are varied on the raw JSON text, which is parsed back the way
//! the proxy parses a body. The content must: every output-affecting field (known or not) and
//! the tenant change the key, the transport fields do not.
//!
//! Each property runs 10,000 cases on small generated requests, to keep the suite to seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use groundwork_llm::key::{TRANSPORT_FIELDS, cache_key, canonical_json, canonical_request};
use proptest::prelude::*;
use serde_json::{Map, Number, Value, json};

const CASES: u32 = 10_000;

/// 10,000 cases, drawn with XorShift: proptest's default ChaCha generator takes most of the
/// time of an unoptimized test build, and these cases need no cryptographic randomness.
fn config() -> ProptestConfig {
    ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(CASES)
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Mostly plain letters, with the characters that escaping and UTF-16 sorting care about.
fn arb_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::char::range('a', 'e'),
        3 => prop::char::range(' ', '~'),
        1 => prop::char::range('\0', '\x1f'),
        2 => prop::sample::select(vec![
            '"', '\\', '/', '\x7f', '\u{80}', 'é', 'ö', '€', '\u{2028}', '\u{fb33}', '\u{feff}',
            '\u{ffff}', '😀', '\u{10000}', '\u{10ffff}',
        ]),
        1 => any::<char>(),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(arb_char(), 0..6).prop_map(|chars| chars.into_iter().collect())
}

/// Integers of every width serde_json keeps exactly, and doubles from tame to subnormal.
fn arb_number() -> impl Strategy<Value = Number> {
    use prop::num::f64 as f;
    prop_oneof![
        (-1000i64..1000).prop_map(Number::from),
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-1_000_000i64..1_000_000, 0i32..6).prop_filter_map("finite", |(m, s)| Number::from_f64(
            m as f64 / 10f64.powi(s)
        )),
        (f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO)
            .prop_filter_map("finite", Number::from_f64),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number().prop_map(Value::Number),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(arb_string(), inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn arb_message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["system", "user", "assistant", "tool"]),
        prop_oneof![3 => arb_string().prop_map(Value::String), 1 => arb_json()],
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}))
}

/// A request with a model, messages and a few arbitrary members (known field names or not).
fn arb_request() -> impl Strategy<Value = Value> {
    let member_name = prop_oneof![
        prop::sample::select(OUTPUT_FIELDS.to_vec()).prop_map(str::to_owned),
        arb_string(),
    ];
    (
        arb_string(),
        prop::collection::vec(arb_message(), 0..3),
        prop::collection::btree_map(member_name, arb_json(), 0..3),
    )
        .prop_map(|(model, messages, extra)| {
            let mut request: Map<String, Value> = extra.into_iter().collect();
            request.insert("model".into(), model.into());
            request.insert("messages".into(), messages.into());
            Value::Object(request)
        })
}

/// Every output-affecting field the key must see, known to OpenAI or not (`provider_param`).
const OUTPUT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "response_format",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "provider_param",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "max_completion_tokens",
    "reasoning_effort",
];

fn hundredths(range: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = Value> {
    range.prop_map(|x| json!(f64::from(x) / 100.0))
}

/// Some transport fields, with values of their usual shapes or anything else.
fn arb_transport_fields() -> impl Strategy<Value = std::collections::BTreeMap<&'static str, Value>>
{
    let value = prop_oneof![
        any::<bool>().prop_map(Value::from),
        arb_string().prop_map(Value::from),
        (arb_string(), arb_string()).prop_map(|(k, v)| json!({ k: v })),
        arb_json(),
    ];
    prop::collection::btree_map(prop::sample::select(TRANSPORT_FIELDS.to_vec()), value, 0..4)
}

/// A realistic value for one of the [`OUTPUT_FIELDS`].
fn arb_field_value(field: &str) -> BoxedStrategy<Value> {
    match field {
        "model" => arb_string().prop_map(Value::from).boxed(),
        "messages" => prop::collection::vec(arb_message(), 1..3)
            .prop_map(Value::from)
            .boxed(),
        "tools" => prop::collection::vec(
            (arb_string(), arb_string(), arb_json()).prop_map(|(name, description, props)| {
                json!({"type": "function", "function": {"name": name, "description": description,
                    "parameters": {"type": "object", "properties": props}}})
            }),
            0..2,
        )
        .prop_map(Value::from)
        .boxed(),
        "tool_choice" => prop_oneof![
            prop::sample::select(vec!["none", "auto", "required"]).prop_map(Value::from),
            arb_string().prop_map(|name| json!({"type": "function", "function": {"name": name}})),
        ]
        .boxed(),
        "temperature" => hundredths(0..=200).boxed(),
        "top_p" => hundredths(0..=100).boxed(),
        "presence_penalty" | "frequency_penalty" => hundredths(-200..=200).boxed(),
        "max_tokens" | "max_completion_tokens" => (1u32..100_000).prop_map(Value::from).boxed(),
        "seed" => any::<i64>().prop_map(Value::from).boxed(),
        "n" => (1u32..5).prop_map(Value::from).boxed(),
        "top_logprobs" => (0u32..=20).prop_map(Value::from).boxed(),
        "parallel_tool_calls" | "logprobs" => any::<bool>().prop_map(Value::from).boxed(),
        "response_format" => prop_oneof![
            Just(json!({"type": "text"})),
            Just(json!({"type": "json_object"})),
            arb_json().prop_map(
                |schema| json!({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
            ),
        ]
        .boxed(),
        "stop" => prop_oneof![
            arb_string().prop_map(Value::from),
            prop::collection::vec(arb_string(), 0..4).prop_map(Value::from),
        ]
        .boxed(),
        "logit_bias" => prop::collection::btree_map(
            (0u32..200_000).prop_map(|t| t.to_string()),
            -100i32..=100,
            0..4,
        )
        .prop_map(|bias| json!(bias))
        .boxed(),
        "reasoning_effort" => prop::sample::select(vec!["minimal", "low", "medium", "high"])
            .prop_map(Value::from)
            .boxed(),
        _ => arb_json().boxed(), // provider_param: anything
    }
}

/// A request (as [`arb_request`]), one of its [`OUTPUT_FIELDS`] and that field's value.
fn arb_request_with_field() -> impl Strategy<Value = (Value, &'static str)> {
    let field = prop::sample::select(OUTPUT_FIELDS.to_vec());
    (
        arb_request(),
        field.prop_flat_map(|f| (Just(f), arb_field_value(f))),
    )
        .prop_map(|(mut request, (field, value))| {
            request[field] = value;
            (request, field)
        })
}

// ---------------------------------------------------------------------------------------
// Writing the same JSON value in different spellings
// ---------------------------------------------------------------------------------------

/// SplitMix64: the spelling choices of one case, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// Which parts of the spelling to vary.
#[derive(Clone, Copy, Default)]
struct Vary {
    order: bool,
    whitespace: bool,
    escapes: bool,
    numbers: bool,
}

/// Writes a JSON value as text, with the spelling choices of `vary` made at random.
struct Writer {
    rng: Rng,
    vary: Vary,
    out: String,
}

impl Writer {
    fn write(value: &Value, vary: Vary, seed: u64) -> String {
        let mut writer = Writer {
            rng: Rng(seed),
            vary,
            out: String::new(),
        };
        writer.value(value);
        writer.out
    }

    fn space(&mut self) {
        if self.vary.whitespace {
            for _ in 0..self.rng.below(3) {
                let c = [' ', '\n', '\t', '\r'][self.rng.below(4)];
                self.out.push(c);
            }
        }
    }

    fn value(&mut self, value: &Value) {
        self.space();
        match value {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.value(item);
                }
                if items.is_empty() {
                    self.space();
                }
                self.out.push(']');
            }
            Value::Object(members) => {
                let mut members: Vec<_> = members.iter().collect();
                if self.vary.order {
                    for i in (1..members.len()).rev() {
                        let j = self.rng.below(i + 1);
                        members.swap(i, j);
                    }
                }
                self.out.push('{');
                for (i, (name, member)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.string(name);
                    self.space();
                    self.out.push(':');
                    self.value(member);
                }
                if members.is_empty() {
                    self.space();
                }
                self.out.push('}');
            }
        }
        self.space();
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            if self.vary.escapes && self.rng.coin() {
                self.other_spelling(c);
            } else {
                match c {
                    '"' => self.out.push_str("\\\""),
                    '\\' => self.out.push_str("\\\\"),
                    c if c < ' ' => write!(self.out, "\\u{:04x}", u32::from(c)).unwrap(),
                    c => self.out.push(c),
                }
            }
        }
        self.out.push('"');
    }

    /// `c` as a `\u` escape (upper- or lowercase hex, a surrogate pair beyond the BMP), as its
    /// short escape (`\/`, `\n`, …) where it has one, or raw where JSON allows it.
    fn other_spelling(&mut self, c: char) {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let raw_allowed = c >= ' ' && c != '"' && c != '\\';
        match self.rng.below(3) {
            0 if short.is_some() => self.out.push_str(short.unwrap_or_default()),
            1 if raw_allowed => self.out.push(c),
            _ => {
                let upper = self.rng.coin();
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if upper {
                        write!(self.out, "\\u{unit:04X}").unwrap();
                    } else {
                        write!(self.out, "\\u{unit:04x}").unwrap();
                    }
                }
            }
        }
    }

    fn number(&mut self, n: &Number) {
        if !self.vary.numbers {
            write!(self.out, "{n}").unwrap();
            return;
        }
        // The number as sign, decimal digits and exponent: value = digits × 10^exp.
        let (mut negative, mut digits, mut exp) = if let Some(u) = n.as_u64() {
            (false, u.to_string(), 0)
        } else if let Some(i) = n.as_i64() {
            (true, i.unsigned_abs().to_string(), 0)
        } else {
            let f = n.as_f64().unwrap();
            let text = format!("{:e}", f.abs()); // shortest round-trip digits, e.g. 1.25e-7
            let (mantissa, e) = text.split_once('e').unwrap();
            let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
            let e: i32 = e.parse().unwrap();
            (
                f.is_sign_negative(),
                format!("{int}{frac}"),
                e - frac.len() as i32,
            )
        };
        let zero = digits.bytes().all(|b| b == b'0');
        if zero {
            negative = self.rng.coin(); // -0 is 0
        }
        let padding = self.rng.below(3);
        for _ in 0..padding {
            digits.push('0');
            exp -= 1;
        }
        if negative {
            self.out.push('-');
        }
        // Digits before the point; a leading zero may only stand alone.
        let before = if zero {
            self.rng.below(2)
        } else {
            self.rng.below(digits.len() + 1)
        };
        if before == 0 {
            let zeros = self.rng.below(3);
            self.out.push_str("0.");
            self.out.push_str(&"0".repeat(zeros));
            self.out.push_str(&digits);
            exp += (zeros + digits.len()) as i32;
        } else {
            self.out.push_str(&digits[..before]);
            if before < digits.len() {
                self.out.push('.');
                self.out.push_str(&digits[before..]);
            }
            exp += (digits.len() - before) as i32;
        }
        if exp != 0 || self.rng.coin() {
            self.out.push(if self.rng.coin() { 'e' } else { 'E' });
            if exp < 0 {
                self.out.push('-');
            } else if self.rng.coin() {
                self.out.push('+');
            }
            if self.rng.coin() {
                self.out.push('0');
            }
            write!(self.out, "{}", exp.unsigned_abs()).unwrap();
        }
    }
}

/// Writes `request` with `vary`, parses it back and checks that the key is that of `request`
/// (showing both canonical forms if not).
fn assert_same_key(request: &Value, vary: Vary, seed: u64) -> Result<(), TestCaseError> {
    let text = Writer::write(request, vary, seed);
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("unparsable variant {text:?}: {e}")))?;
    if cache_key("tenant", &parsed).unwrap() != cache_key("tenant", request).unwrap() {
        return Err(TestCaseError::fail(format!(
            "variant {text:?}\n  canonical {}\n  expected  {}",
            canonical_request(&parsed).unwrap(),
            canonical_request(request).unwrap(),
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Changing a value
// ---------------------------------------------------------------------------------------

/// Changes `value` somewhere at or below its top, so that it means something else.
fn mutate(value: &mut Value, rng: &mut Rng) {
    match value {
        Value::Array(items) if !items.is_empty() && rng.coin() => {
            let i = rng.below(items.len());
            mutate(&mut items[i], rng);
        }
        Value::Object(members) if !members.is_empty() && rng.coin() => {
            let name = members
                .keys()
                .nth(rng.below(members.len()))
                .unwrap()
                .clone();
            if rng.below(3) == 0 {
                // Rename the member.
                let member = members.remove(&name).unwrap();
                let mut renamed = name;
                renamed.push('~');
                while members.contains_key(&renamed) {
                    renamed.push('~');
                }
                members.insert(renamed, member);
            } else {
                mutate(members.get_mut(&name).unwrap(), rng);
            }
        }
        Value::Null => *value = Value::Bool(false),
        Value::Bool(b) => *b = !*b,
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            let mut y = x + 1.0;
            if y == x {
                y = x / 2.0; // |x| ≥ 2^53, where + 1 is lost
            }
            *n = Number::from_f64(y).unwrap();
        }
        Value::String(s) => s.push('~'),
        Value::Array(items) => items.push(Value::Null),
        Value::Object(members) => {
            let mut name = String::from("~");
            while members.contains_key(&name) {
                name.push('~');
            }
            members.insert(name, Value::Null);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// (a) Member order at any depth does not matter.
    #[test]
    fn member_order_does_not_change_the_key(request in arb_request(), seed in any::<u64>()) {
        assert_same_key(&request, Vary { order: true, ..Vary::default() }, seed)?;
    }

    /// (b) Whitespace between tokens (random, or serde_json's pretty-printing) does not matter.
    #[test]
    fn whitespace_does_not_change_the_key(request in arb_request(), seed in any::<u64>()) {
        if seed % 4 == 0 {
            let pretty = serde_json::to_string_pretty(&request).unwrap();
            let pretty: Value = serde_json::from_str(&pretty).unwrap();
            prop_assert_eq!(cache_key("tenant", &pretty).unwrap(), cache_key("tenant", &request).unwrap());
        } else {
            assert_same_key(&request, Vary { whitespace: true, ..Vary::default() }, seed)?;
        }
    }

    /// (c) `\u00e9` or `é`, `\/` or `/`, `\u0041` or `A`, `\n` or `\u000A`: the same string.
    #[test]
    fn escape_spellings_do_not_change_the_key(request in arb_request(), seed in any::<u64>()) {
        assert_same_key(&request, Vary { escapes: true, ..Vary::default() }, seed)?;
    }

    /// (d) `1`, `1.0`, `1e0`, `10E-1`, `0.10e1`, `-0`: the same number.
    #[test]
    fn number_spellings_do_not_change_the_key(request in arb_request(), seed in any::<u64>()) {
        assert_same_key(&request, Vary { numbers: true, ..Vary::default() }, seed)?;
    }

    /// (a)–(d) together; and canonical JSON, parsed again, is its own canonical form.
    #[test]
    fn all_spellings_together_do_not_change_the_key(request in arb_request(), seed in any::<u64>()) {
        let all = Vary { order: true, whitespace: true, escapes: true, numbers: true };
        assert_same_key(&request, all, seed)?;
        let canonical = canonical_json(&request).unwrap();
        let reparsed: Value = serde_json::from_str(&canonical).unwrap();
        prop_assert_eq!(canonical_json(&reparsed).unwrap(), canonical);
    }

    /// (e) Changing or removing any output-affecting field, at any depth, changes the key.
    #[test]
    fn output_fields_change_the_key((request, field) in arb_request_with_field(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let mut changed = request.clone();
        if rng.below(5) == 0 {
            changed.as_object_mut().unwrap().remove(field);
        } else {
            mutate(&mut changed[field], &mut rng);
        }
        prop_assert_ne!(
            cache_key("tenant", &changed).unwrap(),
            cache_key("tenant", &request).unwrap(),
            "{} changed to {}", field, changed.get(field).unwrap_or(&Value::Null)
        );
    }

    /// (f) Adding, changing or removing transport fields does not change the key.
    #[test]
    fn transport_fields_do_not_change_the_key(
        request in arb_request(),
        before in arb_transport_fields(),
        after in arb_transport_fields(),
    ) {
        let with = |fields: &std::collections::BTreeMap<&str, Value>| {
            let mut request = request.clone();
            for (name, value) in fields {
                request[*name] = value.clone();
            }
            request
        };
        // Either map may be empty: this adds, changes and removes transport fields.
        prop_assert_eq!(cache_key("tenant", &with(&before)).unwrap(), cache_key("tenant", &with(&after)).unwrap());
    }

    /// (g) The tenant is part of the key.
    #[test]
    fn tenant_changes_the_key(
        model in arb_string(),
        message in arb_message(),
        tenant in arb_string(),
        mut other in arb_string(),
    ) {
        let request = json!({"model": model, "messages": [message]});
        if other == tenant {
            other.push('~');
        }
        prop_assert_ne!(cache_key(&tenant, &request).unwrap(), cache_key(&other, &request).unwrap());
    }
}

/// Every field of (e) changes the key, whatever the random draw covered.
#[test]
fn each_output_field_changes_the_key() {
    let request = json!({
        "model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto", "temperature": 0.5, "top_p": 1, "max_tokens": 100, "seed": 1,
        "response_format": {"type": "json_object"}, "stop": ["\n"], "n": 1,
        "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {"50256": -100},
        "provider_param": {"top_k": 40}, "parallel_tool_calls": true, "logprobs": false,
        "top_logprobs": 0, "max_completion_tokens": 100, "reasoning_effort": "low",
    });
    let key = cache_key("tenant", &request).unwrap();
    for field in OUTPUT_FIELDS {
        for seed in 0..20 {
            let mut changed = request.clone();
            mutate(&mut changed[*field], &mut Rng(seed));
            assert_ne!(cache_key("tenant", &changed).unwrap(), key, "{field}");
        }
        let mut removed = request.clone();
        removed.as_object_mut().unwrap().remove(*field);
        assert_ne!(cache_key("tenant", &removed).unwrap(), key, "{field}");
    }
}

/// The spellings named in the issue, written out.
#[test]
fn named_spellings() {
    let key_of = |text: &str| cache_key("t", &serde_json::from_str(text).unwrap()).unwrap();
    let numbers = ["1", "1.0", "1e0", "10E-1", "0.10e1", "1E+0", "100e-2"];
    for n in numbers {
        assert_eq!(
            key_of(&format!(r#"{{"n":{n}}}"#)),
            key_of(r#"{"n":1}"#),
            "{n}"
        );
    }
    assert_eq!(
        key_of(r#"{"s":"\u00e9\/\u0041"}"#),
        key_of(r#"{"s":"é/A"}"#)
    );
    assert_eq!(
        key_of(r#"{"b":{"y":1,"x":2},"a":[{"d":0,"c":1}]}"#),
        key_of("{ \"a\" : [ { \"c\" : 1 , \"d\" : -0.0 } ] ,\n\t\"b\": {\"x\": 2e0, \"y\": 1}}")
    );
}
