//! `#[derive(Event)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::attr::{Errors, Options, reject_generics};

const KEYS: &[&str] = &["name", "version", "kind"];

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    match try_derive(input) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn try_derive(input: TokenStream) -> syn::Result<TokenStream> {
    let input: syn::DeriveInput = syn::parse2(input)?;
    let mut errors = Errors::default();
    reject_generics(&input.generics, "an event type", &mut errors);
    let options = Options::from_attrs(&input.attrs, "event", KEYS, &mut errors);
    let ident = &input.ident;
    let name = options
        .string("name", &mut errors)
        .map_or_else(|| ident.to_string(), |s| s.value());
    if name.trim().is_empty() {
        errors.push_at(ident.span(), "the event name must not be empty");
    }
    let version = options.positive_u32("version", &mut errors).unwrap_or(1);
    let kind = match options.ident("kind", &mut errors) {
        None => quote!(Domain),
        Some(k) if k == "domain" => quote!(Domain),
        Some(k) if k == "integration" => quote!(Integration),
        Some(k) => {
            errors.push_at(
                k.span(),
                format!("unknown event kind `{k}`; expected `domain` or `integration`"),
            );
            quote!(Domain)
        }
    };
    if !input.generics.params.is_empty() {
        // Reported by `reject_generics`; an impl could not name the type.
        return errors.finish().map(|()| TokenStream::new());
    }
    // The impl is written even after an error (with the defaults in place of what was wrong),
    // so code using the event reports nothing more.
    let errors = errors.finish().err().map(|e| e.to_compile_error());
    let line = quote_spanned!(ident.span()=> ::core::line!());
    Ok(quote! {
        #errors
        impl ::lexigram::Event for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const KIND: ::lexigram::message::EventKind = ::lexigram::message::EventKind::#kind;
        }
        ::lexigram::__private::inventory::submit! {
            ::lexigram::__private::EventRegistration::of::<#ident>(::core::file!(), #line)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_to_an_impl_and_a_registration() {
        let out = derive(quote! {
            #[event(name = "bank.Opened", version = 2, kind = integration)]
            struct Opened { owner: String }
        })
        .to_string();
        assert!(
            out.contains("const NAME : & 'static str = \"bank.Opened\""),
            "{out}"
        );
        assert!(out.contains("const VERSION : u32 = 2u32"), "{out}");
        assert!(out.contains("EventKind :: Integration"), "{out}");
        assert!(
            out.contains("EventRegistration :: of :: < Opened >"),
            "{out}"
        );
    }

    #[test]
    fn collects_every_error() {
        let out = derive(quote! {
            #[event(nam = "x", version = 0, version = 2)]
            struct E<T>(T);
        })
        .to_string();
        assert!(out.contains("cannot be generic"), "{out}");
        assert!(
            out.contains("unknown key `nam`; expected one of `name`, `version`, `kind`"),
            "{out}"
        );
        assert!(
            out.contains("`version` must be a positive integer"),
            "{out}"
        );
        assert!(out.contains("duplicate key `version`"), "{out}");
    }
}
