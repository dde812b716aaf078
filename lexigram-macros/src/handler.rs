//! `#[command_handler]`, `#[query_handler]`, `#[event_handler]`, `#[reaction]`, and
//! `#[handlers]` for methods.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::{Errors, Options};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Command,
    Query,
    Event,
    Reaction,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Self::Command => "command_handler",
            Self::Query => "query_handler",
            Self::Event => "event_handler",
            Self::Reaction => "reaction",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Command => &["name"],
            Self::Query => &["name", "cache", "cache_ttl", "cache_size"],
            Self::Event => &["name", "priority"],
            Self::Reaction => &["name", "partitions", "batch_size", "version", "start"],
        }
    }

    /// Whether the handler takes an event (by value or by reference).
    fn takes_event(self) -> bool {
        matches!(self, Self::Event | Self::Reaction)
    }

    fn from_attr(attr: &syn::Attribute) -> Option<Self> {
        let ident = &attr.path().segments.last()?.ident;
        [Self::Command, Self::Query, Self::Event, Self::Reaction]
            .into_iter()
            .find(|k| ident == k.attr())
    }
}

/// Options of one handler attribute.
struct HandlerOptions {
    name: Option<String>,
    priority: i32,
    cache: Option<(u64, usize)>,
    /// `#[reaction]`: the settings its declaration gives.
    reaction: ReactionOptions,
}

/// What a `#[reaction]` declares beside its name.
#[derive(Default)]
struct ReactionOptions {
    partitions: Option<u32>,
    batch_size: Option<u32>,
    version: Option<u32>,
    /// `origin` or `now`.
    start: Option<syn::Ident>,
}

fn parse_reaction(options: &Options, name: Option<&str>, errors: &mut Errors) -> ReactionOptions {
    match name {
        None => errors.push_at(
            Span::call_site(),
            "a reaction needs a name, which keys its checkpoints: `#[reaction(name = \"bank.welcome-mail\")]`",
        ),
        Some(name) if name.trim().is_empty() || name.len() > 200 || name.contains('\0') => {
            if let Some(opt) = options.get("name") {
                errors.push_at(
                    opt.value.as_ref().map_or(opt.key_span, Spanned::span),
                    "a reaction's name is 1 to 200 bytes without NUL, like \"bank.welcome-mail\"",
                );
            }
        }
        Some(_) => {}
    }
    let partitions = options.positive_u32("partitions", errors);
    if let (Some(p), Some(opt)) = (partitions, options.get("partitions"))
        && p > 1024
    {
        errors.push_at(
            opt.value.as_ref().map_or(opt.key_span, Spanned::span),
            "`partitions` is at most 1024",
        );
    }
    let start = options.get("start").and_then(|opt| {
        let text = match &opt.value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s), ..
            })) => Some((s.value(), s.span())),
            Some(syn::Expr::Path(p)) => p.path.get_ident().map(|i| (i.to_string(), i.span())),
            _ => None,
        };
        match text {
            Some((text, span)) if text == "origin" || text == "now" => {
                Some(syn::Ident::new(if text == "now" { "Now" } else { "Origin" }, span))
            }
            _ => {
                errors.push_at(
                    opt.value.as_ref().map_or(opt.key_span, Spanned::span),
                    "`start` is `\"origin\"` (the whole history, the default) or `\"now\"` (only events stored after the reaction first runs)",
                );
                None
            }
        }
    });
    ReactionOptions {
        partitions,
        batch_size: options.positive_u32("batch_size", errors),
        version: options.positive_u32("version", errors),
        start,
    }
}

fn parse_options(kind: Kind, options: &Options, errors: &mut Errors) -> HandlerOptions {
    let name = options.string("name", errors).map(|s| s.value());
    let priority = options.get("priority").map_or(0, |opt| {
        let value = match &opt.value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            })) => i.base10_parse::<i32>().ok(),
            Some(syn::Expr::Unary(syn::ExprUnary {
                op: syn::UnOp::Neg(_),
                expr,
                ..
            })) => match &**expr {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(i),
                    ..
                }) => i.base10_parse::<i32>().ok().map(|v| -v),
                _ => None,
            },
            _ => None,
        };
        value.unwrap_or_else(|| {
            errors.push_at(
                opt.value.as_ref().map_or(opt.key_span, Spanned::span),
                "`priority` must be an integer, like `priority = 10` (higher runs first)",
            );
            0
        })
    });
    let mut cache = None;
    if kind == Kind::Query {
        let ttl = options.string("cache_ttl", errors).and_then(|lit| {
            match parse_duration_ms(&lit.value()) {
                Some(ms) => Some(ms),
                None => {
                    errors.push_at(
                        lit.span(),
                        "`cache_ttl` must be a duration like \"500ms\", \"30s\", \"5m\" or \"1h\"",
                    );
                    None
                }
            }
        });
        let size = options
            .get("cache_size")
            .map(|_| options.positive_u32("cache_size", errors).unwrap_or(1) as usize);
        let enabled = match options.get("cache") {
            None => None,
            Some(opt) => match &opt.value {
                None
                | Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(syn::LitBool { value: true, .. }),
                    ..
                })) => Some(true),
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Bool(syn::LitBool { value: false, .. }),
                    ..
                })) => Some(false),
                Some(other) => {
                    errors.push_at(other.span(), "`cache` must be `true` or `false`");
                    None
                }
            },
        };
        if enabled != Some(false) && (enabled == Some(true) || ttl.is_some() || size.is_some()) {
            cache = Some((ttl.unwrap_or(300_000), size.unwrap_or(1_000)));
        }
    }
    let reaction = if kind == Kind::Reaction {
        parse_reaction(options, name.as_deref(), errors)
    } else {
        ReactionOptions::default()
    };
    HandlerOptions {
        name,
        priority,
        cache,
        reaction,
    }
}

/// `"500ms"`, `"30s"`, `"5m"`, `"1h"` in milliseconds.
fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(factor).filter(|ms| *ms > 0)
}

/// A parameter after the message: its type without `&`, and whether it is passed by reference.
struct Param {
    ty: syn::Type,
    by_ref: bool,
}

/// What the expansion needs from the handler's signature.
struct Signature {
    ident: syn::Ident,
    message: syn::Type,
    message_by_ref: bool,
    params: Vec<Param>,
    /// The return type (a `Result`), checked against the message's output at its span.
    output: syn::Type,
}

fn check_signature(
    kind: Kind,
    sig: &syn::Signature,
    method: bool,
    errors: &mut Errors,
) -> Option<Signature> {
    let what = kind.attr().replace('_', " ");
    let mut ok = true;
    if sig.asyncness.is_none() {
        errors.push_at(
            sig.fn_token.span(),
            format!("a {what} must be an `async fn`"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push_at(sig.generics.span(), format!("a {what} cannot be generic: lexigram registers one concrete handler per message type"));
        ok = false;
    }
    match &sig.output {
        syn::ReturnType::Default => {
            errors.push_at(sig.ident.span(), format!("a {what} returns a `Result` (`Result<Output, E>` with `E` convertible into a boxed error); add a return type"));
            ok = false;
        }
        syn::ReturnType::Type(_, ty) => {
            let is_result = matches!(&**ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Result"));
            if !is_result {
                errors.push_at(
                    ty.span(),
                    format!(
                        "a {what} returns a `Result`, like `Result<(), MyError>`; found `{}`",
                        quote!(#ty)
                    ),
                );
                ok = false;
            }
        }
    }
    let mut inputs = sig.inputs.iter().peekable();
    match inputs.peek() {
        Some(syn::FnArg::Receiver(receiver)) => {
            if !method {
                errors.push_at(receiver.span(), format!("a {what} method needs `#[handlers]` on the enclosing `impl` block, which provides `self` from the container"));
                return None;
            }
            if receiver.reference.is_none() || receiver.mutability.is_some() {
                errors.push_at(receiver.span(), format!("a {what} method takes `&self`"));
                ok = false;
            }
            inputs.next();
        }
        _ if method => {
            errors.push_at(
                sig.ident.span(),
                format!("a {what} method inside `#[handlers]` takes `&self` first"),
            );
            ok = false;
        }
        _ => {}
    }
    let Some(first) = inputs.next() else {
        errors.push_at(
            sig.ident.span(),
            format!("a {what} takes the message as its first parameter, like `cmd: MyCommand`"),
        );
        return None;
    };
    let syn::FnArg::Typed(first) = first else {
        return None;
    };
    let (message, message_by_ref) = match &*first.ty {
        syn::Type::Reference(r) if kind.takes_event() && r.mutability.is_none() => {
            ((*r.elem).clone(), true)
        }
        syn::Type::Reference(r) if kind.takes_event() => {
            errors.push_at(
                r.span(),
                format!("a {what} takes its event by value or by shared reference (`E` or `&E`), not `&mut`"),
            );
            ok = false;
            ((*r.elem).clone(), false)
        }
        syn::Type::Reference(r) => {
            errors.push_at(
                r.span(),
                format!("a {what} takes its message by value; remove the `&`"),
            );
            ok = false;
            ((*r.elem).clone(), false)
        }
        other => (other.clone(), false),
    };
    let mut params = Vec::new();
    for input in inputs {
        let syn::FnArg::Typed(arg) = input else {
            continue;
        };
        match &*arg.ty {
            syn::Type::Reference(r) if r.mutability.is_none() => params.push(Param {
                ty: (*r.elem).clone(),
                by_ref: true,
            }),
            syn::Type::Reference(r) => {
                errors.push_at(
                    r.span(),
                    "a handler parameter cannot be `&mut`; take it by value or by shared reference",
                );
                ok = false;
            }
            syn::Type::ImplTrait(t) => {
                errors.push_at(t.span(), "a handler parameter cannot be `impl Trait`; name a concrete type, or `Dep<dyn Trait>`");
                ok = false;
            }
            ty => params.push(Param {
                ty: ty.clone(),
                by_ref: false,
            }),
        }
    }
    let syn::ReturnType::Type(_, output) = &sig.output else {
        return None;
    };
    ok.then(|| Signature {
        ident: sig.ident.clone(),
        message,
        message_by_ref,
        params,
        output: (**output).clone(),
    })
}

/// The registration of one handler. `host` is the impl's self type for methods, and whether
/// it is built from its fields (`#[handlers(inject)]`).
///
/// Every check a user can fail is one call at the span of the token it is about, and the code
/// around it does not depend on it holding: parameters are resolved by
/// `__private::prepare::<P, _>` at `P` (the registered closure only calls
/// `Prepared::produce`, which has no bound), and the handler's result goes through
/// `__private::command_result::<C, R>` at the return type `R`, which returns exactly what the
/// bus expects.
fn registration(
    kind: Kind,
    sig: &Signature,
    options: &HandlerOptions,
    host: Option<(&syn::Type, bool)>,
    span: Span,
) -> TokenStream {
    let this = host.map(|(this, _)| this);
    let message = &sig.message;
    let (ctx, register) = match kind {
        Kind::Command => (quote!(::lexigram::command::CommandContext), quote!(command)),
        Kind::Query => (quote!(::lexigram::query::QueryContext), quote!(query)),
        Kind::Event => (quote!(::lexigram::event::EventContext), quote!(event)),
        Kind::Reaction => (
            quote!(::lexigram::subscription::ReactionContext),
            quote!(reaction),
        ),
    };
    let mut prepare: Vec<TokenStream> = sig
        .params
        .iter()
        .map(|p| {
            let ty = &p.ty;
            quote_spanned!(ty.span()=> ::lexigram::__private::prepare::<#ty, __Ctx>(w))
        })
        .collect();
    match host {
        Some((this, false)) => prepare.insert(
            0,
            quote_spanned!(this.span()=> ::lexigram::__private::prepare::<::lexigram::module::Dep<#this>, __Ctx>(w)),
        ),
        Some((this, true)) => prepare.insert(
            0,
            quote_spanned!(this.span()=> ::lexigram::__private::inject::<#this, __Ctx>(w)),
        ),
        None => {}
    }
    let params: Vec<_> = (0..prepare.len())
        .map(|i| format_ident!("__param{i}"))
        .collect();
    let args: Vec<_> = (0..prepare.len())
        .map(|i| format_ident!("__arg{i}"))
        .collect();
    let resolve = match params.as_slice() {
        [] => quote!(),
        [param] => {
            let prepare = &prepare[0];
            quote! {
                let ::core::option::Option::Some(#param) = #prepare else { return };
            }
        }
        _ => quote! {
            #(let #params = #prepare;)*
            let (#(::core::option::Option::Some(#params),)*) = (#(#params,)*) else { return };
        },
    };
    let message_arg = if sig.message_by_ref {
        quote!(&__message)
    } else {
        quote!(__message)
    };
    let pass = |p: &Param, a: &syn::Ident| if p.by_ref { quote!(&#a) } else { quote!(#a) };
    let ident = &sig.ident;
    let call = match this {
        Some(this) => {
            let rest = sig.params.iter().zip(&args[1..]).map(|(p, a)| pass(p, a));
            let this_arg = &args[0];
            quote!(<#this>::#ident(&#this_arg, #message_arg #(, #rest)*))
        }
        None => {
            let rest = sig.params.iter().zip(&args).map(|(p, a)| pass(p, a));
            quote!(#ident(#message_arg #(, #rest)*))
        }
    };
    // The result check, at the return type. Its argument starts at the type's first token and
    // ends at its last, so the compiler underlines the whole type.
    let output = &sig.output;
    let mut tokens = quote!(#output).into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| t.span());
    let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, quote!(__result));
    group.set_span(last);
    // What the bus expects; spanned on the message type, where a type that is not a message is
    // reported (once: the bus registration below asks the same at the same place).
    let expected = match kind {
        Kind::Command => quote_spanned!(message.span()=> <#message as ::lexigram::Command>::Output),
        Kind::Query => quote_spanned!(message.span()=> <#message as ::lexigram::Query>::Output),
        Kind::Event | Kind::Reaction => quote!(()),
    };
    let checked = quote_spanned! {first=>
        ::lexigram::__private::handler_result::<#message, #expected>(::core::convert::identity #group)
    };
    // Spanned on the message type, so a type that is not a message is one error there.
    let closure = quote_spanned! {message.span()=>
        move |__message: #message, __ctx: __Ctx| {
            #(let #args = #params.produce(&__ctx);)*
            async move {
                let __result = #call.await;
                #checked
            }
        }
    };
    let register_call = match (kind, options.cache) {
        (Kind::Query, Some((ttl_ms, size))) => quote_spanned! {message.span()=>
            w.cached_query::<#message, _>(#closure, ::lexigram::query::CachePolicy::new(::core::time::Duration::from_millis(#ttl_ms), #size))
        },
        (Kind::Event, _) => {
            let priority = options.priority;
            let name = match &options.name {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            quote_spanned!(message.span()=> w.event::<#message, _>(#closure, #priority, #name))
        }
        (Kind::Reaction, _) => {
            let name = options.name.as_deref().unwrap_or_default();
            let r = &options.reaction;
            let mut decl = quote!(::lexigram::subscription::ReactionDecl::new(#name));
            if let Some(p) = r.partitions {
                decl.extend(quote!(.partitions(#p)));
            }
            if let Some(b) = r.batch_size {
                let b = b as usize;
                decl.extend(quote!(.batch_size(#b)));
            }
            if let Some(v) = r.version {
                decl.extend(quote!(.version(#v)));
            }
            if let Some(start) = &r.start {
                decl.extend(quote!(.start_from(::lexigram::subscription::StartFrom::#start)));
            }
            quote_spanned!(message.span()=> w.reaction::<#message, _>(#closure, #decl))
        }
        _ => quote_spanned!(message.span()=> w.#register::<#message, _>(#closure)),
    };
    // At the message type, like the closure: a type that is not a message is reported there.
    let register_call = quote_spanned!(message.span()=> #register_call;);
    let fn_name = match (&options.name, this) {
        (Some(name), _) if !kind.takes_event() => quote!(#name),
        (_, Some(this)) => {
            let path = format!(
                "{}::{}",
                quote!(#this).to_string().replace(' ', ""),
                sig.ident
            );
            quote!(::core::concat!(::core::module_path!(), "::", #path))
        }
        _ => {
            let ident = sig.ident.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #ident))
        }
    };
    let line = quote_spanned!(span=> ::core::line!());
    // The registration below requires the message trait in its own item; asking the same first
    // here, with the same words, lets the compiler print it once.
    let message_check = quote_spanned! {message.span()=>
        let _ = ::lexigram::__private::HandlerRegistration::#register::<#message>;
    };
    quote! {
        const _: () = {
            fn __lexigram_wire(w: &mut ::lexigram::__private::Wiring<'_>) {
                type __Ctx = #ctx;
                #message_check
                #resolve
                #register_call
            }
            ::lexigram::__private::inventory::submit! {
                ::lexigram::__private::HandlerRegistration::#register::<#message>(
                    ::lexigram::__private::HandlerSite::new(#fn_name, ::core::module_path!(), ::core::file!(), #line),
                    __lexigram_wire,
                )
            }
        };
    }
}

/// `#[command_handler]` and friends on a free `async fn`.
pub(crate) fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = Options::parse(args, kind.keys(), &mut errors);
    let options = parse_options(kind, &options, &mut errors);
    let function: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            errors.push_at(
                Span::call_site(),
                format!("`#[{}]` goes on an `async fn`", kind.attr()),
            );
            return with_errors(errors, item);
        }
    };
    let sig = check_signature(kind, &function.sig, false, &mut errors);
    match (errors.finish(), sig) {
        (Ok(()), Some(sig)) => {
            let registration = registration(kind, &sig, &options, None, function.sig.ident.span());
            quote!(#function #registration)
        }
        (Err(error), _) => {
            let error = error.to_compile_error();
            quote!(#error #function)
        }
        (Ok(()), None) => quote!(#function),
    }
}

/// `#[handlers]` on an impl block: its methods marked with handler attributes become handlers
/// called on the instance the container provides (`Dep<Self>`).
pub(crate) fn expand_impl(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let inject = Options::parse(args, &["inject"], &mut errors)
        .get("inject")
        .is_some();
    let mut block: syn::ItemImpl = match syn::parse2(item.clone()) {
        Ok(block) => block,
        Err(_) => {
            errors.push_at(Span::call_site(), "`#[handlers]` goes on an `impl` block whose methods are marked `#[command_handler]`, `#[query_handler]`, `#[event_handler]` or `#[reaction]`");
            return with_errors(errors, item);
        }
    };
    crate::attr::reject_generics(&block.generics, "a handlers type", &mut errors);
    let this = (*block.self_ty).clone();
    let mut registrations = Vec::new();
    for item in &mut block.items {
        let syn::ImplItem::Fn(method) = item else {
            continue;
        };
        let Some(index) = method
            .attrs
            .iter()
            .position(|a| Kind::from_attr(a).is_some())
        else {
            continue;
        };
        let attr = method.attrs.remove(index);
        let Some(kind) = Kind::from_attr(&attr) else {
            continue;
        };
        let options = Options::from_attrs(
            std::slice::from_ref(&attr),
            attr.path()
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_default()
                .as_str(),
            kind.keys(),
            &mut errors,
        );
        let options = parse_options(kind, &options, &mut errors);
        if let Some(sig) = check_signature(kind, &method.sig, true, &mut errors) {
            registrations.push(registration(
                kind,
                &sig,
                &options,
                Some((&this, inject)),
                method.sig.ident.span(),
            ));
        }
    }
    if registrations.is_empty() && errors.is_empty() {
        errors.push_at(block.self_ty.span(), "`#[handlers]` found no method marked `#[command_handler]`, `#[query_handler]`, `#[event_handler]` or `#[reaction]`");
    }
    match errors.finish() {
        Ok(()) => quote!(#block #(#registrations)*),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #block)
        }
    }
}

fn with_errors(errors: Errors, item: TokenStream) -> TokenStream {
    match errors.finish() {
        Ok(()) => item,
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #item)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("0s"), None);
        assert_eq!(parse_duration_ms("soon"), None);
        assert_eq!(parse_duration_ms("10d"), None);
    }
}
