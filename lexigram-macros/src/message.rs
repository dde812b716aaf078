//! `#[derive(Command)]` and `#[derive(Query)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};

use crate::attr::{Errors, Options, reject_generics};

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Command,
    Query,
}

pub(crate) fn derive(kind: Kind, input: TokenStream) -> TokenStream {
    match try_derive(kind, input) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn try_derive(kind: Kind, input: TokenStream) -> syn::Result<TokenStream> {
    let input: syn::DeriveInput = syn::parse2(input)?;
    let mut errors = Errors::default();
    let (attr, what, trait_name, register) = match kind {
        Kind::Command => (
            "command",
            "a command type",
            quote!(Command),
            quote!(command),
        ),
        Kind::Query => ("query", "a query type", quote!(Query), quote!(query)),
    };
    reject_generics(&input.generics, what, &mut errors);
    let options = Options::from_attrs(&input.attrs, attr, &["output"], &mut errors);
    let ident = &input.ident;
    let output = match (options.ty("output", &mut errors), kind) {
        (Some(ty), _) => quote!(#ty),
        (None, Kind::Command) => quote!(()),
        (None, Kind::Query) => {
            if options.get("output").is_none() {
                errors.push_at(
                    ident.span(),
                    "a query needs its result type: add `#[query(output = T)]`",
                );
            }
            quote!(())
        }
    };
    errors.finish()?;
    let line = quote_spanned!(ident.span()=> ::core::line!());
    Ok(quote! {
        impl ::lexigram::#trait_name for #ident {
            type Output = #output;
        }
        ::lexigram::__private::inventory::submit! {
            ::lexigram::__private::MessageRegistration::#register::<#ident>(::core::file!(), #line)
        }
    })
}
