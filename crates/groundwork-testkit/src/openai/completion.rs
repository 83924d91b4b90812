//! What the fake upstream answers: the request fields it reads, the deterministic content,
//! and the JSON bodies and server-sent events of OpenAI's chat completions API.

use axum::body::Bytes;
use serde::Serialize;
use serde_json::Value;

/// The `created` timestamp of every completion and chunk (fixed, so that answers to the same
/// request differ only by their `id`).
pub(crate) const CREATED: u64 = 1_700_000_000;

/// What the fake reads from a chat request.
#[derive(Debug)]
pub(crate) struct Chat {
    /// The request's `model`, echoed in the answer.
    pub(crate) model: String,
    /// The request's `stream`.
    pub(crate) stream: bool,
    /// The request's `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    /// The assistant's answer: `echo: ` and the text of the last user message.
    pub(crate) content: String,
    /// The words of every message's text: the fake's token count.
    pub(crate) prompt_tokens: u64,
}

impl Chat {
    /// Reads a request body; the error is the message of the `400` answer.
    pub(crate) fn parse(request: Option<&Value>) -> Result<Self, &'static str> {
        let Some(request) = request.and_then(Value::as_object) else {
            return Err("The request body must be a JSON object.");
        };
        let Some(model) = request.get("model").and_then(Value::as_str) else {
            return Err("You must provide a model parameter.");
        };
        let Some(messages) = request.get("messages").and_then(Value::as_array) else {
            return Err("'messages' must be an array.");
        };
        let last_user = messages
            .iter()
            .rev()
            .find(|message| message.get("role").and_then(Value::as_str) == Some("user"))
            .map(text_of)
            .unwrap_or_default();
        let prompt_tokens = messages
            .iter()
            .map(|message| words(&text_of(message)))
            .sum();
        Ok(Self {
            model: model.to_owned(),
            stream: request.get("stream").and_then(Value::as_bool) == Some(true),
            include_usage: request
                .get("stream_options")
                .and_then(|options| options.get("include_usage"))
                .and_then(Value::as_bool)
                == Some(true),
            content: format!("echo: {last_user}"),
            prompt_tokens,
        })
    }

    /// The token counts of the answer.
    fn usage(&self) -> Usage {
        let completion_tokens = words(&self.content);
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }

    /// The `chat.completion` body answering call number `call`.
    pub(crate) fn completion(&self, call: u64) -> Vec<u8> {
        let completion = Completion {
            id: id(call),
            object: "chat.completion",
            created: CREATED,
            model: &self.model,
            choices: [Choice {
                index: 0,
                message: Message {
                    role: "assistant",
                    content: &self.content,
                },
                logprobs: None,
                finish_reason: "stop",
            }],
            usage: self.usage(),
        };
        serde_json::to_vec(&completion).unwrap_or_default()
    }

    /// The server-sent events answering call number `call`, the content cut into `pieces`
    /// (see [`split`]): the role chunk, one chunk per piece, the finish chunk, the usage chunk
    /// when asked for, and `[DONE]`.
    pub(crate) fn events(&self, call: u64, pieces: usize) -> Vec<Bytes> {
        let id = id(call);
        let chunk = |delta, finish_reason| self.chunk(&id, delta, finish_reason);
        let pieces = split(&self.content, pieces);
        let mut events = Vec::with_capacity(pieces.len() + 4);
        events.push(event(&chunk(
            Delta {
                role: Some("assistant"),
                content: None,
            },
            None,
        )));
        for piece in pieces {
            events.push(event(&chunk(
                Delta {
                    role: None,
                    content: Some(piece),
                },
                None,
            )));
        }
        events.push(event(&chunk(Delta::default(), Some("stop"))));
        if self.include_usage {
            events.push(event(&ChunkBody {
                choices: Vec::new(),
                usage: Some(Some(self.usage())),
                ..chunk(Delta::default(), None)
            }));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    /// A `chat.completion.chunk` with one choice.
    fn chunk<'a>(
        &'a self,
        id: &'a str,
        delta: Delta<'a>,
        finish_reason: Option<&'static str>,
    ) -> ChunkBody<'a> {
        ChunkBody {
            id,
            object: "chat.completion.chunk",
            created: CREATED,
            model: &self.model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            // OpenAI sends `"usage":null` in every chunk when usage is asked for.
            usage: self.include_usage.then_some(None),
        }
    }
}

/// The `id` of the answer to call number `call`.
fn id(call: u64) -> String {
    format!("chatcmpl-mock-{call}")
}

/// One server-sent event carrying `data` as JSON.
fn event(data: &impl Serialize) -> Bytes {
    let mut event = b"data: ".to_vec();
    // Serializing these plain structs cannot fail.
    let _ = serde_json::to_writer(&mut event, data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// The text of a message: its `content` string, or its text parts joined by a space; empty
/// without either.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// How many whitespace-separated words `text` has.
fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Cuts `content` into `pieces` parts of nearly equal length in characters (the first ones one
/// character longer), fewer when it has fewer characters, at least one unless it is empty.
pub(crate) fn split(content: &str, pieces: usize) -> Vec<&str> {
    let chars = content.chars().count();
    let pieces = pieces.max(1).min(chars);
    if pieces == 0 {
        return Vec::new();
    }
    let (base, longer) = (chars / pieces, chars % pieces);
    let mut parts = Vec::with_capacity(pieces);
    let mut rest = content;
    for index in 0..pieces {
        let len = base + usize::from(index < longer);
        let end = rest
            .char_indices()
            .nth(len)
            .map_or(rest.len(), |(end, _)| end);
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// The OpenAI-style error body: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_body(status: u16, message: &str) -> Vec<u8> {
    let (kind, code) = match status {
        400 => ("invalid_request_error", None),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        429 => ("requests", Some("rate_limit_exceeded")),
        500..=599 => ("server_error", Some("server_error")),
        _ => ("invalid_request_error", Some("mock_error")),
    };
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            param: None,
            code,
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct ChunkBody<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent unless usage was asked for; then `null` in every chunk but the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn split_keeps_every_character() {
        assert_eq!(split("echo: hi", 3), ["ech", "o: ", "hi"]);
        assert_eq!(split("héllo", 2), ["hél", "lo"]);
        assert_eq!(split("ab", 8), ["a", "b"]);
        assert_eq!(split("abc", 0), ["abc"]);
        assert!(split("", 4).is_empty());
    }

    #[test]
    fn the_last_user_message_is_echoed() {
        let request = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "echo: first"},
                {"role": "user", "content": [
                    {"type": "text", "text": "second"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": "question"},
                ]},
            ],
        });
        let chat = Chat::parse(Some(&request));
        let chat = chat
            .as_ref()
            .map(|chat| (chat.content.as_str(), chat.prompt_tokens));
        assert_eq!(chat, Ok(("echo: second question", 7)));
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert!(Chat::parse(None).is_err());
        assert!(Chat::parse(Some(&json!([]))).is_err());
        assert!(Chat::parse(Some(&json!({"messages": []}))).is_err());
        assert!(Chat::parse(Some(&json!({"model": "m"}))).is_err());
    }
}
