//! Human-readable log lines: tracing-subscriber's full format, with the request a line was
//! logged in (see `llm_bridge_gateway::log_context`) at its end, as
//! `request_id=… transport=…`.

use std::fmt;

use llm_bridge_gateway::log_context::with_current;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as text lines.
pub struct TextLines {
    inner: Format<Full>,
}

impl TextLines {
    /// Text lines, coloured when `ansi`.
    pub fn new(ansi: bool) -> Self {
        TextLines {
            inner: Format::default().with_ansi(ansi),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        with_current(|request| {
            let Some(request) = request else {
                return self.inner.format_event(ctx, writer, event);
            };
            let mut line = String::with_capacity(256);
            self.inner
                .format_event(ctx, Writer::new(&mut line), event)?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(
                writer,
                "{line} request_id={} transport={}",
                request.request_id(),
                request.transport()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use llm_bridge_gateway::log_context::LogContext;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn a_line_logged_in_a_request_ends_with_its_id_and_one_outside_does_not() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(lines.clone())
                .event_format(TextLines::new(false)),
        );
        tracing::subscriber::with_default(subscriber, || {
            let request = LogContext::new("req-7".into(), "http");
            {
                let _entered = request.enter();
                tracing::warn!(target: "llm_bridge::test", attempt = 2, "upstream slow");
            }
            tracing::info!(target: "llm_bridge::test", "between requests");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let logged: Vec<&str> = text.lines().collect();
        assert_eq!(logged.len(), 2, "{text}");
        assert!(
            logged[0].contains("WARN llm_bridge::test: upstream slow attempt=2")
                && logged[0].ends_with(" request_id=req-7 transport=http"),
            "{}",
            logged[0]
        );
        assert!(
            logged[1].ends_with("llm_bridge::test: between requests"),
            "{}",
            logged[1]
        );
    }
}
