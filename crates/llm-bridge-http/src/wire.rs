//! The HTTP/1.1 wire (RFC 9112) of the lanes' own cleartext upstream connections
//! ([`crate::h1`]): a request's head, a response's head, and the framing of the response's
//! body, kept apart from sockets so that each is tested on bytes, in whatever pieces they
//! arrive.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};

/// Most headers a response head may have (hyper's limit).
const MAX_HEADERS: usize = 100;
/// The most a response head may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (with its extensions), and the most trailers, accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// What is wrong with what an upstream sent.
#[derive(Debug)]
pub(crate) struct WireError(pub(crate) &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

/// Writes the head of `request` (method, origin-form target, its headers, and the
/// `content-length` of a `body_len`-byte body) to `out`. Header names go out as the `http`
/// crate keeps them (lower case), as hyper writes them; values cannot hold CR or LF.
pub(crate) fn encode_request(request: &Parts, body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    match request.uri.path_and_query().map(|p| p.as_str()) {
        Some(target) if !target.is_empty() => out.extend_from_slice(target.as_bytes()),
        _ => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        // The framing is the body's own; the connection is ours to keep.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(
        request.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS
    );
    if body_len > 0 || !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response's head, parsed.
pub(crate) struct Head {
    pub(crate) response: Response<()>,
    /// The bytes the head took.
    pub(crate) len: usize,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub(crate) reusable: bool,
}

/// The response head at the start of `buf`, answering a `method` request; `None` while it
/// is incomplete. An interim (1xx) response is returned like any other: the caller skips it.
pub(crate) fn parse_head(buf: &[u8], method: &Method) -> Result<Option<Head>, WireError> {
    // Left uninitialised: httparse writes the ones it finds (a hundred empty headers
    // written first were 3.2 KB of stores for every response).
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Err(WireError("the upstream's response head is too large"));
        }
        Err(_) => return Err(WireError("the upstream sent an invalid response head")),
    };
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(WireError("the upstream sent an invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError("the upstream switched protocols unasked"));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    // HTTP/1.0 keep-alive is not worth its rules: such a connection is used once.
    let mut close = version == Version::HTTP_10;
    let mut transfer_encoding = None;
    let mut length = None;
    // The values share one copy of the head, not a block each (nor the read buffer, which
    // a stream would keep for its life).
    let head = Bytes::copy_from_slice(&buf[..len]);
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| WireError("the upstream sent an invalid header name"))?;
        // httparse's values are slices of `buf`; one that were not (an empty one, say) is copied.
        let value = match (header.value.as_ptr() as usize).checked_sub(buf.as_ptr() as usize) {
            Some(at) if at + header.value.len() <= len => {
                HeaderValue::from_maybe_shared(head.slice(at..at + header.value.len()))
            }
            _ => HeaderValue::from_bytes(header.value),
        }
        .map_err(|_| WireError("the upstream sent an invalid header value"))?;
        if name == CONNECTION {
            close |= tokens(header.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if name == TRANSFER_ENCODING {
            // The last coding of the last header is what frames the body.
            transfer_encoding = tokens(header.value).last().map(<[u8]>::to_vec);
        } else if name == CONTENT_LENGTH {
            for token in tokens(header.value) {
                let n = std::str::from_utf8(token)
                    .ok()
                    .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or(WireError("the upstream sent an invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError("the upstream sent conflicting content-lengths"));
                }
                length = Some(n);
            }
        }
        map.append(name, value);
    }
    let framing = if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Done
    } else if let Some(coding) = transfer_encoding {
        // With a content-length too, the message was meant to smuggle: not kept (RFC 9112 6.3).
        close |= length.is_some();
        if coding.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked(Chunked::Size {
                size: 0,
                digits: 0,
                extension: false,
                line: 0,
            })
        } else {
            close = true;
            Framing::Close
        }
    } else if let Some(length) = length {
        Framing::length(length)
    } else {
        close = true;
        Framing::Close
    };
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Some(Head {
        response,
        len,
        framing,
        reusable: !close,
    }))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// How a response's body ends, and how much of it is still to come.
#[derive(Debug)]
pub(crate) enum Framing {
    /// This many bytes more.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunked),
    /// Everything until the upstream closes the connection.
    Close,
    /// The body has ended.
    Done,
    /// What followed the last data was not a chunk's framing: said at the next read.
    Broken(&'static str),
}

/// Where a chunked body's decoder is.
#[derive(Debug)]
pub(crate) enum Chunked {
    /// In a chunk-size line: its value so far, its digits, whether past them (in an
    /// extension, ignored), and its length.
    Size {
        size: u64,
        digits: u8,
        extension: bool,
        line: usize,
    },
    /// In a chunk's data, with this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk, in the trailers (ignored): the length of the current line and
    /// of them all.
    Trailers { line: usize, total: usize },
}

impl Framing {
    pub(crate) fn length(length: u64) -> Self {
        if length == 0 {
            Framing::Done
        } else {
            Framing::Length(length)
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framing::Done)
    }

    /// Takes the next piece of body data out of `buf` (without copying it); `None` when
    /// `buf` holds no more (read more, unless [`is_done`](Self::is_done)).
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            match self {
                Framing::Done => return Ok(None),
                _ if buf.is_empty() => return Ok(None),
                Framing::Close => return Ok(Some(buf.split().freeze())),
                Framing::Length(left) => {
                    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    *self = Framing::length(*left - n as u64);
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunked::Data(left)) => {
                    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        // The framing after the data is read now: the buffer is then empty
                        // (not kept for a CRLF), and the end is seen with the last data.
                        *self = Framing::Chunked(Chunked::DataEnd);
                        if let Err(e) = self.skip(buf) {
                            *self = Framing::Broken(e.0);
                        }
                    }
                    return Ok(Some(data));
                }
                Framing::Broken(why) => return Err(WireError(why)),
                Framing::Chunked(_) => self.skip(buf)?,
            }
        }
    }

    /// Consumes a chunked body's framing at the start of `buf`, up to its next data or its end.
    fn skip(&mut self, buf: &mut BytesMut) -> Result<(), WireError> {
        if let Framing::Chunked(state) = self {
            if state.skip(buf)? == Some(true) {
                *self = Framing::Done;
            }
        }
        Ok(())
    }

    /// The connection has closed: fine for a body that runs until then, or had ended.
    pub(crate) fn closed(&mut self) -> Result<(), WireError> {
        match self {
            Framing::Close | Framing::Done => {
                *self = Framing::Done;
                Ok(())
            }
            _ => Err(WireError(
                "the upstream closed the connection before the end of the response body",
            )),
        }
    }
}

impl Chunked {
    /// Consumes the framing bytes at the start of `buf` (a size line, a chunk's CRLF,
    /// trailers) up to the next data or the end of the body: `Some(true)` at the end,
    /// `Some(false)` at data, `None` when `buf` ran out first.
    fn skip(&mut self, buf: &mut BytesMut) -> Result<Option<bool>, WireError> {
        let mut at = 0;
        let outcome = loop {
            let Some(&byte) = buf.get(at) else {
                break None;
            };
            at += 1;
            match self {
                Chunked::Size {
                    size,
                    digits,
                    extension,
                    line,
                } => {
                    *line += 1;
                    if *line > MAX_CHUNK_LINE {
                        return Err(WireError("the upstream sent an overlong chunk-size line"));
                    }
                    match byte {
                        b'\n' if *digits == 0 => {
                            return Err(WireError("the upstream sent a chunk without a size"));
                        }
                        b'\n' if *size == 0 => {
                            *self = Chunked::Trailers { line: 0, total: 0 };
                        }
                        b'\n' => {
                            *self = Chunked::Data(*size);
                            break Some(false);
                        }
                        b'\r' => {}
                        _ if *extension => {}
                        b';' | b' ' | b'\t' if *digits > 0 => *extension = true,
                        _ => {
                            let digit = (byte as char)
                                .to_digit(16)
                                .filter(|_| *digits < 16)
                                .ok_or(WireError("the upstream sent an invalid chunk size"))?;
                            *size = *size << 4 | u64::from(digit);
                            *digits += 1;
                        }
                    }
                }
                Chunked::DataEnd => match byte {
                    b'\r' => {}
                    b'\n' => {
                        *self = Chunked::Size {
                            size: 0,
                            digits: 0,
                            extension: false,
                            line: 0,
                        };
                    }
                    _ => return Err(WireError("the upstream sent a chunk longer than its size")),
                },
                Chunked::Trailers { line, total } => {
                    *total += 1;
                    if *total > MAX_TRAILERS {
                        return Err(WireError("the upstream sent too many trailers"));
                    }
                    match byte {
                        b'\n' if *line == 0 => break Some(true),
                        b'\n' => *line = 0,
                        b'\r' => {}
                        _ => *line += 1,
                    }
                }
                Chunked::Data(_) => unreachable!("data is taken by `Framing::next`"),
            }
        };
        buf.advance(at);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), &Method::POST)
            .expect("a valid head")
            .expect("a whole head")
    }

    /// The body `framing` makes of `wire` given in pieces of `piece` bytes, and whether
    /// it ended.
    fn decode(
        mut framing: Framing,
        wire: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, bool), WireError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for part in wire.chunks(piece) {
            buf.extend_from_slice(part);
            while let Some(data) = framing.next(&mut buf)? {
                assert!(!data.is_empty(), "no empty pieces");
                body.extend_from_slice(&data);
            }
        }
        assert!(
            buf.is_empty() || framing.is_done(),
            "all of it read unless ended"
        );
        Ok((body, framing.is_done()))
    }

    #[test]
    fn a_request_head_has_its_target_headers_and_length() {
        let mut request = http::Request::post("http://127.0.0.1:8080/v1/chat/completions?x=1")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json")
            .header("content-length", "999")
            .header("connection", "upgrade")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_request(&request.clone().into_parts().0, 2, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n"
        );
        *request.method_mut() = Method::GET;
        *request.uri_mut() = "http://127.0.0.1:8080".parse().unwrap();
        request.headers_mut().clear();
        let mut out = Vec::new();
        encode_request(&request.into_parts().0, 0, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn a_response_head_is_read_whole_or_not_at_all() {
        let text = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n";
        let end = text.find("\r\n\r\n").unwrap() + 4;
        for cut in 0..end {
            assert!(
                parse_head(&text.as_bytes()[..cut], &Method::POST)
                    .unwrap()
                    .is_none()
            );
        }
        let h = head(text);
        assert_eq!(h.len, end);
        assert_eq!(h.response.status(), StatusCode::OK);
        assert_eq!(h.response.headers()["content-type"], "text/event-stream");
        assert!(matches!(h.framing, Framing::Chunked(_)));
        assert!(h.reusable);
    }

    #[test]
    fn the_head_says_how_the_body_ends_and_whether_the_connection_is_kept() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-empty:\r\nx-id:  a b \r\n\r\n");
        assert!(matches!(h.framing, Framing::Length(12)) && h.reusable);
        assert_eq!(h.response.headers()["x-empty"], "");
        assert_eq!(h.response.headers()["x-id"], "a b");
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert!(h.framing.is_done() && h.reusable);
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n");
        assert!(matches!(h.framing, Framing::Length(3)));
        let h =
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!h.reusable, "connection: close");
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(h.framing, Framing::Close) && !h.reusable);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(matches!(h.framing, Framing::Length(2)) && !h.reusable);
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 9\r\n\r\n",
        );
        assert!(matches!(h.framing, Framing::Chunked(_)) && !h.reusable);
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert!(matches!(h.framing, Framing::Close) && !h.reusable);
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let h = head(&format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n"));
            assert!(h.framing.is_done() && h.reusable, "{status}");
        }
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert!(h.framing.is_done());
    }

    #[test]
    fn a_bad_head_is_refused_with_what_is_wrong() {
        for (text, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "invalid content-length",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\n",
                "invalid content-length",
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "invalid response head"),
        ] {
            let e = parse_head(text.as_bytes(), &Method::POST)
                .err()
                .expect(text);
            assert!(e.0.contains(why), "{text}: {e}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        let e = parse_head(long.as_bytes(), &Method::POST).err().unwrap();
        assert!(e.0.contains("too large"), "{e}");
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x: y\r\n".repeat(MAX_HEADERS + 1)
        );
        let e = parse_head(many.as_bytes(), &Method::POST).err().unwrap();
        assert!(e.0.contains("too large"), "{e}");
    }

    #[test]
    fn a_chunked_body_decodes_in_any_pieces() {
        let wire =
            b"5\r\nhello\r\n1;ext=\"a;b\"\r\n \r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in 1..=wire.len() {
            let (body, ended) = decode(Framing::Chunked(start()), wire, piece).unwrap();
            assert_eq!(body, b"hello 0123456789", "pieces of {piece}");
            assert!(ended);
        }
        // Bare LFs are taken, as hyper takes them.
        let (body, ended) = decode(Framing::Chunked(start()), b"2\nok\n0\n\n", 1).unwrap();
        assert_eq!((&body[..], ended), (&b"ok"[..], true));
        // The end is seen with the last data, when it came with it.
        let mut framing = Framing::Chunked(start());
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\n"[..]);
        assert_eq!(&framing.next(&mut buf).unwrap().unwrap()[..], b"ok");
        assert!(buf.is_empty() && framing.is_done());
        // What follows the end is left for whoever reads next.
        let mut framing = Framing::Chunked(start());
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1"[..]);
        assert_eq!(&framing.next(&mut buf).unwrap().unwrap()[..], b"ok");
        assert!(framing.next(&mut buf).unwrap().is_none() && framing.is_done());
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    fn start() -> Chunked {
        Chunked::Size {
            size: 0,
            digits: 0,
            extension: false,
            line: 0,
        }
    }

    #[test]
    fn a_bad_chunk_is_refused() {
        for (wire, why) in [
            (&b"g\r\n"[..], "invalid chunk size"),
            (b"\r\n", "without a size"),
            (b"2\r\nokk\r\n", "longer than its size"),
            (b"11111111111111111\r\n", "invalid chunk size"),
        ] {
            let e = decode(Framing::Chunked(start()), wire, 1).expect_err("refused");
            assert!(e.0.contains(why), "{e}");
        }
        let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        let e = decode(Framing::Chunked(start()), long.as_bytes(), 7)
            .err()
            .unwrap();
        assert!(e.0.contains("overlong"), "{e}");
        let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        let e = decode(Framing::Chunked(start()), trailers.as_bytes(), 100)
            .err()
            .unwrap();
        assert!(e.0.contains("trailers"), "{e}");
    }

    #[test]
    fn a_sized_body_ends_at_its_length_and_a_closing_one_at_the_close() {
        for piece in [1, 3, 100] {
            let (body, ended) = decode(Framing::length(5), b"hello", piece).unwrap();
            assert_eq!((&body[..], ended), (&b"hello"[..], true));
        }
        let mut framing = Framing::length(5);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(&framing.next(&mut buf).unwrap().unwrap()[..], b"hel");
        assert!(framing.closed().is_err(), "cut short");
        let mut framing = Framing::Chunked(start());
        assert!(framing.closed().is_err(), "cut short");
        let (body, ended) = decode(Framing::Close, b"all of it", 4).unwrap();
        assert_eq!((&body[..], ended), (&b"all of it"[..], false));
        let mut framing = Framing::Close;
        assert!(framing.closed().is_ok() && framing.is_done());
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        /// `data` in chunks of the given sizes (the rest in one more), with extensions and
        /// trailers now and then, as any upstream may frame it.
        fn chunked(data: &[u8], sizes: &[usize], extension: bool, trailer: bool) -> Vec<u8> {
            let mut wire = Vec::new();
            let mut rest = data;
            let mut sizes = sizes.iter();
            while !rest.is_empty() {
                let n = sizes.next().map_or(rest.len(), |&s| s.clamp(1, rest.len()));
                wire.extend_from_slice(format!("{n:x}").as_bytes());
                if extension {
                    wire.extend_from_slice(b";name=value");
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n");
            if trailer {
                wire.extend_from_slice(b"x-checksum: 1\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            wire
        }

        proptest! {
            #[test]
            fn any_chunked_body_decodes_to_its_data_in_any_pieces(
                data in prop::collection::vec(any::<u8>(), 0..600),
                sizes in prop::collection::vec(1usize..200, 0..8),
                piece in 1usize..64,
                extension in any::<bool>(),
                trailer in any::<bool>(),
            ) {
                let wire = chunked(&data, &sizes, extension, trailer);
                let (body, ended) = decode(Framing::Chunked(start()), &wire, piece).unwrap();
                prop_assert_eq!(body, data);
                prop_assert!(ended);
            }

            #[test]
            fn no_bytes_panic_the_decoders(
                wire in prop::collection::vec(prop_oneof![
                    4 => any::<u8>(),
                    2 => Just(b'\r'),
                    2 => Just(b'\n'),
                    2 => Just(b'0'),
                    1 => Just(b';'),
                ], 0..300),
                piece in 1usize..32,
            ) {
                let _ = decode(Framing::Chunked(start()), &wire, piece);
                let _ = decode(Framing::length(wire.len() as u64 / 2), &wire, piece);
                let _ = parse_head(&wire, &Method::POST);
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                head.extend_from_slice(&wire);
                let _ = parse_head(&head, &Method::POST);
            }
        }
    }
}
