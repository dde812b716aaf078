//! Metadata every message travels with.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CorrelationId, MessageId};

/// Who sent a message, when, and what caused it.
///
/// Cheap to clone: strings and the custom map are reference counted. Build it with the
/// `with_*` methods:
///
/// ```
/// use lexigram::message::MessageMetadata;
///
/// let parent = MessageMetadata::new().with_tenant_id("acme");
/// let child = MessageMetadata::caused_by(&parent).with_custom("retry", 2);
/// assert_eq!(child.correlation_id(), parent.correlation_id());
/// assert_eq!(child.causation_id(), Some(parent.message_id()));
/// assert_eq!(child.tenant_id(), Some("acme"));
/// assert_eq!(child.custom("retry"), Some(&serde_json::json!(2)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageMetadata {
    message_id: MessageId,
    timestamp: DateTime<Utc>,
    correlation_id: CorrelationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant_id: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    custom: Arc<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_context: Option<TraceContext>,
}

impl MessageMetadata {
    /// Metadata for a new, uncaused message: a fresh message id, now, and a fresh correlation id.
    pub fn new() -> Self {
        Self {
            message_id: MessageId::new(),
            timestamp: Utc::now(),
            correlation_id: CorrelationId::new(),
            causation_id: None,
            user_id: None,
            tenant_id: None,
            custom: Arc::default(),
            trace_context: None,
        }
    }

    /// Metadata for a message caused by `parent`: same correlation, user, tenant, custom
    /// values and trace context; the parent's message id as causation id; a fresh message id
    /// and timestamp.
    pub fn caused_by(parent: &MessageMetadata) -> Self {
        Self {
            message_id: MessageId::new(),
            timestamp: Utc::now(),
            correlation_id: parent.correlation_id,
            causation_id: Some(parent.message_id),
            user_id: parent.user_id.clone(),
            tenant_id: parent.tenant_id.clone(),
            custom: Arc::clone(&parent.custom),
            trace_context: parent.trace_context.clone(),
        }
    }

    /// Replaces the message id.
    #[must_use]
    pub fn with_message_id(mut self, id: MessageId) -> Self {
        self.message_id = id;
        self
    }

    /// Replaces the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Replaces the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.correlation_id = id;
        self
    }

    /// Sets the id of the message that caused this one.
    #[must_use]
    pub fn with_causation_id(mut self, id: MessageId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the acting user.
    #[must_use]
    pub fn with_user_id(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Sets the tenant.
    #[must_use]
    pub fn with_tenant_id(mut self, tenant: impl Into<Arc<str>>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// Sets the W3C trace context of the request this message belongs to (from an incoming
    /// `traceparent` header, say). Every message it causes inherits it, and events store it,
    /// so a reaction that runs later, in another process, can continue the same trace.
    #[must_use]
    pub fn with_trace_context(mut self, context: TraceContext) -> Self {
        self.trace_context = Some(context);
        self
    }

    /// Adds or replaces a custom value.
    #[must_use]
    pub fn with_custom(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        Arc::make_mut(&mut self.custom).insert(key.into(), value.into());
        self
    }

    /// This message's id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }

    /// When the message was created.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// The correlation id shared by everything one request caused.
    pub fn correlation_id(&self) -> CorrelationId {
        self.correlation_id
    }

    /// The id of the message that caused this one, if any.
    pub fn causation_id(&self) -> Option<MessageId> {
        self.causation_id
    }

    /// The acting user, if known.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The tenant, if known.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }

    /// One custom value.
    pub fn custom(&self, key: &str) -> Option<&serde_json::Value> {
        self.custom.get(key)
    }

    /// The W3C trace context of the request, if one was given.
    pub fn trace_context(&self) -> Option<&TraceContext> {
        self.trace_context.as_ref()
    }

    /// Every custom value, ordered by key.
    pub fn custom_values(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.custom
    }
}

/// A [W3C trace context](https://www.w3.org/TR/trace-context/): the `traceparent` header
/// (`version-traceid-parentid-flags`), and the vendor `tracestate` when there is one.
///
/// lexigram does not create traces; it carries the one a request came with (see
/// [`MessageMetadata::with_trace_context`]) to everything the request causes, stored events
/// included.
///
/// ```
/// use lexigram::message::{MessageMetadata, TraceContext};
///
/// let context = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .expect("a valid traceparent");
/// assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// let request = MessageMetadata::new().with_trace_context(context.clone());
/// let caused = MessageMetadata::caused_by(&request);
/// assert_eq!(caused.trace_context(), Some(&context));
/// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    traceparent: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<Arc<str>>,
}

impl TraceContext {
    /// A `traceparent` header value, or `None` when it is not one: two lowercase hex
    /// characters of version (not `ff`), 32 of trace id and 16 of parent id (neither all
    /// zeros), 2 of flags, separated by `-`.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let parts: Vec<&str> = traceparent.trim().split('-').collect();
        let [version, trace_id, parent_id, flags] = parts[..] else {
            return None;
        };
        let hex = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let zeros = |part: &str| part.bytes().all(|b| b == b'0');
        let valid = hex(version, 2)
            && version != "ff"
            && hex(trace_id, 32)
            && !zeros(trace_id)
            && hex(parent_id, 16)
            && !zeros(parent_id)
            && hex(flags, 2);
        valid.then(|| Self {
            traceparent: Arc::from(traceparent.trim()),
            tracestate: None,
        })
    }

    /// Adds the `tracestate` header value.
    #[must_use]
    pub fn with_tracestate(mut self, tracestate: impl Into<Arc<str>>) -> Self {
        self.tracestate = Some(tracestate.into());
        self
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The trace id: 32 hex characters shared by every span of the trace.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }

    /// The id of the span the request came from: 16 hex characters.
    pub fn parent_id(&self) -> &str {
        self.traceparent.get(36..52).unwrap_or_default()
    }

    /// The `tracestate` header value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }
}

impl Default for MessageMetadata {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json_and_omits_empty_fields() -> Result<(), serde_json::Error> {
        let meta = MessageMetadata::new().with_user_id("u1");
        let json = serde_json::to_value(&meta)?;
        assert!(json.get("tenant_id").is_none());
        assert!(json.get("custom").is_none());
        let back: MessageMetadata = serde_json::from_value(json)?;
        assert_eq!(back, meta);
        Ok(())
    }

    #[test]
    fn caused_by_chains_correlation_and_causation() {
        let root = MessageMetadata::new();
        let child = MessageMetadata::caused_by(&root);
        let grandchild = MessageMetadata::caused_by(&child);
        assert_eq!(grandchild.correlation_id(), root.correlation_id());
        assert_eq!(grandchild.causation_id(), Some(child.message_id()));
        assert_ne!(grandchild.message_id(), child.message_id());
    }
}
