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
        }
    }

    /// Metadata for a message caused by `parent`: same correlation, user, tenant and custom
    /// values; the parent's message id as causation id; a fresh message id and timestamp.
    pub fn caused_by(parent: &MessageMetadata) -> Self {
        Self {
            message_id: MessageId::new(),
            timestamp: Utc::now(),
            correlation_id: parent.correlation_id,
            causation_id: Some(parent.message_id),
            user_id: parent.user_id.clone(),
            tenant_id: parent.tenant_id.clone(),
            custom: Arc::clone(&parent.custom),
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

    /// Every custom value, ordered by key.
    pub fn custom_values(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.custom
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
