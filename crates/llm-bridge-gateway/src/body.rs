//! Response bodies (one enum, no boxing) and request body reading.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use llm_bridge_core::{Error, ErrorKind};

use crate::live::LiveBody;
use crate::native::NativeBody;
use crate::sse::SseBody;

/// Every response body the gateway sends.
pub enum GatewayBody {
    /// A complete body.
    Full(Option<Bytes>),
    /// A server-sent-event stream.
    Sse(Box<SseBody>),
    /// An answer in the client's own dialect, forwarded as the upstream sent it.
    Native(Box<NativeBody>),
    /// Access events as they happen (`/admin/events`).
    Live(Box<LiveBody>),
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Full(Some(bytes.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        GatewayBody::Full(None)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            GatewayBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Sse(sse) => Pin::new(sse.as_mut()).poll_frame(cx),
            GatewayBody::Native(native) => Pin::new(native.as_mut()).poll_frame(cx),
            GatewayBody::Live(live) => Pin::new(live.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(bytes) => bytes.is_none(),
            GatewayBody::Sse(_) | GatewayBody::Live(_) => false,
            GatewayBody::Native(native) => native.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            GatewayBody::Sse(_) | GatewayBody::Native(_) | GatewayBody::Live(_) => {
                SizeHint::default()
            }
        }
    }
}

/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads a request body, refusing more than `limit` bytes without reading them.
pub(crate) async fn read_limited<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Error>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(Error::new(
            ErrorKind::InvalidRequest,
            "the request body did not arrive in time",
        )),
        Ok(Ok(collected)) => Ok(own(collected.to_bytes())),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Ok(Err(e)) => Err(Error::new(
            ErrorKind::InvalidRequest,
            format!("could not read the request body: {e}"),
        )),
    }
}

/// Bodies up to this size are copied out of hyper's read buffer (see [`own`]).
const OWN_UP_TO: usize = 16 * 1024;

/// A body that arrived in one read points into hyper's read buffer (8 KB at least), and a
/// stream keeps its request's body for as long as it lasts: that would keep the whole buffer
/// (hyper takes a new one for its next read). A small body gets an allocation of its own.
fn own(body: Bytes) -> Bytes {
    if body.len() <= OWN_UP_TO {
        Bytes::copy_from_slice(&body)
    } else {
        body
    }
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::PayloadTooLarge,
        format!("request body is larger than the limit of {limit} bytes (server.max_body_bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// Whether `part` lies inside `whole`'s memory.
    fn points_into(part: &Bytes, whole: &Bytes) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[tokio::test]
    async fn a_small_body_no_longer_points_into_the_buffer_it_was_read_into() {
        // As hyper hands a body that came in one read: a slice of its read buffer.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let body = buffer.slice(400..700);
        let read = read_limited(Full::new(body), &HeaderMap::new(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(read.len(), 300);
        assert!(!points_into(&read, &buffer));
        // A large one is not copied: what it keeps of its buffer is mostly itself.
        let buffer = Bytes::from(vec![b'x'; 64 * 1024]);
        let body = buffer.slice(100..40_000);
        let read = read_limited(Full::new(body), &HeaderMap::new(), 1 << 20)
            .await
            .unwrap();
        assert!(points_into(&read, &buffer));
    }
}
