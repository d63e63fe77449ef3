//! The expansion of `#[contract]`.
//!
//! From
//!
//! ```text
//! #[contract(service = "billing")]
//! pub trait Billing {
//!     async fn charge(&self, account: String, cents: u64) -> Result<Receipt, Reject>;
//!     #[oneway]
//!     async fn audit(&self, note: String);
//! }
//! ```
//!
//! it generates: the trait, with each method returning a `Send` future (so
//! servers can run them on any runtime thread); `BillingClient` with one
//! method per contract method (plus `_broadcast` for calls and `_all` for
//! one-way methods); and `BillingServer::builder(&bus, impl)` returning a
//! `ServiceBuilder` with every method registered under its signature.
//! Arguments travel as a MessagePack map keyed by argument name.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{
    Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Meta, Pat, PathArguments, ReturnType, Token,
    TraitItem, TraitItemFn, Type,
};

/// One method of the contract, as the generators need it.
struct Method {
    item: TraitItemFn,
    name: Ident,
    args: Vec<(Ident, Type)>,
    oneway: bool,
    /// Goes through the durable queue `<service>.<method>`.
    queued: bool,
    /// `T` of `Result<T, Reject>` for calls.
    output: Option<Type>,
    signature: String,
}

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut contract: ItemTrait = syn::parse2(item)?;
    let service = service_name(attr, &contract.ident)?;
    if !contract.generics.params.is_empty() {
        return Err(Error::new_spanned(&contract.generics, "a contract trait cannot be generic"));
    }
    let mut methods = Vec::new();
    for item in &mut contract.items {
        match item {
            TraitItem::Fn(method) => methods.push(parse_method(method)?),
            other => return Err(Error::new_spanned(other, "a contract holds only methods")),
        }
    }
    rewrite_trait(&mut contract, &methods);
    let client = client(&contract, &service, &methods);
    let server = server(&contract, &service, &methods);
    Ok(quote! { #contract #client #server })
}

/// `service = "..."`, else the trait's name in snake_case.
fn service_name(attr: TokenStream, trait_name: &Ident) -> syn::Result<String> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    let mut service = None;
    for meta in metas {
        let Meta::NameValue(nv) = &meta else {
            return Err(Error::new_spanned(meta, "unknown option; expected service = \"name\""));
        };
        if !nv.path.is_ident("service") {
            return Err(Error::new_spanned(&nv.path, "unknown option; expected service = \"name\""));
        }
        let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(name), .. }) = &nv.value else {
            return Err(Error::new_spanned(&nv.value, "service = \"name\" takes a string"));
        };
        service = Some(name.value());
    }
    Ok(service.unwrap_or_else(|| snake_case(&trait_name.to_string())))
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_method(item: &mut TraitItemFn) -> syn::Result<Method> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        return Err(Error::new_spanned(sig, "contract methods are `async fn`"));
    }
    if !sig.generics.params.is_empty() {
        return Err(Error::new_spanned(&sig.generics, "contract methods cannot be generic"));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => return Err(Error::new_spanned(sig, "contract methods take `&self` first")),
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(typed) = input else { unreachable!("only the first argument can be self") };
        let Pat::Ident(ident) = &*typed.pat else {
            return Err(Error::new_spanned(&typed.pat, "arguments must be plain names"));
        };
        args.push((ident.ident.clone(), (*typed.ty).clone()));
    }
    let queued = item.attrs.iter().any(|a| a.path().is_ident("queued"));
    let oneway = queued || item.attrs.iter().any(|a| a.path().is_ident("oneway"));
    item.attrs.retain(|a| !a.path().is_ident("oneway") && !a.path().is_ident("queued"));
    let output = match (&item.sig.output, oneway) {
        (ReturnType::Default, true) => None,
        (ReturnType::Type(_, ty), false) => Some(result_ok_type(ty)?),
        (ReturnType::Type(_, ty), true) => {
            return Err(Error::new_spanned(
                ty,
                "a #[oneway] method returns nothing: its caller gets no reply",
            ))
        }
        (ReturnType::Default, false) => {
            return Err(Error::new_spanned(
                &item.sig,
                "a call returns Result<T, switchboard::Reject>; mark it #[oneway] if it needs no reply",
            ))
        }
    };
    let name = item.sig.ident.clone();
    let mut signature = signature(&name, &args, output.as_ref());
    if queued {
        signature = signature.replace("[one-way]", "[queued]");
    }
    Ok(Method { item: item.clone(), name, args, oneway, queued, output, signature })
}

/// `T` from `Result<T, Reject>` (any path ending in `Result` with two arguments).
fn result_ok_type(ty: &Type) -> syn::Result<Type> {
    let wrong = || Error::new_spanned(ty, "a call returns Result<T, switchboard::Reject>");
    let Type::Path(path) = ty else {
        return Err(wrong());
    };
    let last = path.path.segments.last().ok_or_else(wrong)?;
    if last.ident != "Result" {
        return Err(wrong());
    }
    let PathArguments::AngleBracketed(generic) = &last.arguments else {
        return Err(wrong());
    };
    match generic.args.first() {
        Some(GenericArgument::Type(ok)) if generic.args.len() == 2 => Ok(ok.clone()),
        _ => Err(wrong()),
    }
}

fn tokens_text(tokens: impl quote::ToTokens) -> String {
    // Token streams print with spaces around punctuation; tighten the usual ones.
    tokens
        .to_token_stream()
        .to_string()
        .replace(" < ", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" :: ", "::")
        .replace("& ", "&")
}

fn signature(name: &Ident, args: &[(Ident, Type)], output: Option<&Type>) -> String {
    let args: Vec<String> = args.iter().map(|(n, t)| format!("{n}: {}", tokens_text(t))).collect();
    match output {
        Some(ty) => format!("{name}({}) -> {}", args.join(", "), tokens_text(ty)),
        None => format!("{name}({}) [one-way]", args.join(", ")),
    }
}

/// Methods return `impl Future + Send`, so servers can spawn them.
fn rewrite_trait(contract: &mut ItemTrait, methods: &[Method]) {
    for (item, method) in contract.items.iter_mut().zip(methods) {
        let TraitItem::Fn(f) = item else { continue };
        f.attrs = method.item.attrs.clone();
        f.sig.asyncness = None;
        let output = match &method.output {
            Some(ok) => quote! { ::core::result::Result<#ok, ::switchboard::Reject> },
            None => quote! { () },
        };
        f.sig.output = syn::parse_quote! {
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
    }
}

fn args_struct(contract: &Ident, method: &Method) -> (Ident, TokenStream) {
    let name = format_ident!("__{}{}Args", contract, method.name.to_string().replace('_', ""));
    let fields = method.args.iter().map(|(n, t)| quote! { #n: &'a #t });
    let tokens = quote! {
        #[derive(::switchboard::__private::serde::Serialize)]
        #[serde(crate = "::switchboard::__private::serde")]
        #[allow(non_camel_case_types)]
        struct #name<'a> { #(#fields,)* #[serde(skip)] _marker: ::core::marker::PhantomData<&'a ()> }
    };
    (name, tokens)
}

/// The client's methods for one contract method: a call (and its
/// broadcast), a queued put, or a notification (and its notify-all).
fn client_method(method: &Method, args_name: &syn::Ident) -> TokenStream {
    let name = &method.name;
    let method_str = LitStr::new(&name.to_string(), Span::call_site());
    let params = method.args.iter().map(|(n, t)| quote! { #n: #t });
    let field_inits = method.args.iter().map(|(n, _)| quote! { #n: &#n });
    let encode = quote! {
        let args = #args_name { #(#field_inits,)* _marker: ::core::marker::PhantomData };
        let payload = ::switchboard::encode(&args)?;
        let target = self.target(#method_str)?;
    };
    let signature_doc = format!("`{}`", method.signature);
    if let Some(ok) = &method.output {
        let broadcast = format_ident!("{}_broadcast", name);
        let params2 = params.clone();
        let field_inits2 = method.args.iter().map(|(n, _)| quote! { #n: &#n });
        quote! {
            #[doc = #signature_doc]
            pub async fn #name(&self, #(#params),*) -> ::core::result::Result<#ok, ::switchboard::CallError> {
                #encode
                let reply = self.bus.call_with(target, payload, self.options.clone()).await?;
                ::switchboard::__private::decode_reply(&reply, #method_str)
            }

            #[doc = "Calls it on every instance; one result per instance."]
            pub async fn #broadcast(&self, #(#params2),*)
                -> ::core::result::Result<::std::vec::Vec<(::switchboard::InstanceId, ::core::result::Result<#ok, ::switchboard::CallError>)>, ::switchboard::CallError>
            {
                let args = #args_name { #(#field_inits2,)* _marker: ::core::marker::PhantomData };
                let payload = ::switchboard::encode(&args)?;
                let target = self.target(#method_str)?;
                let outcome = self.bus.broadcast(target, payload, self.options.clone()).await?;
                Ok(outcome.replies.into_iter().map(|reply| {
                    (reply.instance, reply.result.and_then(|bytes| ::switchboard::__private::decode_reply(&bytes, #method_str)))
                }).collect())
            }
        }
    } else if method.queued {
        let queued_inits = method.args.iter().map(|(n, _)| quote! { #n: &#n });
        quote! {
            #[doc = #signature_doc]
            #[doc = ""]
            #[doc = "Stored in the durable queue `<service>.<method>` (so it waits while no instance runs); returns the message id once it is on disk."]
            pub async fn #name(&self, #(#params),*) -> ::core::result::Result<u64, ::switchboard::CallError> {
                let args = #args_name { #(#queued_inits,)* _marker: ::core::marker::PhantomData };
                let payload = ::switchboard::encode(&args)?;
                let queue = self.bus.queue(&format!("{}.{}", self.service, #method_str))?;
                queue.put(payload).await
            }
        }
    } else {
        let all = format_ident!("{}_all", name);
        let params2 = params.clone();
        let field_inits2 = method.args.iter().map(|(n, _)| quote! { #n: &#n });
        quote! {
            #[doc = #signature_doc]
            pub async fn #name(&self, #(#params),*) -> ::core::result::Result<(), ::switchboard::CallError> {
                #encode
                self.bus.notify_with(target, payload, self.options.clone(), false).await
            }

            #[doc = "Notifies every instance."]
            pub async fn #all(&self, #(#params2),*) -> ::core::result::Result<(), ::switchboard::CallError> {
                let args = #args_name { #(#field_inits2,)* _marker: ::core::marker::PhantomData };
                let payload = ::switchboard::encode(&args)?;
                let target = self.target(#method_str)?;
                self.bus.notify_with(target, payload, self.options.clone(), true).await
            }
        }
    }
}

fn client(contract: &ItemTrait, service: &str, methods: &[Method]) -> TokenStream {
    let vis = &contract.vis;
    let trait_name = &contract.ident;
    let client = format_ident!("{}Client", trait_name);
    let doc = format!("Typed client of the `{service}` service (contract [`{trait_name}`]).");
    let mut items = Vec::new();
    let mut helpers = Vec::new();
    for method in methods {
        let (args_name, args_tokens) = args_struct(trait_name, method);
        helpers.push(args_tokens);
        items.push(client_method(method, &args_name));
    }
    quote! {
        #(#helpers)*

        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            bus: ::switchboard::Bus,
            service: ::std::string::String,
            options: ::switchboard::CallOptions,
        }

        impl #client {
            /// The service name the contract declares.
            pub const SERVICE: &'static str = #service;

            /// A client of the contract's service on `bus`.
            pub fn new(bus: &::switchboard::Bus) -> Self {
                Self { bus: bus.clone(), service: Self::SERVICE.to_owned(), options: ::core::default::Default::default() }
            }

            /// The same contract served under another name.
            pub fn with_service(mut self, service: &str) -> Self {
                self.service = service.to_owned();
                self
            }

            /// Deadline of every call made through this client.
            pub fn with_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.options.timeout = timeout;
                self
            }

            /// Calls go to this instance only.
            pub fn with_instance(mut self, instance: ::switchboard::InstanceId) -> Self {
                self.options.instance = Some(instance);
                self
            }

            /// Headers sent with every call.
            pub fn with_headers(mut self, headers: ::switchboard::Headers) -> Self {
                self.options.headers = headers;
                self
            }

            fn target(&self, method: &str) -> ::core::result::Result<::switchboard::Target, ::switchboard::CallError> {
                Ok(::switchboard::Target::parse(&format!("{}.{}", self.service, method))?)
            }

            #(#items)*
        }
    }
}

fn server(contract: &ItemTrait, service: &str, methods: &[Method]) -> TokenStream {
    let vis = &contract.vis;
    let trait_name = &contract.ident;
    let server = format_ident!("{}Server", trait_name);
    let doc = format!("Serves an implementation of [`{trait_name}`] as the `{service}` service.");
    let registrations = methods.iter().map(|method| {
        let name = &method.name;
        let method_str = LitStr::new(&name.to_string(), Span::call_site());
        let signature = LitStr::new(&method.signature, Span::call_site());
        let names: Vec<&Ident> = method.args.iter().map(|(n, _)| n).collect();
        let takes = method.args.iter().map(|(n, t)| {
            let key = LitStr::new(&n.to_string(), Span::call_site());
            quote! { let #n: #t = args.take(#key)?; }
        });
        let body = if method.oneway {
            quote! {
                implementation.#name(#(#names),*).await;
                Ok(::switchboard::Bytes::new())
            }
        } else {
            quote! {
                let reply = implementation.#name(#(#names),*).await?;
                ::switchboard::__private::encode_reply(&reply, #method_str)
            }
        };
        let handler = quote! {
            move |request: ::switchboard::Request| {
                let implementation = implementation.clone();
                async move {
                    let mut args = ::switchboard::__private::Args::parse(&request.payload, #method_str)?;
                    #(#takes)*
                    #body
                }
            }
        };
        let register = if method.queued {
            quote! { builder.queued_method(#method_str, #handler) }
        } else {
            quote! { builder.method_with_signature(#method_str, #signature, #handler) }
        };
        quote! {
            let builder = {
                let implementation = implementation.clone();
                #register
            };
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #server;

        impl #server {
            /// The service name the contract declares.
            pub const SERVICE: &'static str = #service;

            /// A service builder with every contract method registered; set
            /// limits on it if needed, then `.start().await`.
            pub fn builder<T>(bus: &::switchboard::Bus, implementation: T) -> ::switchboard::ServiceBuilder
            where
                T: #trait_name + ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                Self::builder_as(bus, Self::SERVICE, implementation)
            }

            /// The same, under another service name.
            pub fn builder_as<T>(bus: &::switchboard::Bus, service: &str, implementation: T) -> ::switchboard::ServiceBuilder
            where
                T: #trait_name + ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                let implementation = ::std::sync::Arc::new(implementation);
                let builder = ::switchboard::ServiceBuilder::for_contract(bus, service);
                #(#registrations)*
                builder
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Billing"), "billing");
        assert_eq!(snake_case("ResourceMonitor"), "resource_monitor");
    }

    #[test]
    fn signatures_read_like_rust() {
        let args: Vec<(Ident, Type)> = vec![
            (format_ident!("account"), syn::parse_quote!(String)),
            (format_ident!("items"), syn::parse_quote!(Vec<u64>)),
        ];
        let ok: Type = syn::parse_quote!(Option<Receipt>);
        assert_eq!(
            signature(&format_ident!("charge"), &args, Some(&ok)),
            "charge(account: String, items: Vec<u64>) -> Option<Receipt>"
        );
        assert_eq!(signature(&format_ident!("audit"), &args[..1], None), "audit(account: String) [one-way]");
    }

    #[test]
    fn misuse_is_a_clear_compile_error() {
        let cases = [
            (quote! { trait T { fn sync(&self) -> Result<u8, Reject>; } }, "async fn"),
            (quote! { trait T { async fn by_value(self) -> Result<u8, Reject>; } }, "&self"),
            (quote! { trait T { async fn no_result(&self) -> u8; } }, "Result<T"),
            (quote! { trait T { async fn no_reply(&self); } }, "#[oneway]"),
            (
                quote! { trait T { #[oneway] async fn replies(&self) -> Result<u8, Reject>; } },
                "returns nothing",
            ),
            (quote! { trait T<X> { async fn f(&self) -> Result<u8, Reject>; } }, "generic"),
        ];
        for (input, expected) in cases {
            let err = expand(TokenStream::new(), input).expect_err("must fail").to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }
}
