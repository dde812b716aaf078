//! Parsing `key = value` options, with every error collected and spanned.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::spanned::Spanned;

/// Errors collected while expanding, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn push_at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Whether no error was collected.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The collected errors as `compile_error!`s, if any.
    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Keys whose value is a type (`output = Vec<u8>`), not an expression.
const TYPE_KEYS: &[&str] = &["output"];

/// One `key = value` (or bare `key`) option.
pub(crate) struct Opt {
    pub(crate) key_span: Span,
    pub(crate) value: Option<syn::Expr>,
}

/// Parsed options by key.
pub(crate) struct Options(BTreeMap<String, Opt>);

impl Options {
    /// Parses `key = value, key2, ...`, rejecting unknown and repeated keys.
    pub(crate) fn parse(tokens: TokenStream, valid: &[&str], errors: &mut Errors) -> Self {
        let mut found = BTreeMap::new();
        let parser = syn::meta::parser(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let span = meta.path.span();
            let value = if !meta.input.peek(syn::Token![=]) {
                None
            } else if TYPE_KEYS.contains(&key.as_str()) {
                let ty: syn::Type = meta.value()?.parse()?;
                Some(syn::Expr::Verbatim(quote::quote!(#ty)))
            } else {
                Some(meta.value()?.parse::<syn::Expr>()?)
            };
            if !valid.contains(&key.as_str()) {
                let expected = valid
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let path = &meta.path;
                let shown = if key.is_empty() {
                    quote::quote!(#path).to_string()
                } else {
                    key
                };
                errors.push_at(
                    span,
                    format!("unknown key `{shown}`; expected one of {expected}"),
                );
            } else {
                match found.entry(key) {
                    Entry::Occupied(e) => errors.push_at(
                        span,
                        format!("duplicate key `{}`; give each key once", e.key()),
                    ),
                    Entry::Vacant(e) => {
                        e.insert(Opt {
                            key_span: span,
                            value,
                        });
                    }
                }
            }
            Ok(())
        });
        if let Err(error) = parser.parse2(tokens) {
            errors.push(error);
        }
        Self(found)
    }

    /// Parses the options of every `#[name(...)]` attribute in `attrs` (also written as a
    /// path, like `#[lexigram::name(...)]`).
    pub(crate) fn from_attrs(
        attrs: &[syn::Attribute],
        name: &str,
        valid: &[&str],
        errors: &mut Errors,
    ) -> Self {
        let mut all = Self(BTreeMap::new());
        let named = |a: &&syn::Attribute| a.path().segments.last().is_some_and(|s| s.ident == name);
        for attr in attrs.iter().filter(named) {
            let tokens = match &attr.meta {
                syn::Meta::List(list) => list.tokens.clone(),
                syn::Meta::Path(_) => TokenStream::new(),
                syn::Meta::NameValue(nv) => {
                    errors.push_at(nv.span(), format!("write `#[{name}(key = value, ..)]`"));
                    continue;
                }
            };
            for (key, opt) in Self::parse(tokens, valid, errors).0 {
                match all.0.entry(key) {
                    Entry::Occupied(e) => errors.push_at(
                        opt.key_span,
                        format!("duplicate key `{}`; give each key once", e.key()),
                    ),
                    Entry::Vacant(e) => {
                        e.insert(opt);
                    }
                }
            }
        }
        all
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Opt> {
        self.0.get(key)
    }

    /// A string literal option.
    pub(crate) fn string(&self, key: &str, errors: &mut Errors) -> Option<syn::LitStr> {
        let opt = self.get(key)?;
        match &opt.value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            })) => Some(s.clone()),
            Some(other) => {
                errors.push_at(
                    other.span(),
                    format!("`{key}` must be a string literal, like `{key} = \"...\"`"),
                );
                None
            }
            None => {
                errors.push_at(
                    opt.key_span,
                    format!("`{key}` needs a value, like `{key} = \"...\"`"),
                );
                None
            }
        }
    }

    /// A positive integer literal option.
    pub(crate) fn positive_u32(&self, key: &str, errors: &mut Errors) -> Option<u32> {
        let opt = self.get(key)?;
        let parsed = match &opt.value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            })) => i.base10_parse::<u32>().ok().filter(|v| *v > 0),
            _ => None,
        };
        if parsed.is_none() {
            let span = opt.value.as_ref().map_or(opt.key_span, Spanned::span);
            errors.push_at(
                span,
                format!("`{key}` must be a positive integer, like `{key} = 1`"),
            );
        }
        parsed
    }

    /// A type option (`output = Vec<u8>`).
    pub(crate) fn ty(&self, key: &str, errors: &mut Errors) -> Option<syn::Type> {
        let opt = self.get(key)?;
        let Some(expr) = &opt.value else {
            errors.push_at(
                opt.key_span,
                format!("`{key}` needs a type, like `{key} = u64`"),
            );
            return None;
        };
        match syn::parse2::<syn::Type>(quote::quote!(#expr)) {
            Ok(ty) => Some(ty),
            Err(_) => {
                errors.push_at(
                    expr.span(),
                    format!("`{key}` must be a type, like `{key} = u64`"),
                );
                None
            }
        }
    }

    /// An identifier option (`kind = integration`, `check = can_withdraw`).
    pub(crate) fn ident(&self, key: &str, errors: &mut Errors) -> Option<syn::Ident> {
        let opt = self.get(key)?;
        match &opt.value {
            Some(syn::Expr::Path(p)) if p.path.get_ident().is_some() => p.path.get_ident().cloned(),
            other => {
                let span = other.as_ref().map_or(opt.key_span, Spanned::span);
                errors.push_at(
                    span,
                    format!("`{key}` must be a name, like `{key} = something`"),
                );
                None
            }
        }
    }
}

/// Rejects generic parameters, which registrations cannot name.
pub(crate) fn reject_generics(generics: &syn::Generics, what: &str, errors: &mut Errors) {
    if !generics.params.is_empty() {
        errors.push_at(
            generics.span(),
            format!("{what} cannot be generic: lexigram registers one concrete type per name; write a concrete type (a type alias is fine)"),
        );
    }
}
