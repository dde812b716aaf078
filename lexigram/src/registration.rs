//! What the macros register through `inventory`: event types, commands, queries and
//! aggregates, each with the `file:line` of its declaration so bootstrap errors can point at it.

use crate::aggregate::Aggregate;
use crate::error::{BootstrapReport, Problem, SchemaError};
use crate::message::{Command, Event, Query};
use crate::schema::{EventType, SchemaRegistry};

pub use crate::error::Location;

/// An event type registered by `#[derive(Event)]`.
#[derive(Debug)]
#[doc(hidden)]
pub struct EventRegistration {
    describe: fn() -> EventType,
    /// Where the type is declared.
    pub location: Location,
}

impl EventRegistration {
    /// The registration of `E`.
    pub const fn of<E: Event>(file: &'static str, line: u32) -> Self {
        Self {
            describe: EventType::of::<E>,
            location: Location { file, line },
        }
    }

    /// The registered type.
    pub fn event_type(&self) -> EventType {
        (self.describe)()
    }
}

/// A command or query type registered by `#[derive(Command)]` / `#[derive(Query)]`.
#[derive(Debug)]
#[doc(hidden)]
pub struct MessageRegistration {
    /// `command` or `query`.
    pub kind: &'static str,
    type_name: fn() -> &'static str,
    type_id: fn() -> std::any::TypeId,
    /// Where the type is declared.
    pub location: Location,
}

impl MessageRegistration {
    /// The registration of a command type.
    pub const fn command<C: Command>(file: &'static str, line: u32) -> Self {
        Self {
            kind: "command",
            type_name: C::command_name,
            type_id: std::any::TypeId::of::<C>,
            location: Location { file, line },
        }
    }

    /// The registration of a query type.
    pub const fn query<Q: Query>(file: &'static str, line: u32) -> Self {
        Self {
            kind: "query",
            type_name: Q::query_name,
            type_id: std::any::TypeId::of::<Q>,
            location: Location { file, line },
        }
    }

    /// The message type's name.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// The message type's id.
    pub fn type_id(&self) -> std::any::TypeId {
        (self.type_id)()
    }
}

/// An aggregate registered by `#[aggregate]`.
#[derive(Debug)]
#[doc(hidden)]
pub struct AggregateRegistration {
    /// The aggregate type name ([`Aggregate::TYPE`]).
    pub name: &'static str,
    rust_type: fn() -> &'static str,
    /// The names of the events it applies.
    pub events: &'static [&'static str],
    /// Where the `impl` block is.
    pub location: Location,
}

impl AggregateRegistration {
    /// The registration of `A`, which applies the events named `events`.
    pub const fn of<A: Aggregate>(
        events: &'static [&'static str],
        file: &'static str,
        line: u32,
    ) -> Self {
        Self {
            name: A::TYPE,
            rust_type: std::any::type_name::<A>,
            events,
            location: Location { file, line },
        }
    }

    /// The Rust type's name.
    pub fn rust_type(&self) -> &'static str {
        (self.rust_type)()
    }
}

inventory::collect!(EventRegistration);
inventory::collect!(MessageRegistration);
inventory::collect!(AggregateRegistration);

/// Every event type registered in the linked program.
pub(crate) fn events() -> impl Iterator<Item = &'static EventRegistration> {
    inventory::iter::<EventRegistration>.into_iter()
}

/// Every command and query type registered in the linked program.
pub fn messages() -> impl Iterator<Item = &'static MessageRegistration> {
    inventory::iter::<MessageRegistration>.into_iter()
}

/// Every aggregate registered in the linked program.
pub fn aggregates() -> impl Iterator<Item = &'static AggregateRegistration> {
    inventory::iter::<AggregateRegistration>.into_iter()
}

/// A schema registry holding every event type `#[derive(Event)]` registered in the linked
/// program: what an app's stores read with. Two types under one name are a
/// [`BootstrapReport`] naming both declarations.
///
/// ```
/// let schema = lexigram::registration::discovered_schema()?;
/// # let _ = schema;
/// # Ok::<(), lexigram::error::BootstrapReport>(())
/// ```
pub fn discovered_schema() -> Result<SchemaRegistry, BootstrapReport> {
    let mut problems = Vec::new();
    let schema = discover_schema(&mut problems);
    if problems.is_empty() {
        Ok(schema)
    } else {
        Err(BootstrapReport::new(problems))
    }
}

/// The registry of every registered event type; each clash goes to `problems` with both
/// declarations (the one copy of discovery: the app's bootstrap and
/// [`discovered_schema`] use it).
pub(crate) fn discover_schema(problems: &mut Vec<Problem>) -> SchemaRegistry {
    let mut schema = SchemaRegistry::new();
    let mut first_location: std::collections::BTreeMap<&'static str, Location> =
        std::collections::BTreeMap::new();
    for registration in events() {
        let event = registration.event_type();
        match schema.register_type(event) {
            Ok(_) => {
                first_location.insert(event.name, registration.location);
            }
            Err(err @ SchemaError::DuplicateEventName { .. }) => {
                let mut problem = Problem::new(err.to_string());
                if let Some(first) = first_location.get(event.name) {
                    problem = problem.at(*first, "first declared here");
                }
                problems.push(problem.at(registration.location, event.rust_type));
            }
            Err(err) => problems
                .push(Problem::new(err.to_string()).at(registration.location, event.rust_type)),
        }
    }
    schema
}
