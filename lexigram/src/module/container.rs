//! The dependency container: typed providers that handlers draw their parameters from.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::Problem;
use crate::registration::Location;

type Erased = Arc<dyn Any + Send + Sync>;
type Factory = Arc<dyn Fn(&Container) -> Option<Erased> + Send + Sync>;

/// A shared dependency: `Dep<T>` in a handler's parameters is the `T` provided to the app
/// (`.provide(T)`, or `.provide_arc::<dyn Trait>(..)` for a trait object). Cheap to clone;
/// derefs to `T`.
pub struct Dep<T: ?Sized>(Arc<T>);

impl<T: ?Sized> Dep<T> {
    /// Wraps a shared value.
    pub fn from_arc(value: Arc<T>) -> Self {
        Self(value)
    }

    /// The shared value.
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T: ?Sized> Clone for Dep<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Deref for Dep<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Dep<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dep").field(&&*self.0).finish()
    }
}

enum Provider {
    /// One shared value (an `Arc<T>` behind `dyn Any`).
    Value(Erased),
    /// Called at each resolution; returns an `Arc<T>` behind `dyn Any`.
    Factory(Factory),
}

struct Entry {
    type_name: &'static str,
    provider: Provider,
    location: Location,
    /// Provided with `replace`: overrides any other provider without being a conflict.
    replaces: bool,
}

/// Typed providers by type. Built by [`AppBuilder`](crate::module::AppBuilder) (or by hand in
/// tests) and read-only once the app runs.
///
/// ```
/// use std::sync::Arc;
/// use lexigram::module::{Container, Dep};
///
/// trait Clock: Send + Sync { fn now(&self) -> u64; }
/// struct Fixed;
/// impl Clock for Fixed { fn now(&self) -> u64 { 42 } }
///
/// let mut container = Container::new();
/// container.provide(String::from("eu-west-1"));
/// container.provide_arc::<dyn Clock>(Arc::new(Fixed));
/// container.provide_factory(|c| {
///     let region = c.get::<String>()?;
///     Some(format!("bucket-{}", *region).len())
/// });
///
/// let clock: Dep<dyn Clock> = container.get().expect("provided");
/// assert_eq!(clock.now(), 42);
/// assert_eq!(container.get::<usize>().as_deref(), Some(&16));
/// ```
#[derive(Default)]
pub struct Container {
    entries: HashMap<TypeId, Entry>,
    duplicates: Vec<(&'static str, Location, Location)>,
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.entries.values().map(|e| e.type_name).collect();
        names.sort_unstable();
        f.debug_struct("Container")
            .field("provides", &names)
            .finish()
    }
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Provides one shared `T`. Providing a type twice is reported at `build()`; use
    /// [`replace`](Self::replace) to override on purpose (tests).
    #[track_caller]
    pub fn provide<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.provide_arc(Arc::new(value))
    }

    /// Provides a shared value, which may be a trait object: `provide_arc::<dyn Mailer>(..)`.
    #[track_caller]
    pub fn provide_arc<T: ?Sized + Send + Sync + 'static>(&mut self, value: Arc<T>) -> &mut Self {
        let erased: Erased = Arc::new(value);
        self.insert::<T>(Provider::Value(erased), false)
    }

    /// Provides `T` through a factory called at each resolution (after every other provider
    /// is in place, so it may read them). Returning `None` means "cannot build it".
    #[track_caller]
    pub fn provide_factory<T, F>(&mut self, factory: F) -> &mut Self
    where
        T: Send + Sync + 'static,
        F: Fn(&Container) -> Option<T> + Send + Sync + 'static,
    {
        let factory: Factory =
            Arc::new(move |c| factory(c).map(|v| Arc::new(Arc::new(v)) as Erased));
        self.insert::<T>(Provider::Factory(factory), false)
    }

    /// Replaces any provider of `T` with `value` (overrides for tests).
    #[track_caller]
    pub fn replace<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.replace_arc(Arc::new(value))
    }

    /// Replaces any provider of `T` with a shared value (which may be a trait object).
    #[track_caller]
    pub fn replace_arc<T: ?Sized + Send + Sync + 'static>(&mut self, value: Arc<T>) -> &mut Self {
        let erased: Erased = Arc::new(value);
        self.insert::<T>(Provider::Value(erased), true)
    }

    #[track_caller]
    fn insert<T: ?Sized + 'static>(&mut self, provider: Provider, replace: bool) -> &mut Self {
        let caller = std::panic::Location::caller();
        let location = Location {
            file: caller.file(),
            line: caller.line(),
        };
        let type_name = std::any::type_name::<T>();
        let entry = Entry {
            type_name,
            provider,
            location,
            replaces: replace,
        };
        if let Some(old) = self.entries.insert(TypeId::of::<T>(), entry)
            && !replace
        {
            self.duplicates.push((type_name, old.location, location));
        }
        self
    }

    /// Moves every provider of `other` (the app builder's) into this container (the
    /// modules'). A type both provide is a conflict unless `other` used `replace`.
    pub(crate) fn absorb(&mut self, other: Container) {
        self.duplicates.extend(other.duplicates);
        for (id, entry) in other.entries {
            let (type_name, location, replaces) = (entry.type_name, entry.location, entry.replaces);
            if let Some(old) = self.entries.insert(id, entry)
                && !replaces
            {
                self.duplicates.push((type_name, old.location, location));
            }
        }
    }

    /// The `T` provided, if any.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Option<Dep<T>> {
        let entry = self.entries.get(&TypeId::of::<T>())?;
        let erased = match &entry.provider {
            Provider::Value(value) => Arc::clone(value),
            Provider::Factory(factory) => factory(self)?,
        };
        erased
            .downcast_ref::<Arc<T>>()
            .map(|arc| Dep(Arc::clone(arc)))
    }

    /// Whether some provider of `T` exists.
    pub fn contains<T: ?Sized + 'static>(&self) -> bool {
        self.entries.contains_key(&TypeId::of::<T>())
    }

    /// What is wrong with the providers: each type provided twice without
    /// [`replace`](Self::replace), with both locations.
    pub fn problems(&self) -> Vec<Problem> {
        self.duplicates
            .iter()
            .map(|(type_name, first, second)| {
                Problem::new(format!(
                    "`{type_name}` is provided twice (a type has one provider)"
                ))
                .at(*first, "first provided here")
                .at(*second, "provided again here")
                .help("remove one, or use `replace` to override it on purpose (tests)")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provide_twice_is_recorded_and_replace_is_not() {
        let mut c = Container::new();
        c.provide(1u32).provide(2u32);
        assert_eq!(c.problems().len(), 1);
        assert_eq!(c.get::<u32>().as_deref(), Some(&2));
        c.replace(3u32);
        assert_eq!(c.problems().len(), 1);
        assert_eq!(c.get::<u32>().as_deref(), Some(&3));
    }

    #[test]
    fn missing_types_and_failing_factories_are_none() {
        let mut c = Container::new();
        c.provide_factory::<u8, _>(|_| None);
        assert!(c.get::<u8>().is_none());
        assert!(c.get::<u16>().is_none());
        assert!(c.contains::<u8>());
    }
}
