//! Streams and completions, back and forth: assembling the `chat.completion` a stream of
//! `chat.completion.chunk`s amounts to (to store it, and to answer a non-streaming request from
//! a recorded stream), synthesizing a stream from a stored completion (to answer a streaming
//! request from it), and the [`Recording`] that lets one upstream stream feed many clients.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// Why chunks do not make a complete completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incomplete {
    /// A chunk is not a JSON object.
    #[error("chunk {0} is not a JSON object")]
    NotAnObject(usize),
    /// A choice never received its `finish_reason`.
    #[error("choice {0} has no finish_reason")]
    Unfinished(u64),
    /// No choice at all.
    #[error("the stream carried no choice")]
    NoChoice,
}

#[derive(Default)]
struct ChoiceParts {
    role: Option<Value>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    finish_reason: Option<Value>,
    logprobs: Vec<Value>,
}

/// The `chat.completion` that `chunks` (the `data:` payloads of a stream, `[DONE]` excluded)
/// amount to: message content concatenated per choice, tool calls merged by index (their
/// arguments concatenated), the last `usage` and `system_fingerprint` seen.
///
/// # Errors
/// [`Incomplete`] when a chunk is not an object or a choice never finished: such a stream
/// must not be stored.
pub fn assemble(chunks: &[Bytes]) -> Result<Bytes, Incomplete> {
    let mut head = Map::new();
    let mut choices: BTreeMap<u64, ChoiceParts> = BTreeMap::new();
    for (n, chunk) in chunks.iter().enumerate() {
        let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(chunk) else {
            return Err(Incomplete::NotAnObject(n));
        };
        for field in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(value) = chunk.get(field).filter(|v| !v.is_null()) {
                head.insert(field.to_owned(), value.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|v| !v.is_null()) {
            head.insert("usage".to_owned(), usage.clone());
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let parts = choices.entry(index).or_default();
            if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
                if let Some(role) = delta.get("role").filter(|v| !v.is_null()) {
                    parts.role = Some(role.clone());
                }
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    parts.content.get_or_insert_with(String::new).push_str(text);
                }
                if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                    parts.refusal.get_or_insert_with(String::new).push_str(text);
                }
                for call in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                    merge_tool_call(parts.tool_calls.entry(call_index).or_default(), call);
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|v| !v.is_null()) {
                parts.finish_reason = Some(reason.clone());
            }
            if let Some(logprobs) = choice.get("logprobs").filter(|v| !v.is_null()) {
                parts.logprobs.push(logprobs.clone());
            }
        }
    }
    if choices.is_empty() {
        return Err(Incomplete::NoChoice);
    }
    let mut assembled = Vec::with_capacity(choices.len());
    for (index, parts) in choices {
        let Some(finish_reason) = parts.finish_reason else {
            return Err(Incomplete::Unfinished(index));
        };
        let mut message = Map::new();
        message.insert(
            "role".to_owned(),
            parts.role.unwrap_or_else(|| json!("assistant")),
        );
        message.insert(
            "content".to_owned(),
            parts.content.map_or(Value::Null, Value::String),
        );
        if let Some(refusal) = parts.refusal {
            message.insert("refusal".to_owned(), Value::String(refusal));
        }
        if !parts.tool_calls.is_empty() {
            message.insert(
                "tool_calls".to_owned(),
                Value::Array(parts.tool_calls.into_values().map(Value::Object).collect()),
            );
        }
        let mut choice = Map::new();
        choice.insert("index".to_owned(), json!(index));
        choice.insert("message".to_owned(), Value::Object(message));
        choice.insert("finish_reason".to_owned(), finish_reason);
        if !parts.logprobs.is_empty() {
            choice.insert("logprobs".to_owned(), merge_logprobs(parts.logprobs));
        }
        assembled.push(Value::Object(choice));
    }
    let mut completion = Map::new();
    completion.insert(
        "id".to_owned(),
        head.remove("id").unwrap_or_else(|| json!("")),
    );
    completion.insert("object".to_owned(), json!("chat.completion"));
    for field in ["created", "model", "system_fingerprint", "service_tier"] {
        if let Some(value) = head.remove(field) {
            completion.insert(field.to_owned(), value);
        }
    }
    completion.insert("choices".to_owned(), Value::Array(assembled));
    if let Some(usage) = head.remove("usage") {
        completion.insert("usage".to_owned(), usage);
    }
    Ok(Bytes::from(Value::Object(completion).to_string()))
}

fn merge_tool_call(into: &mut Map<String, Value>, delta: &Value) {
    for field in ["id", "type"] {
        if let Some(value) = delta.get(field).filter(|v| !v.is_null()) {
            into.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(function) = delta.get("function").and_then(Value::as_object) {
        let target = into
            .entry("function")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(target) = target {
            if let Some(name) = function.get("name").and_then(Value::as_str) {
                target.insert("name".to_owned(), json!(name));
            }
            if let Some(arguments) = function.get("arguments").and_then(Value::as_str) {
                let joined = format!(
                    "{}{arguments}",
                    target
                        .get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
                target.insert("arguments".to_owned(), Value::String(joined));
            }
        }
    }
}

fn merge_logprobs(parts: Vec<Value>) -> Value {
    let mut content = Vec::new();
    for part in parts {
        if let Some(items) = part.get("content").and_then(Value::as_array) {
            content.extend(items.iter().cloned());
        }
    }
    json!({ "content": content })
}

/// The stream that answers a streaming request from a stored non-streaming `completion`: a
/// role chunk, the content in word-sized pieces, tool calls, a chunk with the finish reason,
/// and, when the completion has `usage`, the usage chunk (`"choices": []`) that OpenAI sends
/// for `stream_options.include_usage` (the gateway leaves it out for a request that does not
/// ask for it). Never one lump: clients render a stream incrementally.
///
/// # Errors
/// When `completion` is not a `chat.completion` object.
pub fn synthesize(completion: &[u8]) -> Result<Vec<Bytes>, Incomplete> {
    let Ok(Value::Object(completion)) = serde_json::from_slice::<Value>(completion) else {
        return Err(Incomplete::NotAnObject(0));
    };
    let mut head = Map::new();
    head.insert(
        "id".to_owned(),
        completion.get("id").cloned().unwrap_or_else(|| json!("")),
    );
    head.insert("object".to_owned(), json!("chat.completion.chunk"));
    for field in ["created", "model", "system_fingerprint"] {
        if let Some(value) = completion.get(field) {
            head.insert(field.to_owned(), value.clone());
        }
    }
    let chunk = |choice: Value| {
        let mut chunk = head.clone();
        chunk.insert("choices".to_owned(), json!([choice]));
        Bytes::from(Value::Object(chunk).to_string())
    };
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or(Incomplete::NoChoice)?;
    let mut out = Vec::new();
    for choice in choices {
        let index = choice.get("index").cloned().unwrap_or_else(|| json!(0));
        let message = choice.get("message").cloned().unwrap_or_else(|| json!({}));
        let role = message
            .get("role")
            .cloned()
            .unwrap_or_else(|| json!("assistant"));
        // Content "" in the role chunk only when there is content: a tool-call answer's
        // content is null, and must assemble back to null.
        let delta = if message.get("content").is_some_and(Value::is_string) {
            json!({ "role": role, "content": "" })
        } else {
            json!({ "role": role })
        };
        out.push(chunk(
            json!({ "index": index, "delta": delta, "finish_reason": null }),
        ));
        if let Some(content) = message.get("content").and_then(Value::as_str) {
            for piece in pieces(content) {
                out.push(chunk(
                    json!({ "index": index, "delta": { "content": piece }, "finish_reason": null }),
                ));
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(n, call)| {
                    let mut call = call.clone();
                    if let Some(call) = call.as_object_mut() {
                        call.insert("index".to_owned(), json!(n));
                    }
                    call
                })
                .collect();
            out.push(chunk(
                json!({ "index": index, "delta": { "tool_calls": calls }, "finish_reason": null }),
            ));
        }
        let finish_reason = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or_else(|| json!("stop"));
        out.push(chunk(
            json!({ "index": index, "delta": {}, "finish_reason": finish_reason }),
        ));
    }
    if let Some(usage) = completion.get("usage") {
        let mut last = head.clone();
        last.insert("choices".to_owned(), json!([]));
        last.insert("usage".to_owned(), usage.clone());
        out.push(Bytes::from(Value::Object(last).to_string()));
    }
    Ok(out)
}

/// `text` cut after each run of whitespace: word-sized pieces that join back to `text`.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push(&text[start..i]);
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// How a recorded stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `[DONE]` arrived.
    Done,
    /// It broke off (the message says why): clients get an error, nothing is stored.
    Failed(String),
}

#[derive(Default)]
struct RecordingState {
    events: Vec<Bytes>,
    ending: Option<Ending>,
}

/// One upstream stream fanned out to every client that asked for the same thing at the same
/// time: the leader appends events as they arrive, each client reads from the first event
/// on and then follows live. Written here because `tokio::sync::broadcast` drops what a late
/// subscriber missed, and a follower must see the stream from its start.
#[derive(Default)]
pub struct Recording {
    state: Mutex<RecordingState>,
    changed: Notify,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

/// What a reader of a [`Recording`] gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// An event.
    Event(Bytes),
    /// The stream ended so.
    End(Ending),
}

impl Recording {
    /// An empty recording.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, RecordingState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends an event and wakes the readers.
    pub fn push(&self, event: Bytes) {
        self.lock().events.push(event);
        self.changed.notify_waiters();
    }

    /// Ends the recording and wakes the readers.
    pub fn finish(&self, ending: Ending) {
        self.lock().ending.get_or_insert(ending);
        self.changed.notify_waiters();
    }

    /// Every event so far and the ending, once ended.
    #[must_use]
    pub fn snapshot(&self) -> (Vec<Bytes>, Option<Ending>) {
        let state = self.lock();
        (state.events.clone(), state.ending.clone())
    }

    /// Item `at` of the recording, waiting for it.
    pub async fn next(&self, at: usize) -> Next {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let state = self.lock();
                if let Some(event) = state.events.get(at) {
                    return Next::Event(event.clone());
                }
                if let Some(ending) = &state.ending {
                    return Next::End(ending.clone());
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(value: Value) -> Bytes {
        Bytes::from(value.to_string())
    }

    #[test]
    fn a_stream_assembles_into_its_completion() -> Result<(), Incomplete> {
        let chunks = vec![
            chunk(
                json!({"id":"c1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
            ),
            chunk(
                json!({"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hello "},"finish_reason":null}]}),
            ),
            chunk(
                json!({"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\""}}]},"finish_reason":null}]}),
            ),
            chunk(
                json!({"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"world","tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":null}]}),
            ),
            chunk(
                json!({"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"total_tokens":3}}),
            ),
        ];
        let completion: Value = serde_json::from_slice(&assemble(&chunks)?).unwrap_or_default();
        assert_eq!(
            completion,
            json!({
                "id": "c1", "object": "chat.completion", "created": 7, "model": "m",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant", "content": "Hello world",
                        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]
                    },
                    "finish_reason": "tool_calls"
                }],
                "usage": {"total_tokens": 3}
            })
        );
        Ok(())
    }

    #[test]
    fn an_unfinished_stream_does_not_assemble() {
        let chunks = vec![chunk(
            json!({"id":"c","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}),
        )];
        assert_eq!(assemble(&chunks), Err(Incomplete::Unfinished(0)));
        assert_eq!(assemble(&[]), Err(Incomplete::NoChoice));
        assert_eq!(
            assemble(&[Bytes::from_static(b"[1]")]),
            Err(Incomplete::NotAnObject(0))
        );
    }

    #[test]
    fn a_synthesized_stream_assembles_back_and_is_not_one_lump() -> Result<(), Incomplete> {
        let completion = chunk(json!({
            "id": "c2", "object": "chat.completion", "created": 9, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two  three\nfour"}, "finish_reason": "stop"}],
            "usage": {"total_tokens": 4}
        }));
        let chunks = synthesize(&completion)?;
        assert!(chunks.len() >= 6, "{} chunks", chunks.len());
        let back: Value = serde_json::from_slice(&assemble(&chunks)?).unwrap_or_default();
        let original: Value = serde_json::from_slice(&completion).unwrap_or_default();
        assert_eq!(back, original);
        Ok(())
    }

    #[test]
    fn pieces_join_back() {
        for text in ["", "a", "a b", "  lead", "trail  ", "one two  three\nfour"] {
            assert_eq!(pieces(text).concat(), text);
        }
        assert_eq!(pieces("a b c"), ["a ", "b ", "c"]);
    }

    #[tokio::test]
    async fn readers_see_the_recording_from_its_start_and_follow_it() {
        let recording = Recording::new();
        recording.push(Bytes::from_static(b"1"));
        let reader = {
            let recording = Arc::clone(&recording);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut at = 0;
                loop {
                    match recording.next(at).await {
                        Next::Event(event) => {
                            seen.push(event);
                            at += 1;
                        }
                        Next::End(ending) => return (seen, ending),
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        recording.push(Bytes::from_static(b"2"));
        recording.finish(Ending::Done);
        match reader.await {
            Ok((seen, ending)) => {
                assert_eq!(seen, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
                assert_eq!(ending, Ending::Done);
            }
            Err(err) => panic!("reader failed: {err}"),
        }
    }
}
