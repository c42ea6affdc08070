//! Incremental server-sent-events decoding (the WHATWG event-stream format).
//!
//! Bytes arrive in arbitrary pieces; events come out as soon as their terminating blank line
//! has arrived, never later. The usual one-line `data:` event is handed out as a slice of
//! the received bytes, without copying.

use bytes::{Bytes, BytesMut};

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the upstream named the event type.
    pub event: Option<Bytes>,
    /// The `data:` lines, joined with `\n`.
    pub data: Bytes,
}

/// The stream sent a line longer than the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// An incremental event-stream decoder.
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Where to resume looking for a line end in `buf`.
    scanned: usize,
    /// The previous piece ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
    data: Option<Bytes>,
    joined: Option<BytesMut>,
    event: Option<Bytes>,
    max_line: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(16 * 1024 * 1024)
    }
}

impl SseDecoder {
    /// A decoder that refuses lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        SseDecoder {
            buf: BytesMut::new(),
            scanned: 0,
            skip_lf: false,
            data: None,
            joined: None,
            event: None,
            max_line,
        }
    }

    /// Feeds received bytes.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.skip_lf && !bytes.is_empty() {
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
            self.skip_lf = false;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, LineTooLong> {
        loop {
            let Some(end) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(LineTooLong);
                }
                return Ok(None);
            };
            let end = self.scanned + end;
            let terminator = self.buf[end];
            let mut consumed = end + 1;
            if terminator == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => consumed += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line = self.buf.split_to(consumed).freeze().slice(..end);
            self.scanned = 0;
            if let Some(event) = self.line(line) {
                return Ok(Some(event));
            }
        }
    }

    /// At the end of the stream: the event left without its blank line, if any. Strict
    /// decoders drop it; upstreams that forget the final blank line are common enough that
    /// delivering it is the better choice.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let line = self.buf.split().freeze();
            if let Some(event) = self.line(line) {
                return Some(event);
            }
        }
        self.dispatch()
    }

    fn line(&mut self, line: Bytes) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(i) => {
                let start = if line.get(i + 1) == Some(&b' ') {
                    i + 2
                } else {
                    i + 1
                };
                (line.slice(..i), line.slice(start..))
            }
            None => (line.clone(), Bytes::new()),
        };
        match &field[..] {
            b"data" => self.push_data(value),
            b"event" => self.event = Some(value),
            _ => {}
        }
        None
    }

    fn push_data(&mut self, value: Bytes) {
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(b"\n");
            joined.extend_from_slice(&value);
        } else if let Some(first) = self.data.take() {
            let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(b"\n");
            joined.extend_from_slice(&value);
            self.joined = Some(joined);
        } else {
            self.data = Some(value);
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let data = match (self.joined.take(), self.data.take()) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(data)) => data,
            (None, None) => return None,
        };
        Some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for p in input.chunks(piece.max(1)) {
            d.push(p);
            while let Some(e) = d.next_event().unwrap() {
                out.push(e);
            }
        }
        out.extend(d.finish());
        out
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let input = b"data: {\"a\":1}\n\n: comment\r\ndata:two\r\ndata: lines\r\n\r\nevent: error\rdata: x\r\r\
data: [DONE]\n\n";
        let whole = decode_in_pieces(input, input.len());
        assert_eq!(whole.len(), 4);
        assert_eq!(&whole[0].data[..], b"{\"a\":1}");
        assert_eq!(&whole[1].data[..], b"two\nlines");
        assert_eq!(whole[2].event.as_deref(), Some(&b"error"[..]));
        assert_eq!(&whole[2].data[..], b"x");
        assert_eq!(&whole[3].data[..], b"[DONE]");
        for piece in 1..input.len() {
            assert_eq!(decode_in_pieces(input, piece), whole, "piece size {piece}");
        }
    }

    #[test]
    fn events_come_out_as_soon_as_complete() {
        let mut d = SseDecoder::default();
        d.push(b"data: one\n");
        assert_eq!(d.next_event().unwrap(), None);
        d.push(b"\ndata: tw");
        assert_eq!(&d.next_event().unwrap().unwrap().data[..], b"one");
        assert_eq!(d.next_event().unwrap(), None);
    }

    #[test]
    fn a_last_event_without_blank_line_is_delivered() {
        let events = decode_in_pieces(b"data: {}\n\ndata: last", 3);
        assert_eq!(events.len(), 2);
        assert_eq!(&events[1].data[..], b"last");
    }

    #[test]
    fn empty_data_and_fieldless_lines() {
        let events = decode_in_pieces(b"data\n\nretry: 10\nid: 1\n\n", 100);
        assert_eq!(events.len(), 1);
        assert_eq!(&events[0].data[..], b"");
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut d = SseDecoder::new(8);
        d.push(b"data: 0123456789");
        assert_eq!(d.next_event(), Err(LineTooLong));
    }
}
