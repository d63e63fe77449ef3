//! `#[switchboard::contract]`: declare a service once, as a trait, and get a
//! typed client and a server adapter from it.
//!
//! This crate only generates code; everything it generates calls the
//! `switchboard` crate (re-exported there as `switchboard::contract`), so
//! read the documentation of that macro for usage.
#![forbid(unsafe_code)]

mod contract;

use proc_macro::TokenStream;

/// Turns a trait into a service contract. See `switchboard::contract`.
#[proc_macro_attribute]
pub fn contract(attr: TokenStream, item: TokenStream) -> TokenStream {
    match contract::expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}
