//! `#[sata::kernel(d_k = 16, d_v = 16, terms = 4)] pub struct MyAttention;`
//!
//! Expands to the struct and a hidden module with the specialized kernel rendered by
//! `sata-codegen` (the same renderer as `build.rs` and `sata emit`), implementing
//! `sata::SpecializedKernel` for the struct. Use it through `sata::Attention::with_kernel`
//! or `sata::kernel::register`. Arguments: `d_k`, `d_v`, `terms` (integers), optional `scale`
//! (a float; default `sqrt(d_k)`) and `unroll` (`"full"`, `"per-order"` or `"pieces"`, the
//! feature program's form; default: what `sata info` prints). Every bad argument is reported at its own span, and the
//! struct is kept in the output so the rest of the crate still type-checks.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use sata_codegen::rust::{RustOptions, render_module};
use sata_codegen::{ConfigError, KernelConfig, KernelPlan, Unroll};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemStruct, Lit, MetaNameValue, Token};

#[proc_macro_attribute]
pub fn kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = TokenStream2::from(item);
    match expand(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item);
            tokens.into()
        }
    }
}

/// Parsed arguments with the span of each, for errors.
#[derive(Default)]
struct Args {
    d_k: Option<(usize, Span)>,
    d_v: Option<(usize, Span)>,
    terms: Option<(usize, Span)>,
    scale: Option<(f64, Span)>,
    unroll: Option<Unroll>,
}

/// Collects errors so that every bad argument is reported in one compile.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let e = syn::Error::new(span, message);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        _ => None,
    }
}

fn parse_args(attr: TokenStream2) -> syn::Result<Args> {
    let pairs = syn::parse::Parser::parse2(
        Punctuated::<MetaNameValue, Token![,]>::parse_terminated,
        attr,
    )?;
    let mut args = Args::default();
    let mut errors = Errors::default();
    for pair in pairs {
        let span = pair.value.span();
        let Some(key) = pair.path.get_ident().map(|i| i.to_string()) else {
            errors.push(
                pair.path.span(),
                "expected one of: d_k, d_v, terms, scale, unroll",
            );
            continue;
        };
        let int = |errors: &mut Errors| match literal(&pair.value) {
            Some(Lit::Int(i)) => match i.base10_parse::<usize>() {
                Ok(v) => Some((v, span)),
                Err(e) => {
                    errors.push(span, format!("`{key}` must be a non-negative integer: {e}"));
                    None
                }
            },
            _ => {
                errors.push(span, format!("`{key}` must be an integer literal"));
                None
            }
        };
        let slot_taken = match key.as_str() {
            "d_k" => args.d_k.replace_with(int(&mut errors)),
            "d_v" => args.d_v.replace_with(int(&mut errors)),
            "terms" => args.terms.replace_with(int(&mut errors)),
            "scale" => {
                let value = match literal(&pair.value) {
                    Some(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
                    Some(Lit::Int(i)) => i.base10_parse::<f64>().ok(),
                    _ => None,
                };
                match value {
                    Some(v) => args.scale.replace((v, span)).is_some(),
                    None => {
                        errors.push(span, "`scale` must be a number literal, e.g. 4.0");
                        false
                    }
                }
            }
            "unroll" => {
                let form = match literal(&pair.value) {
                    Some(Lit::Str(s)) => match s.value().as_str() {
                        "full" => Some(Unroll::Full),
                        "per-order" => Some(Unroll::PerOrder),
                        "pieces" => Some(Unroll::Pieces),
                        _ => None,
                    },
                    _ => None,
                };
                match form {
                    Some(form) => args.unroll.replace(form).is_some(),
                    None => {
                        errors.push(
                            span,
                            "`unroll` must be \"full\", \"per-order\" or \"pieces\"",
                        );
                        false
                    }
                }
            }
            other => {
                errors.push(
                    pair.path.span(),
                    format!(
                        "unknown argument `{other}`; expected one of: d_k, d_v, terms, scale, unroll"
                    ),
                );
                false
            }
        };
        if slot_taken {
            errors.push(pair.path.span(), format!("`{key}` is given twice"));
        }
    }
    errors.finish()?;
    Ok(args)
}

/// `Option::replace` for a value that may be missing; true if a value was already there.
trait ReplaceWith<T> {
    fn replace_with(&mut self, value: Option<T>) -> bool;
}

impl<T> ReplaceWith<T> for Option<T> {
    fn replace_with(&mut self, value: Option<T>) -> bool {
        match value {
            Some(v) => self.replace(v).is_some(),
            None => false,
        }
    }
}

/// Validates through `KernelConfig`, pointing each error at the argument that caused it.
fn config(args: &Args) -> syn::Result<KernelConfig> {
    let mut errors = Errors::default();
    for (name, slot) in [
        ("d_k", &args.d_k),
        ("d_v", &args.d_v),
        ("terms", &args.terms),
    ] {
        if slot.is_none() {
            errors.push(
                Span::call_site(),
                format!("missing `{name}`: write #[sata::kernel(d_k = .., d_v = .., terms = ..)]"),
            );
        }
    }
    errors.finish()?;
    let ((d_k, k_span), (d_v, v_span), (terms, t_span)) = (
        args.d_k.expect("checked"),
        args.d_v.expect("checked"),
        args.terms.expect("checked"),
    );
    let span_of = |e: &ConfigError| match e {
        ConfigError::ZeroKeyDim | ConfigError::DimTooLarge { name: "d_k", .. } => k_span,
        ConfigError::ZeroValueDim
        | ConfigError::DimTooLarge { .. }
        | ConfigError::StateTooLarge { .. } => v_span,
        ConfigError::BadScale(_) => args.scale.map_or(Span::call_site(), |(_, s)| s),
        ConfigError::ZeroTerms
        | ConfigError::TooManyTerms { .. }
        | ConfigError::TooManyFeatures { .. } => t_span,
    };
    let mut config = KernelConfig::new(d_k, d_v, terms)
        .map_err(|e| syn::Error::new(span_of(&e), e.to_string()))?;
    if let Some((scale, _)) = args.scale {
        config = config
            .with_scale(scale)
            .map_err(|e| syn::Error::new(span_of(&e), e.to_string()))?;
    }
    Ok(config)
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let args = parse_args(attr)?;
    let strukt: ItemStruct = syn::parse2(item)?;
    if !matches!(strukt.fields, syn::Fields::Unit) || !strukt.generics.params.is_empty() {
        return Err(syn::Error::new(
            strukt.ident.span(),
            "#[sata::kernel] goes on a unit struct without generics, e.g. `pub struct MyAttention;`",
        ));
    }
    let config = config(&args)?;
    let ident = &strukt.ident;
    let module = format_ident!("__sata_kernel_{}", ident.to_string().to_lowercase());
    let options = RustOptions {
        runtime_path: "::sata::kernel".to_string(),
        module_name: Some(module.to_string()),
        kernel_type: Some(format!("super::{ident}")),
        unroll: args.unroll,
    };
    let source = render_module(&KernelPlan::new(&config), &options)
        .map_err(|e| syn::Error::new(Span::call_site(), e.to_string()))?;
    let generated: TokenStream2 = source
        .parse()
        .map_err(|e| syn::Error::new(Span::call_site(), format!("generated code: {e}")))?;
    Ok(quote! {
        #strukt
        #[doc(hidden)]
        #[allow(clippy::all, clippy::pedantic, non_snake_case)]
        #generated
    })
}
