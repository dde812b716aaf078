//! Machinery shared by the command and query buses. Not public.
//!
//! - [`Registry`]: the handler table of a bus. Registration copies the table and swaps an
//!   `Arc`; dispatch takes a read lock just long enough to clone that `Arc` (never across an
//!   `.await`), so concurrent dispatches never wait on each other.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::Location;
use std::sync::Arc;

use parking_lot::RwLock;
use tracing::Instrument;

use crate::BoxFuture;
use crate::context::{Parent, Scope, in_scope};
use crate::error::{BoxError, Error, Result};
pub(crate) use crate::middleware::Cloner;
use crate::middleware::{DynMiddleware, Endpoint, MessageKind, Next, Request, Response};

/// Hashes a `TypeId` (already a hash) without SipHash.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type TypeMap<V> = HashMap<TypeId, V, BuildHasherDefault<TypeIdHasher>>;

/// Calls a typed handler. Implemented by each bus's adapters over its public handler trait.
pub(crate) trait Call<I, O>: Send + Sync + 'static {
    fn call(&self, input: I, scope: Arc<Scope>) -> BoxFuture<'_, Result<O, BoxError>>;
}

/// Who handles a message type: the handler's name and where it was registered.
#[derive(Clone)]
pub(crate) struct HandlerInfo {
    pub(crate) name: Arc<str>,
    pub(crate) location: &'static Location<'static>,
}

impl fmt::Display for HandlerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` registered at {}:{}",
            self.name,
            self.location.file(),
            self.location.line()
        )
    }
}

/// One registered handler, typed.
pub(crate) struct Entry<I, O> {
    handler: Box<dyn Call<I, O>>,
    name: Arc<str>,
    message_type: &'static str,
    kind: MessageKind,
}

impl<I: Send + 'static, O: Send + 'static> Entry<I, O> {
    async fn invoke(&self, input: I, scope: Arc<Scope>) -> Result<O> {
        let future = self.handler.call(input, Arc::clone(&scope));
        in_scope(Parent::Scope(scope), future)
            .await
            .map_err(|source| self.wrap(source))
    }

    /// The one rule: a handler's error is wrapped in the bus's execution error, which names
    /// the message type and the handler and keeps the handler's error as its source.
    fn wrap(&self, source: BoxError) -> Error {
        match self.kind {
            MessageKind::Command => Error::CommandExecution {
                command_type: self.message_type,
                handler: Arc::clone(&self.name),
                source,
            },
            MessageKind::Query => Error::QueryExecution {
                query_type: self.message_type,
                handler: Arc::clone(&self.name),
                source,
            },
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Endpoint for Entry<I, O> {
    fn invoke_erased(&self, request: Request) -> BoxFuture<'_, Result<Response>> {
        Box::pin(async move {
            let (message, scope) = request.into_parts();
            let input = message.downcast::<I>().map_err(|_| Error::MiddlewareType {
                kind: self.kind.as_str(),
                message_type: self.message_type,
                what: "message",
                expected: std::any::type_name::<I>(),
            })?;
            self.invoke(*input, scope).await.map(Response::new)
        })
    }
}

#[derive(Clone)]
struct Slot {
    /// An `Arc<Entry<I, O>>`.
    entry: Arc<dyn Any + Send + Sync>,
    endpoint: Arc<dyn Endpoint>,
    info: HandlerInfo,
    /// Bus-specific state of the handler (the query cache).
    extra: Option<Arc<dyn Any + Send + Sync>>,
}

#[derive(Clone)]
struct Table {
    slots: TypeMap<Slot>,
    cloners: TypeMap<Cloner>,
    middleware: Arc<[Arc<dyn DynMiddleware>]>,
    middleware_names: Vec<&'static str>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            slots: TypeMap::default(),
            cloners: TypeMap::default(),
            middleware: Arc::from(Vec::new()),
            middleware_names: Vec::new(),
        }
    }
}

/// How to register a handler.
pub(crate) enum Mode {
    /// Fail if the type has a handler.
    Unique,
    /// Replace any handler.
    Replace,
}

/// The handler table of one bus.
pub(crate) struct Registry {
    kind: MessageKind,
    table: RwLock<Arc<Table>>,
}

impl Registry {
    pub(crate) fn new(kind: MessageKind) -> Self {
        Self {
            kind,
            table: RwLock::new(Arc::default()),
        }
    }

    fn update<R>(&self, change: impl FnOnce(&mut Table) -> R) -> R {
        let mut guard = self.table.write();
        let mut table = Table::clone(&guard);
        let result = change(&mut table);
        *guard = Arc::new(table);
        result
    }

    /// Registers a handler for messages of type `I`. Returns whether one was replaced.
    pub(crate) fn insert<I: Send + 'static, O: Send + 'static>(
        &self,
        handler: Box<dyn Call<I, O>>,
        name: Arc<str>,
        location: &'static Location<'static>,
        message_type: &'static str,
        extra: Option<Arc<dyn Any + Send + Sync>>,
        mode: Mode,
    ) -> Result<bool> {
        let entry = Arc::new(Entry {
            handler,
            name: Arc::clone(&name),
            message_type,
            kind: self.kind,
        });
        let slot = Slot {
            entry: Arc::clone(&entry) as Arc<dyn Any + Send + Sync>,
            endpoint: entry,
            info: HandlerInfo { name, location },
            extra,
        };
        let kind = self.kind;
        self.update(|table| {
            let id = TypeId::of::<I>();
            match (mode, table.slots.get(&id)) {
                (Mode::Unique, Some(existing)) => Err(Error::DuplicateHandler {
                    kind: kind.as_str(),
                    message_type,
                    existing: existing.info.to_string(),
                }),
                (_, _) => Ok(table.slots.insert(id, slot).is_some()),
            }
        })
    }

    /// Removes the handler of `I`. Returns whether there was one.
    pub(crate) fn remove<I: 'static>(&self) -> bool {
        self.update(|table| table.slots.remove(&TypeId::of::<I>()).is_some())
    }

    /// Whether `I` has a handler.
    pub(crate) fn contains<I: 'static>(&self) -> bool {
        self.contains_id(TypeId::of::<I>())
    }

    /// Whether the message type with this id has a handler.
    pub(crate) fn contains_id(&self, id: TypeId) -> bool {
        self.table.read().slots.contains_key(&id)
    }

    /// The name of the handler of `I`.
    pub(crate) fn handler_name<I: 'static>(&self) -> Option<Arc<str>> {
        self.table
            .read()
            .slots
            .get(&TypeId::of::<I>())
            .map(|slot| Arc::clone(&slot.info.name))
    }

    /// How many message types have a handler.
    pub(crate) fn len(&self) -> usize {
        self.table.read().slots.len()
    }

    /// The bus-specific state of the handler of `I`.
    pub(crate) fn extra<I: 'static>(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        self.table
            .read()
            .slots
            .get(&TypeId::of::<I>())
            .and_then(|slot| slot.extra.clone())
    }

    /// Every handler's bus-specific state.
    pub(crate) fn all_extras(&self) -> Vec<Arc<dyn Any + Send + Sync>> {
        self.table
            .read()
            .slots
            .values()
            .filter_map(|slot| slot.extra.clone())
            .collect()
    }

    /// Lets middleware clone messages of type `I`.
    pub(crate) fn set_cloner<I: 'static>(&self, cloner: Cloner) {
        self.update(|table| table.cloners.insert(TypeId::of::<I>(), cloner));
    }

    /// Adds a middleware, inside those added before.
    pub(crate) fn add_middleware(&self, middleware: Arc<dyn DynMiddleware>, name: &'static str) {
        self.update(|table| {
            let mut chain = table.middleware.to_vec();
            chain.push(middleware);
            table.middleware = Arc::from(chain);
            table.middleware_names.push(name);
        });
    }

    /// Sends `input` through the middleware to its handler.
    pub(crate) async fn dispatch<I: Send + 'static, O: Send + 'static>(
        &self,
        input: I,
        message_type: &'static str,
        scope: Arc<Scope>,
    ) -> Result<O> {
        let table = Arc::clone(&self.table.read());
        let id = TypeId::of::<I>();
        let Some(slot) = table.slots.get(&id) else {
            return Err(Error::HandlerNotFound {
                kind: self.kind.as_str(),
                message_type,
            });
        };
        let Some(entry) = slot.entry.downcast_ref::<Entry<I, O>>() else {
            // `Entry<I, O>` is stored under `TypeId::of::<I>()` only, and `O` is `I::Output`.
            return Err(Error::HandlerNotFound {
                kind: self.kind.as_str(),
                message_type,
            });
        };
        // Every dispatch is traced (`lexigram.command` / `lexigram.query`); what it sends and
        // the events it publishes belong to its trace.
        let handler = &*slot.info.name;
        let span = match self.kind {
            MessageKind::Command => {
                tracing::debug_span!("lexigram.command", command = message_type, handler)
            }
            MessageKind::Query => {
                tracing::debug_span!("lexigram.query", query = message_type, handler)
            }
        };
        if table.middleware.is_empty() {
            // A span nobody listens to costs nothing more than this check.
            if span.is_disabled() {
                return entry.invoke(input, scope).await;
            }
            return entry.invoke(input, scope).instrument(span).await;
        }
        let request = Request::new(
            Box::new(input),
            self.kind,
            message_type,
            Arc::clone(&slot.info.name),
            scope,
            table.cloners.get(&id).copied(),
        );
        let next = Next::new(Arc::clone(&table.middleware), Arc::clone(&slot.endpoint));
        let response = next.run(request).instrument(span).await?;
        response
            .into_inner::<O>()
            .map_err(|_| Error::MiddlewareType {
                kind: self.kind.as_str(),
                message_type,
                what: "result",
                expected: std::any::type_name::<O>(),
            })
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.read();
        let mut handlers: Vec<String> = table.slots.values().map(|s| s.info.to_string()).collect();
        handlers.sort();
        f.debug_struct("Registry")
            .field("kind", &self.kind)
            .field("handlers", &handlers)
            .field("middleware", &table.middleware_names)
            .finish()
    }
}
