//! The app: modules and providers, built and checked at once, then run and shut down.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{BootstrapReport, Container, Problem};
use crate::aggregate::Aggregate;
use crate::command::CommandBus;
use crate::error::Result;
use crate::event::EventBus;
use crate::query::QueryBus;
use crate::repository::Repository;

/// A part of an app: it provides values, wires what needs the full container, and takes part
/// in start, shutdown and health. [`EventsModule`](super::EventsModule) is one.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// The module's name, for reports.
    fn name(&self) -> &str;

    /// Adds providers to the container. Runs first, for every module, in order.
    async fn provide(&self, container: &mut Container, problems: &mut Vec<Problem>) {
        let _ = (container, problems);
    }

    /// Wires what needs every provider in place (handlers). Report problems; never stop at
    /// the first.
    fn wire(&self, container: &Container, problems: &mut Vec<Problem>) {
        let _ = (container, problems);
    }

    /// Checks the finished wiring (after every module wired). Report problems.
    fn verify(&self, container: &Container, problems: &mut Vec<Problem>) {
        let _ = (container, problems);
    }

    /// Starts background work once the app is built.
    async fn start(&self, container: &Container) -> Result<()> {
        let _ = container;
        Ok(())
    }

    /// Stops background work and releases resources. Runs in reverse module order.
    async fn shutdown(&self, container: &Container) -> Result<()> {
        let _ = container;
        Ok(())
    }

    /// The health of the module's components.
    async fn health(&self, container: &Container) -> Vec<ComponentHealth> {
        let _ = container;
        Vec::new()
    }
}

/// Whether a component works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Working.
    Healthy,
    /// Working, but something needs attention (dead letters, a slow queue).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ComponentHealth {
    /// The component (`event_store`, `event_bus`, ...).
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// What was measured, or what failed.
    pub detail: String,
}

impl ComponentHealth {
    /// A component's health.
    pub fn new(name: impl Into<String>, status: HealthStatus, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// The health of every component; the app's status is the worst of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The worst component status (healthy when there are none).
    pub status: HealthStatus,
    /// Each component.
    pub components: Vec<ComponentHealth>,
}

/// Builds an [`App`]: `App::builder().module(..).provide(..).build().await`.
#[derive(Default)]
pub struct AppBuilder {
    modules: Vec<Arc<dyn Module>>,
    container: Container,
}

impl fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("container", &self.container)
            .finish()
    }
}

impl AppBuilder {
    /// Adds a module.
    #[must_use]
    pub fn module(mut self, module: impl Module) -> Self {
        self.modules.push(Arc::new(module));
        self
    }

    /// Provides a shared value to handlers (`Dep<T>`).
    #[must_use]
    #[track_caller]
    pub fn provide<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.container.provide(value);
        self
    }

    /// Provides a shared value, which may be a trait object (`Dep<dyn Trait>`).
    #[must_use]
    #[track_caller]
    pub fn provide_arc<T: ?Sized + Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.container.provide_arc(value);
        self
    }

    /// Provides `T` through a factory that may read other providers.
    #[must_use]
    #[track_caller]
    pub fn provide_factory<T, F>(mut self, factory: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(&Container) -> Option<T> + Send + Sync + 'static,
    {
        self.container.provide_factory(factory);
        self
    }

    /// Replaces whatever provides `T` (overrides for tests), including what modules provide.
    #[must_use]
    #[track_caller]
    pub fn replace<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.container.replace(value);
        self
    }

    /// Builds the app: every module provides, then wires; then every problem found is
    /// reported at once ([`Error::Bootstrap`](crate::Error::Bootstrap)); then modules start,
    /// in order. When one fails to start, it and every module started before it are shut down
    /// (in reverse order) before its error is returned, so nothing keeps running.
    pub async fn build(self) -> Result<App> {
        let Self {
            modules,
            container: overrides,
        } = self;
        let mut container = Container::new();
        let mut problems = Vec::new();
        for module in &modules {
            module.provide(&mut container, &mut problems).await;
        }
        container.absorb(overrides);
        if !container.contains::<CommandBus>() {
            container.provide(CommandBus::new());
        }
        if !container.contains::<QueryBus>() {
            container.provide(QueryBus::new());
        }
        if !container.contains::<EventBus>() {
            container.provide(EventBus::new());
        }
        for module in &modules {
            module.wire(&container, &mut problems);
        }
        for module in &modules {
            module.verify(&container, &mut problems);
        }
        problems.extend(container.problems());
        if !problems.is_empty() {
            // Release what modules opened before reporting.
            for module in modules.iter().rev() {
                let _ = module.shutdown(&container).await;
            }
            return Err(BootstrapReport::new(problems).into());
        }
        for (started, module) in modules.iter().enumerate() {
            if let Err(err) = module.start(&container).await {
                tracing::error!(module = module.name(), error = %err, "module failed to start; shutting down the ones started");
                for module in modules[..=started].iter().rev() {
                    if let Err(err) = module.shutdown(&container).await {
                        tracing::warn!(module = module.name(), error = %err, "module shutdown failed");
                    }
                }
                return Err(err);
            }
        }
        let commands = container
            .get::<CommandBus>()
            .map(|b| (*b).clone())
            .unwrap_or_default();
        let queries = container
            .get::<QueryBus>()
            .map(|b| (*b).clone())
            .unwrap_or_default();
        let events = container
            .get::<EventBus>()
            .map(|b| (*b).clone())
            .unwrap_or_default();
        Ok(App {
            container: Arc::new(container),
            modules,
            commands,
            queries,
            events,
        })
    }
}

/// A built app: its buses, its container, and its modules' lifecycle.
pub struct App {
    container: Arc<Container>,
    modules: Vec<Arc<dyn Module>>,
    commands: CommandBus,
    queries: QueryBus,
    events: EventBus,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field(
                "modules",
                &self.modules.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Starts building an app.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The command bus.
    pub fn commands(&self) -> &CommandBus {
        &self.commands
    }

    /// The query bus.
    pub fn queries(&self) -> &QueryBus {
        &self.queries
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The container.
    pub fn container(&self) -> &Container {
        &self.container
    }

    /// A provided value.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<super::Dep<T>> {
        self.container.get::<T>()
    }

    /// A repository for aggregate `A` over the app's stores, snapshots and event bus: what a
    /// `Repository<A>` handler parameter gets, for code outside a handler (a script, a test,
    /// a CLI). `None` when no [`EventsModule`](super::EventsModule) is part of the app.
    pub fn repository<A: Aggregate>(&self) -> Option<Repository<A>> {
        self.container
            .get::<super::Stores>()
            .map(|stores| stores.repository::<A>())
    }

    /// The health of every module's components.
    pub async fn health(&self) -> HealthReport {
        let mut components = Vec::new();
        for module in &self.modules {
            components.extend(module.health(&self.container).await);
        }
        let status = components
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        HealthReport { status, components }
    }

    /// Shuts every module down, in reverse order: buses drain and stop their tasks, stores
    /// close. Returns the first error after trying every module.
    pub async fn shutdown(self) -> Result<()> {
        let mut first = None;
        for module in self.modules.iter().rev() {
            if let Err(err) = module.shutdown(&self.container).await {
                tracing::warn!(module = module.name(), error = %err, "module shutdown failed");
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
