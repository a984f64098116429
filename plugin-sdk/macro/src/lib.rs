//! Attribute macros of `switchyard-sdk`. Use them through that crate:
//! `#[switchyard_sdk::route]` and `#[switchyard_sdk::plugin]`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, ItemImpl, parse_macro_input};

/// Makes `fn NAME(msg: &Message) -> RouteResult` the plugin of this crate.
#[proc_macro_attribute]
pub fn route(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(
            proc_macro2::TokenStream::from(args)
                .into_iter()
                .next()
                .map_or_else(proc_macro2::Span::call_site, |t| t.span()),
            "#[route] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    let name = &func.sig.ident;
    quote! {
        // Natively (in unit tests) the export glue is compiled out and the
        // function is only called by the tests themselves.
        #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
        #func

        const _: () = {
            struct __SwitchyardRoute;
            impl ::switchyard_sdk::Plugin for __SwitchyardRoute {
                fn init(config: &::switchyard_sdk::Config) -> ::std::result::Result<Self, ::std::string::String> {
                    config.deny_unknown(&[])?;
                    ::std::result::Result::Ok(Self)
                }
                fn route(&self, msg: &::switchyard_sdk::Message<'_>) -> ::switchyard_sdk::RouteResult {
                    #name(msg)
                }
            }
            ::switchyard_sdk::__export!(__SwitchyardRoute);
        };
    }
    .into()
}

/// Makes the type of an `impl Plugin for T` block the plugin of this crate.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[plugin] takes no arguments",
        )
        .to_compile_error()
        .into();
    }
    let block = parse_macro_input!(item as ItemImpl);
    if block.trait_.is_none() {
        return syn::Error::new_spanned(
            &block.self_ty,
            "#[plugin] goes on an `impl switchyard_sdk::Plugin for T` block",
        )
        .to_compile_error()
        .into();
    }
    let ty = &block.self_ty;
    quote! {
        #block
        ::switchyard_sdk::__export!(#ty);
    }
    .into()
}
