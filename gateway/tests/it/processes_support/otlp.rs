//! An OTLP/gRPC trace receiver on loopback: the collector the processes
//! export to, keeping each span with the resource that sent it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value as AnyValue},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use quill_platform::testing::ephemeral_listener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// One exported span and the resource attributes of the process that sent it.
#[derive(Clone, Debug)]
pub struct Exported {
    pub resource: BTreeMap<String, String>,
    pub span: Span,
}

impl Exported {
    /// `service.name` of the exporting process.
    pub fn service(&self) -> &str {
        self.resource.get("service.name").map_or("", String::as_str)
    }

    pub fn attr(&self, key: &str) -> Option<String> {
        text(&self.span.attributes, key)
    }

    pub fn kind(&self) -> SpanKind {
        SpanKind::try_from(self.span.kind).unwrap_or(SpanKind::Unspecified)
    }

    pub fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
    }

    /// A line for failure messages.
    pub fn summary(&self) -> String {
        format!(
            "{} [{}] {:?} id={} parent={}",
            self.span.name,
            self.service(),
            self.kind(),
            hex(&self.span.span_id),
            hex(&self.span.parent_span_id),
        )
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    value(attributes.iter().find(|kv| kv.key == key)?)
}

fn value(kv: &KeyValue) -> Option<String> {
    Some(match kv.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<Exported>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource: BTreeMap<String, String> = resource_spans
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), value(kv)?)))
                        .collect()
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| Exported {
                    resource: resource.clone(),
                    span,
                }));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Serves OTLP/gRPC on an ephemeral loopback port; returns its endpoint.
    pub async fn start() -> (String, Self) {
        let (listener, addr) = ephemeral_listener().await;
        let receiver = Self::default();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        (format!("http://{addr}"), receiver)
    }

    pub fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// Polls the exported spans until `find` returns something, or panics
    /// after `timeout` with `what` and every span received so far.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut find: impl FnMut(&[Exported]) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = find(&self.spans()) {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let summary: Vec<String> = self.spans().iter().map(Exported::summary).collect();
                panic!("{what} not exported within {timeout:?}; received:\n{summary:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The spans of one trace, with their parent links.
pub struct Trace {
    pub spans: Vec<Exported>,
    by_id: HashMap<Vec<u8>, usize>,
}

impl Trace {
    pub fn new(all: &[Exported], trace_id: &[u8]) -> Self {
        let spans: Vec<Exported> = all
            .iter()
            .filter(|s| s.span.trace_id == trace_id)
            .cloned()
            .collect();
        let by_id = spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span.span_id.clone(), i))
            .collect();
        Self { spans, by_id }
    }

    pub fn parent(&self, span: &Exported) -> Option<&Exported> {
        self.by_id
            .get(&span.span.parent_span_id)
            .map(|&i| &self.spans[i])
    }

    /// Whether `ancestor` is `span` or one of its ancestors.
    pub fn descends_from(&self, span: &Exported, ancestor: &Exported) -> bool {
        let mut current = Some(span);
        while let Some(s) = current {
            if s.span.span_id == ancestor.span.span_id {
                return true;
            }
            current = self.parent(s);
        }
        false
    }

    pub fn find(&self, pred: impl Fn(&Exported) -> bool) -> Option<&Exported> {
        self.spans.iter().find(|s| pred(s))
    }

    /// Every span, indented under its parent, for failure messages.
    pub fn render(&self) -> String {
        fn walk(trace: &Trace, span: &Exported, depth: usize, out: &mut String) {
            out.push_str(&format!("{}{}\n", "  ".repeat(depth), span.summary()));
            for child in trace
                .spans
                .iter()
                .filter(|c| c.span.parent_span_id == span.span.span_id)
            {
                walk(trace, child, depth + 1, out);
            }
        }
        let mut out = String::new();
        for root in self.spans.iter().filter(|s| self.parent(s).is_none()) {
            walk(self, root, 0, &mut out);
        }
        out
    }
}
