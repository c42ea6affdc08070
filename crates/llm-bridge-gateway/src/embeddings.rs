//! `POST /v1/embeddings`: served by the targets that do embeddings (an adapter that speaks
//! [`EMBEDDINGS`] and a model of kind `embedding`), with keys, limits, budgets, routes, the
//! usage record and the access event of a chat request. The body goes to the provider as
//! the client sent it (`model` excepted, by the adapter); the answer comes back as the
//! provider gave it, read only for its `usage`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use llm_bridge_core::{EMBEDDINGS, Endpoint, Error, Ingress, NativeRequest, Usage};
use llm_bridge_usage::count::{Encoding, input_tokens_of_body};
use serde::Deserialize;

use crate::Gateway;
use crate::body::{GatewayBody, read_limited};
use crate::errors::error_response;
use crate::exchange::{self, Answer};
use crate::handlers::{json_response, presented_key, rate_headers, server_timing, session_header};
use crate::request_log::RequestLog;

/// A dialect's embeddings endpoint (Gemini's `:embedContent`, `:batchEmbedContents`).
type DialectAt<'a> = Option<(&'a dyn Ingress, &'a Endpoint)>;

/// `POST /v1/embeddings`, or a dialect's embeddings endpoint (`dialect`): its request is
/// translated into an OpenAI embeddings body, served the same way, and its answer and errors
/// rendered back in the dialect.
pub(crate) async fn serve(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    request_id: Arc<str>,
    dialect: DialectAt<'_>,
) -> Response<GatewayBody> {
    let log = RequestLog::new(gateway.telemetry.clone(), request_id, "http");
    let context = log.context.clone();
    context
        .scope(serve_in(gateway, request, log, dialect))
        .await
}

/// An error in the shape of the client's dialect.
fn failure(dialect: DialectAt<'_>, e: &Error) -> Response<GatewayBody> {
    match dialect {
        Some((ingress, _)) => crate::ingress::ingress_error(ingress, e),
        None => error_response(e),
    }
}

/// The one field of the request the gateway reads.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    model: Option<std::borrow::Cow<'a, str>>,
}

async fn serve_in(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    mut log: RequestLog,
    dialect: DialectAt<'_>,
) -> Response<GatewayBody> {
    let (parts, body) = request.into_parts();
    let principal = match gateway.auth.authenticate(presented_key(&parts.headers)) {
        Ok(p) => p,
        Err(e) => return failure(dialect, &exchange::failed(log, e)),
    };
    log.key = Some(principal.name.clone());
    let bytes = match read_limited(body, &parts.headers, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => return failure(dialect, &exchange::failed(log, e)),
    };
    let bytes = match dialect {
        Some((ingress, at)) => match ingress.embeddings_request(&bytes, at) {
            Ok(translated) => translated,
            Err(e) => return failure(dialect, &exchange::failed(log, e)),
        },
        None => bytes,
    };
    log.request_body = Some(bytes.clone());
    log.embeddings = true;
    let model = match serde_json::from_slice::<Named<'_>>(&bytes) {
        Ok(Named { model: Some(m) }) if !m.trim().is_empty() => m.into_owned(),
        Ok(_) => {
            let e = Error::invalid_request("'model' is required").with_param("model");
            return failure(dialect, &exchange::failed(log, e));
        }
        Err(e) => {
            let e = Error::invalid_request(format!("request body is not valid JSON: {e}"));
            return failure(dialect, &exchange::failed(log, e));
        }
    };
    let native = NativeRequest {
        operation: EMBEDDINGS,
        body: bytes,
        headers: Vec::new(),
        stream: false,
        session: session_header(&parts.headers).map(llm_bridge_core::session_hash),
    };
    // Frees hyper's read buffer for its next read (see `handlers::chat_completions_in`).
    drop(parts);
    let started = log.started;
    let exchanged = exchange::forward(
        gateway, log, &principal, &model, EMBEDDINGS, &native, usage_of,
    )
    .await;
    let mut response = match exchanged.result {
        Ok(Answer::Native {
            content_type,
            body,
            upstream,
        }) => {
            let body = match *body {
                crate::native::NativeBody::Complete(Some(b)) => b,
                _ => Bytes::new(),
            };
            let target = exchanged.target.as_deref().unwrap_or_default();
            let body = with_estimated_usage(body, &native.body, target).await;
            let rendered = match dialect {
                Some((ingress, at)) => ingress.embeddings_answer(&body, at),
                None => Ok(body),
            };
            match rendered {
                Ok(body) => {
                    let mut response = json_response(StatusCode::OK, body);
                    if let (None, Ok(v)) = (dialect, HeaderValue::from_str(&content_type)) {
                        response.headers_mut().insert(CONTENT_TYPE, v);
                    }
                    server_timing(&mut response, started.elapsed(), upstream);
                    response
                }
                Err(e) => failure(dialect, &e),
            }
        }
        Ok(_) => failure(
            dialect,
            &Error::internal("a chat answer reached the embeddings path"),
        ),
        Err(e) => failure(dialect, &e),
    };
    if let Some(rate) = exchanged.rate {
        rate_headers(&mut response, &rate);
    }
    if let Some(target) = exchanged
        .target
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        response
            .headers_mut()
            .insert(crate::header_names::X_LLM_BRIDGE_TARGET, target);
    }
    response
}

/// The `usage` of an embeddings answer. OpenAI puts it last, after the vectors: it is found
/// from the end, so that megabytes of numbers are not parsed for two counts.
fn usage_of(answer: &[u8]) -> Option<Usage> {
    #[derive(Deserialize)]
    struct Counts {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        total_tokens: Option<u64>,
    }
    let at = rfind(answer, b"\"usage\"")?;
    let rest = &answer[at + b"\"usage\"".len()..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let counts = serde_json::Deserializer::from_slice(&rest[colon + 1..])
        .into_iter::<Counts>()
        .next()?
        .ok()?;
    let mut usage = Usage::new(counts.prompt_tokens, 0);
    if let Some(total) = counts.total_tokens {
        usage.total_tokens = total.max(counts.prompt_tokens);
    }
    Some(usage)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// An answer without `usage` (Gemini's older embedding models, some local servers) gets the
/// gateway's estimate of the input's tokens, so that clients reading `usage` find it; an
/// answer with one is returned untouched.
async fn with_estimated_usage(answer: Bytes, request: &Bytes, model: &str) -> Bytes {
    if usage_of(&answer).is_some() {
        return answer;
    }
    let Some(end) = answer.iter().rposition(|b| *b == b'}') else {
        return answer;
    };
    let request = request.clone();
    let encoding = Encoding::for_model(model);
    let counted =
        tokio::task::spawn_blocking(move || input_tokens_of_body(encoding, &request)).await;
    let Ok(tokens) = counted else {
        return answer;
    };
    let mut out = Vec::with_capacity(answer.len() + 64);
    out.extend_from_slice(&answer[..end]);
    out.extend_from_slice(
        format!(r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#).as_bytes(),
    );
    out.extend_from_slice(&answer[end + 1..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_end() {
        let answer = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":12,"total_tokens":12}}"#;
        let usage = usage_of(answer).unwrap();
        assert_eq!((usage.prompt_tokens, usage.total_tokens), (12, 12));
        assert_eq!(usage.completion_tokens, 0);
        assert!(usage_of(br#"{"object":"list","data":[]}"#).is_none());
        assert!(usage_of(br#"{"usage": null}"#).is_none());
    }
}
