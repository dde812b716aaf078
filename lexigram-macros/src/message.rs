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
    // Without a valid `output` the impl is still written, with the error as its `Output`: that
    // type stays unknown to the compiler, so the handlers of the message and the code that
    // dispatches it raise nothing more (no impl, or `()` as the output, would contradict them).
    let mut output_error = Errors::default();
    let output = options.ty("output", &mut output_error);
    let output = match (output, output_error.finish(), kind) {
        (Some(ty), _, _) => quote!(#ty),
        (None, Err(error), _) => error.to_compile_error(),
        (None, Ok(()), Kind::Command) => quote!(()),
        (None, Ok(()), Kind::Query) => quote_spanned! {ident.span()=>
            [(); ::core::compile_error!("a query needs its result type: add `#[query(output = T)]`, `T` being what its handler returns on success")]
        },
    };
    if !input.generics.params.is_empty() {
        // Reported by `reject_generics`; an impl could not name the type.
        return errors.finish().map(|()| TokenStream::new());
    }
    let errors = errors.finish().err().map(|e| e.to_compile_error());
    let line = quote_spanned!(ident.span()=> ::core::line!());
    Ok(quote! {
        #errors
        impl ::lexigram::#trait_name for #ident {
            type Output = #output;
        }
        ::lexigram::__private::inventory::submit! {
            ::lexigram::__private::MessageRegistration::#register::<#ident>(::core::file!(), #line)
        }
    })
}
