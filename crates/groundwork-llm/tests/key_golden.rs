//! Pinned outputs of the response-cache key: RFC 8785's own test vectors for the canonical
//! JSON, and golden keys for fixed requests.
//!
//! A failure here means that the same request would get a different key than before, so every
//! entry already cached would be missed (or worse, an entry served for another request). If
//! the change is intended, bump `KEY_VERSION` and pin the new keys; never just update the
//! literals after a dependency update.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use groundwork_llm::key::{KEY_VERSION, cache_key, canonical_json, canonical_request};
use serde_json::{Number, Value};

/// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
#[test]
fn rfc8785_appendix_b_numbers() {
    let vectors: &[(u64, &str)] = &[
        (0x0000_0000_0000_0000, "0"),
        (0x8000_0000_0000_0000, "0"),
        (0x0000_0000_0000_0001, "5e-324"),
        (0x8000_0000_0000_0001, "-5e-324"),
        (0x7fef_ffff_ffff_ffff, "1.7976931348623157e+308"),
        (0xffef_ffff_ffff_ffff, "-1.7976931348623157e+308"),
        (0x4340_0000_0000_0000, "9007199254740992"),
        (0xc340_0000_0000_0000, "-9007199254740992"),
        (0x4430_0000_0000_0000, "295147905179352830000"),
        (0x44b5_2d02_c7e1_4af5, "9.999999999999997e+22"),
        (0x44b5_2d02_c7e1_4af6, "1e+23"),
        (0x44b5_2d02_c7e1_4af7, "1.0000000000000001e+23"),
        (0x444b_1ae4_d6e2_ef4e, "999999999999999700000"),
        (0x444b_1ae4_d6e2_ef4f, "999999999999999900000"),
        (0x444b_1ae4_d6e2_ef50, "1e+21"),
        (0x3eb0_c6f7_a0b5_ed8c, "9.999999999999997e-7"),
        (0x3eb0_c6f7_a0b5_ed8d, "0.000001"),
        (0x41b3_de43_5555_5553, "333333333.3333332"),
        (0x41b3_de43_5555_5554, "333333333.33333325"),
        (0x41b3_de43_5555_5555, "333333333.3333333"),
        (0x41b3_de43_5555_5556, "333333333.3333334"),
        (0x41b3_de43_5555_5557, "333333333.33333343"),
        (0xbecb_f647_612f_3696, "-0.0000033333333333333333"),
        (0x4314_3ff3_c1cb_0959, "1424953923781206.2"),
    ];
    for (bits, expected) in vectors {
        let number = Number::from_f64(f64::from_bits(*bits)).unwrap();
        assert_eq!(
            canonical_json(&Value::Number(number)).unwrap(),
            *expected,
            "{bits:016x}"
        );
    }
}

/// Number spellings from the text of RFC 8785 and ECMAScript's rules around the exponent
/// thresholds (1e21, 1e-7).
#[test]
fn number_spellings() {
    let vectors = [
        ("1", "1"),
        ("1.0", "1"),
        ("1e0", "1"),
        ("10e-1", "1"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("1e-7", "1e-7"),
        ("1e-6", "0.000001"),
        ("0.000001", "0.000001"),
        ("4.50", "4.5"),
        ("2e-3", "0.002"),
        ("1E30", "1e+30"),
        ("0.000000000000000000000000001", "1e-27"),
        ("333333333.33333329", "333333333.3333333"),
        ("9007199254740993", "9007199254740992"),
        ("18446744073709551615", "18446744073709552000"),
        ("-9223372036854775808", "-9223372036854776000"),
        ("0.1", "0.1"),
        ("123456789012345680000", "123456789012345680000"),
    ];
    for (text, expected) in vectors {
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(canonical_json(&value).unwrap(), expected, "{text}");
    }
}

/// RFC 8785 §3.2.2: the serialization example.
#[test]
fn rfc8785_serialization_example() {
    let input = r#"{
        "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
        "literals": [null, true, false]
    }"#;
    let expected = concat!(
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"#,
        r#""string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
    let value: Value = serde_json::from_str(input).unwrap();
    assert_eq!(canonical_json(&value).unwrap(), expected);
}

/// RFC 8785 §3.2.3: members sorted by UTF-16 code units, not by code points or UTF-8 bytes
/// (the emoji, a surrogate pair, sorts before U+FB33).
#[test]
fn rfc8785_sorting_example() {
    let input = r#"{
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\ud83d\ude00": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis"
    }"#;
    let expected = concat!(
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",",
        "\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",",
        "\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
    let value: Value = serde_json::from_str(input).unwrap();
    assert_eq!(canonical_json(&value).unwrap(), expected);
}

/// RFC 8785 §3.2.2.2: only `"`, `\` and control characters are escaped; the five with short
/// forms use them, the rest `\u00xx` in lowercase hex; DEL, U+2028 and `/` are written raw.
#[test]
fn rfc8785_string_escapes() {
    let value = Value::String("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é😀".into());
    assert_eq!(
        canonical_json(&value).unwrap(),
        "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é😀\""
    );
}

/// Fixed requests and the keys they must keep for as long as `KEY_VERSION` is 1. The
/// canonical form is pinned too, to tell a canonicalization change from a hashing change.
/// The keys were also checked against an independent computation (JavaScript's
/// `JSON.stringify` with sorted members, and SHA-256 over the same length-prefixed parts).
const GOLDEN: &[(&str, &str, &str, &str)] = &[
    // (tenant, request as sent, canonical request, key)
    (
        "team-a",
        r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}"#,
        r#"{"messages":[{"content":"Hello","role":"user"}],"model":"gpt-4o-mini"}"#,
        "v1:52c174c501d9495d3ca3d116b981352a652cf34ba9b53cc941ecd65a0a791f57",
    ),
    (
        "team-b",
        r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}"#,
        r#"{"messages":[{"content":"Hello","role":"user"}],"model":"gpt-4o-mini"}"#,
        "v1:0913084d10075260885c408bcddc92db344ad9c7d65a9a5d92ad417af029bf01",
    ),
    (
        "team-a",
        r#"{
            "stream": true, "user": "end-user-7", "metadata": {"trace": "abc"}, "store": false,
            "model": "gpt-4o", "seed": 42, "n": 1, "temperature": 0.2, "top_p": 0.95,
            "max_tokens": 256, "presence_penalty": 0.0, "frequency_penalty": 0.5,
            "logit_bias": {"50256": -100}, "stop": ["\n\n", "END"],
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                "schema": {"type": "object", "properties": {"answer": {"type": "string"}},
                           "required": ["answer"]}}},
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "messages": [{"role": "system", "content": "Answer in JSON."},
                         {"role": "user", "content": "Weather in Paris?"}]
        }"#,
        r#"{"frequency_penalty":0.5,"logit_bias":{"50256":-100},"max_tokens":256,"messages":[{"content":"Answer in JSON.","role":"system"},{"content":"Weather in Paris?","role":"user"}],"model":"gpt-4o","n":1,"parallel_tool_calls":false,"presence_penalty":0,"response_format":{"json_schema":{"name":"answer","schema":{"properties":{"answer":{"type":"string"}},"required":["answer"],"type":"object"}},"type":"json_schema"},"seed":42,"stop":["\n\n","END"],"temperature":0.2,"tool_choice":{"function":{"name":"get_weather"},"type":"function"},"tools":[{"function":{"description":"Weather for a city","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"type":"object"}},"type":"function"}],"top_p":0.95}"#,
        "v1:1137f6ad63b9e035ddb38b7ed9da2664650adc6de005f0ea05c64265b1e39592",
    ),
    (
        "team-a",
        r#"{"model":"gpt-4o","temperature":1.0e0,"max_tokens":1.024E3,
            "messages":[{"role":"user","content":"caf\u00e9 \u2615 \u0000 \"quoted\" \/path \ud83d\ude00"}]}"#,
        r#"{"max_tokens":1024,"messages":[{"content":"café ☕ \u0000 \"quoted\" /path 😀","role":"user"}],"model":"gpt-4o","temperature":1}"#,
        "v1:04e4befa005f24ac11d0d51bf4e1af4bfe18ceb260c8f5843925a63ee727b3c2",
    ),
    (
        "",
        r#"{"model": "meta-llama/Llama-3.1-8B-Instruct", "top_k": 40, "min_p": 0.05,
            "repetition_penalty": 1.1, "messages": [{"role": "user", "content": "Hi"}]}"#,
        r#"{"messages":[{"content":"Hi","role":"user"}],"min_p":0.05,"model":"meta-llama/Llama-3.1-8B-Instruct","repetition_penalty":1.1,"top_k":40}"#,
        "v1:37aff21b11d2ef843470b2c2072130363d415fa55d0d57dd70df588843179dc4",
    ),
    (
        "team-a",
        r#"{"model": "gpt-4o", "seed": 9007199254740993, "messages": []}"#,
        r#"{"messages":[],"model":"gpt-4o","seed":9007199254740992}"#,
        "v1:0e71df5a80bcec86dc6c8788980eeb441b7bcfc8800598fcc54182c5c6d803fd",
    ),
    (
        "tenant with spaces / ünïcode",
        r#"{}"#,
        r#"{}"#,
        "v1:fa68c09bcc2526a59c580cc4865e09b548a96a0f48b53b0b9adb3b227092939b",
    ),
];

#[test]
fn golden_keys() {
    assert_eq!(KEY_VERSION, 1, "new version: pin new golden keys");
    let mut failures = Vec::new();
    for (tenant, request, canonical, key) in GOLDEN {
        let request: Value = serde_json::from_str(request).unwrap();
        let actual_canonical = canonical_request(&request).unwrap();
        let actual_key = cache_key(tenant, &request).unwrap();
        if actual_canonical != *canonical || actual_key.as_str() != *key {
            failures.push(format!(
                "tenant {tenant:?}:\n  canonical {actual_canonical}\n  key {actual_key}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
