//! `#[aggregate]` on an impl block with `#[apply]` methods.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::{Errors, Options, reject_generics};

const KEYS: &[&str] = &["name", "snapshot_version"];
const APPLY_KEYS: &[&str] = &["check"];

struct ApplyFn {
    method: syn::Ident,
    event: syn::Type,
    check: Option<syn::Ident>,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = Options::parse(args, KEYS, &mut errors);
    let mut block: syn::ItemImpl = match syn::parse2(item.clone()) {
        Ok(block) => block,
        Err(_) => {
            errors.push_at(
                proc_macro2::Span::call_site(),
                "`#[aggregate]` goes on an `impl` block of the aggregate's state type, like `#[aggregate] impl Account { #[apply] fn opened(&mut self, e: &Opened) { .. } }`",
            );
            return with_errors(errors, item);
        }
    };
    if let Some((_, path, _)) = &block.trait_ {
        errors.push_at(
            path.span(),
            "`#[aggregate]` goes on an inherent `impl Type { .. }` block, not a trait impl",
        );
    }
    reject_generics(&block.generics, "an aggregate", &mut errors);
    let self_ty = (*block.self_ty).clone();
    let default_name = match &self_ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let name = options
        .string("name", &mut errors)
        .map(|s| s.value())
        .or(default_name)
        .unwrap_or_default();
    let snapshot_version = options
        .positive_u32("snapshot_version", &mut errors)
        .unwrap_or(1);

    let mut applies = Vec::new();
    let mut marked = 0;
    for item in &mut block.items {
        let syn::ImplItem::Fn(method) = item else {
            continue;
        };
        let Some(index) = method.attrs.iter().position(is_apply) else {
            continue;
        };
        let attr = method.attrs.remove(index);
        marked += 1;
        if let Some(apply) = parse_apply(&attr, &method.sig, &mut errors) {
            applies.push(apply);
        }
    }
    if marked == 0 {
        errors.push_at(
            block.self_ty.span(),
            "an aggregate needs at least one `#[apply] fn name(&mut self, event: &SomeEvent)` method",
        );
    }
    let mut seen = std::collections::BTreeMap::new();
    for apply in &applies {
        let event = &apply.event;
        let key = quote!(#event).to_string();
        if let Some(first) = seen.insert(key.clone(), apply.method.to_string()) {
            errors.push_at(
                apply.method.span(),
                format!(
                    "`{first}` already applies `{key}`; keep one `#[apply]` method per event type"
                ),
            );
        }
    }
    if let Err(error) = errors.finish() {
        let error = error.to_compile_error();
        return quote!(#error #block);
    }

    // Each event type is checked once, at its span, by `__private::applied`; `apply_stored`
    // and the registration use the checked table, which names no bound on the events, so a
    // type that is not an event is one error. The `Apply` impls name none either.
    let applied = applies.iter().map(|a| {
        let event = &a.event;
        quote_spanned!(event.span()=> ::lexigram::__private::applied::<#self_ty, #event>())
    });
    let count = applies.len();
    let apply_impls = applies.iter().map(|a| {
        let (event, method) = (&a.event, &a.method);
        let check = a.check.as_ref().map(|check| {
            quote! {
                fn check(&self, event: &#event) -> ::core::result::Result<(), ::std::string::String> {
                    #self_ty::#check(self, event)
                }
            }
        });
        quote! {
            impl ::lexigram::Apply<#event> for #self_ty {
                #check
                fn apply(&mut self, event: &#event) {
                    #self_ty::#method(self, event)
                }
            }
        }
    });
    let line = quote_spanned!(block.self_ty.span()=> ::core::line!());
    quote! {
        #block
        const _: () = {
            const __APPLIED: [::lexigram::__private::Applied<#self_ty>; #count] = [#(#applied),*];
            const __EVENTS: [&str; #count] = ::lexigram::__private::event_names(&__APPLIED);
            impl ::lexigram::Aggregate for #self_ty {
                const TYPE: &'static str = #name;
                const SNAPSHOT_VERSION: u32 = #snapshot_version;
                fn apply_stored(
                    &mut self,
                    event: &::lexigram::EventEnvelope,
                ) -> ::core::result::Result<(), ::lexigram::error::EventLoadError> {
                    ::lexigram::__private::apply_stored(self, event, &__APPLIED)
                }
            }
            #(#apply_impls)*
            ::lexigram::__private::inventory::submit! {
                ::lexigram::__private::AggregateRegistration::of::<#self_ty>(
                    &__EVENTS,
                    ::core::file!(),
                    #line,
                )
            }
        };
    }
}

fn is_apply(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "apply")
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

/// Checks `fn name(&mut self, event: &Event)` and reads `#[apply(check = ..)]`.
fn parse_apply(
    attr: &syn::Attribute,
    sig: &syn::Signature,
    errors: &mut Errors,
) -> Option<ApplyFn> {
    let options = Options::from_attrs(std::slice::from_ref(attr), "apply", APPLY_KEYS, errors);
    let check = options.ident("check", errors);
    let shape = "an `#[apply]` method has the shape `fn name(&mut self, event: &SomeEvent)`";
    let mut ok = true;
    if let Some(asyncness) = &sig.asyncness {
        errors.push_at(
            asyncness.span(),
            format!("{shape}; it cannot be `async`: applying an event is a pure state change"),
        );
        ok = false;
    }
    if !sig.generics.params.is_empty() {
        errors.push_at(
            sig.generics.span(),
            format!("{shape}; it cannot be generic"),
        );
        ok = false;
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        errors.push_at(ty.span(), format!("{shape}; it must return nothing: an event is a fact and cannot fail to apply (reject it earlier with `#[apply(check = ..)]`)"));
        ok = false;
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(syn::FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some() => {}
        Some(other) => {
            errors.push_at(
                other.span(),
                format!("{shape}; the first parameter must be `&mut self`"),
            );
            ok = false;
        }
        None => {
            errors.push_at(sig.span(), format!("{shape}; it has no parameters"));
            return None;
        }
    }
    let event = match (inputs.next(), inputs.next()) {
        (Some(syn::FnArg::Typed(arg)), None) => match &*arg.ty {
            syn::Type::Reference(r) if r.mutability.is_none() => Some((*r.elem).clone()),
            other => {
                errors.push_at(
                    other.span(),
                    format!(
                        "{shape}; take the event by shared reference: `&{}`",
                        quote!(#other)
                    ),
                );
                None
            }
        },
        (None, _) => {
            errors.push_at(
                sig.ident.span(),
                format!("{shape}; add the event parameter"),
            );
            None
        }
        (_, Some(extra)) => {
            errors.push_at(
                extra.span(),
                format!("{shape}; remove the extra parameters"),
            );
            None
        }
        (Some(other), None) => {
            errors.push_at(other.span(), shape);
            None
        }
    };
    let event = event.filter(|_| ok)?;
    Some(ApplyFn {
        method: sig.ident.clone(),
        event,
        check,
    })
}
