//! `#[derive(FromContainer)]`: a struct built field by field from the container.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr::{Errors, reject_generics};

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    match try_derive(input) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn try_derive(input: TokenStream) -> syn::Result<TokenStream> {
    let input: syn::DeriveInput = syn::parse2(input)?;
    let mut errors = Errors::default();
    reject_generics(
        &input.generics,
        "a type built from the container",
        &mut errors,
    );
    let ident = &input.ident;
    let syn::Data::Struct(data) = &input.data else {
        errors.push_at(ident.span(), "`#[derive(FromContainer)]` works on structs: each field is resolved from the container");
        return errors.finish().map(|()| TokenStream::new());
    };
    errors.finish()?;
    let inject = |ty: &syn::Type| {
        quote_spanned! {ty.span()=>
            ::lexigram::__private::field::<#ty>(container)?
        }
    };
    let body = match &data.fields {
        syn::Fields::Named(fields) => {
            let fields = fields.named.iter().map(|f| {
                let name = &f.ident;
                let value = inject(&f.ty);
                quote!(#name: #value)
            });
            quote!(Self { #(#fields),* })
        }
        syn::Fields::Unnamed(fields) => {
            let fields = fields.unnamed.iter().map(|f| inject(&f.ty));
            quote!(Self(#(#fields),*))
        }
        syn::Fields::Unit => quote!(Self),
    };
    Ok(quote! {
        impl ::lexigram::module::FromContainer for #ident {
            fn from_container(
                container: &::lexigram::module::Container,
            ) -> ::core::result::Result<Self, ::lexigram::module::Missing> {
                ::core::result::Result::Ok(#body)
            }
        }
    })
}
