//! Server-sent events, as OpenAI-compatible chat completion streams send them.
//!
//! The parser follows the [HTML living standard's] event stream rules where they matter to a
//! chat completions client: lines end with `\n`, `\r\n` or `\r` (a `\r\n` split across two
//! reads is one line end); a line starting with `:` is a comment; `data:` lines accumulate,
//! joined by `\n`, until a blank line dispatches the event; one space after the colon is
//! dropped; an event with no data is not dispatched; a leading byte-order mark is skipped.
//! Other fields (`event:`, `id:`, `retry:`) are read and ignored: OpenAI-compatible servers
//! carry everything in `data`.
//!
//! [HTML living standard's]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::collections::VecDeque;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// The largest event (its data plus an incomplete line) a stream may carry: 16 MiB. A stream
/// that goes past it without dispatching an event is cut off rather than let memory grow.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One event of a chat completions stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SseEvent {
    /// The data of one event: the values of its `data:` lines joined by `\n`. For the usual
    /// event of one `data:` line (one `chat.completion.chunk` JSON object, or an error
    /// object), these are the bytes after `data: ` exactly as received.
    Data(Bytes),
    /// `data: [DONE]`: the upstream finished the stream. It is the last item of an
    /// [`EventStream`](super::EventStream); a stream that ends without it was truncated.
    Done,
}

/// An event went past [`MAX_EVENT_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTooLarge;

/// The data lines of the event being read.
#[derive(Debug, Default)]
enum Data {
    #[default]
    None,
    /// One line: kept as a slice of the received bytes.
    One(Bytes),
    /// Several lines, joined by `\n`.
    Many(BytesMut),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(bytes) => bytes.len(),
        }
    }
}

/// An incremental event stream parser: feed it the body's chunks as they arrive, collect
/// the events.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// Bytes received that do not yet form a complete line.
    buf: BytesMut,
    /// The last line ended with `\r`: a `\n` at the start of the next chunk belongs to it.
    skip_lf: bool,
    /// A line has been read (the byte-order mark can only come first).
    started: bool,
    data: Data,
}

impl SseParser {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads `chunk`, appending the events it completes to `out`.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        out: &mut VecDeque<SseEvent>,
    ) -> Result<(), EventTooLarge> {
        let mut chunk = chunk;
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        // Only the bytes just appended can hold a line end: the rest was searched before.
        let mut searched = self.buf.len();
        self.buf.extend_from_slice(chunk);
        while let Some(offset) = self.buf[searched..]
            .iter()
            .position(|&byte| byte == b'\n' || byte == b'\r')
        {
            let end = searched + offset;
            let line = self.buf.split_to(end).freeze();
            if self.buf[0] == b'\r' {
                match self.buf.get(1) {
                    Some(b'\n') => self.buf.advance(2),
                    Some(_) => self.buf.advance(1),
                    None => {
                        self.buf.advance(1);
                        self.skip_lf = true;
                    }
                }
            } else {
                self.buf.advance(1);
            }
            searched = 0;
            self.line(line, out);
        }
        if self.buf.len().saturating_add(self.data.len()) > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// The body ended: the event left without its closing blank line is dropped (it may be
    /// cut short), unless it is `[DONE]`, which some servers send without the blank line.
    pub(crate) fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let line = self.buf.split().freeze();
            let mut ignored = VecDeque::new();
            self.line(line, &mut ignored);
        }
        match std::mem::take(&mut self.data) {
            Data::One(data) if data.as_ref() == b"[DONE]" => Some(SseEvent::Done),
            _ => None,
        }
    }

    fn line(&mut self, mut line: Bytes, out: &mut VecDeque<SseEvent>) {
        if !self.started {
            self.started = true;
            if line.starts_with(BOM) {
                line.advance(BOM.len());
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // a comment
        }
        let (field, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                let mut value = line.slice(colon + 1..);
                if value.first() == Some(&b' ') {
                    value.advance(1);
                }
                (&line[..colon], value)
            }
            None => (&line[..], Bytes::new()),
        };
        if field == b"data" {
            self.push_data(value);
        }
        // `event`, `id`, `retry` and unknown fields carry nothing a chat stream uses.
    }

    fn push_data(&mut self, value: Bytes) {
        self.data = match std::mem::take(&mut self.data) {
            Data::None => Data::One(value),
            Data::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                joined.extend_from_slice(&first);
                joined.put_u8(b'\n');
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.put_u8(b'\n');
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
        };
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        let data = match std::mem::take(&mut self.data) {
            Data::None => return,
            Data::One(data) => data,
            Data::Many(data) => data.freeze(),
        };
        if data.is_empty() {
            return;
        }
        out.push_back(if data.as_ref() == b"[DONE]" {
            SseEvent::Done
        } else {
            SseEvent::Data(data)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(text: &str) -> SseEvent {
        SseEvent::Data(Bytes::copy_from_slice(text.as_bytes()))
    }

    /// Feeds `chunks` one after the other and returns the events and what `finish` adds.
    fn parse(chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<SseEvent>) {
        let mut parser = SseParser::new();
        let mut out = VecDeque::new();
        for chunk in chunks {
            assert_eq!(parser.feed(chunk, &mut out), Ok(()));
        }
        let last = parser.finish();
        (out.into_iter().collect(), last)
    }

    #[test]
    fn an_openai_stream_gives_its_chunks_then_done() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        let (events, last) = parse(&[body]);
        assert_eq!(
            events,
            [data("{\"a\":1}"), data("{\"b\":2}"), SseEvent::Done]
        );
        assert_eq!(last, None);
    }

    #[test]
    fn every_split_of_the_bytes_gives_the_same_events() {
        let body: &[u8] =
            b"\xEF\xBB\xBF: hi\r\ndata: {\"a\":1}\r\n\r\nevent: x\rdata:two\rdata: lines\r\rdata: [DONE]\n\n";
        let expected = vec![data("{\"a\":1}"), data("two\nlines"), SseEvent::Done];
        for split in 0..=body.len() {
            let (events, last) = parse(&[&body[..split], &body[split..]]);
            assert_eq!(events, expected, "split at {split}");
            assert_eq!(last, None);
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(&bytes).0, expected, "one byte at a time");
    }

    #[test]
    fn comments_and_other_fields_are_ignored() {
        let (events, _) = parse(&[
            b": keep-alive\n\n: OPENROUTER PROCESSING\n\nid: 7\nretry: 10\nevent: message\ndata: x\n\n",
        ]);
        assert_eq!(events, [data("x")]);
    }

    #[test]
    fn data_is_kept_byte_for_byte_after_one_space() {
        let (events, _) = parse(&[b"data:  two spaces \ndata\n\ndata:no-space\n\n"]);
        assert_eq!(events, [data(" two spaces \n"), data("no-space")]);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        let (events, _) = parse(&[b"data:\n\n\n\nevent: ping\n\ndata: x\n\n"]);
        assert_eq!(events, [data("x")]);
    }

    #[test]
    fn a_pending_event_is_dropped_at_the_end_unless_it_is_done() {
        assert_eq!(parse(&[b"data: {\"a\":1}\n\ndata: {\"tru"]).1, None);
        assert_eq!(parse(&[b"data: {\"a\":1}\n"]).1, None);
        assert_eq!(parse(&[b"data: [DONE]\n"]).1, Some(SseEvent::Done));
        assert_eq!(parse(&[b"data: [DONE]"]).1, Some(SseEvent::Done));
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new();
        let mut out = VecDeque::new();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..=MAX_EVENT_BYTES / chunk.len() {
            result = parser.feed(&chunk, &mut out);
        }
        assert_eq!(result, Err(EventTooLarge));
    }
}
