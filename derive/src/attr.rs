//! Reads the attributes of the derives: `#[event]`, `#[command]`, `#[aggregate_id]`,
//! `#[aggregate]`, and the keys of `#[serde]` that events must not use.
//!
//! Reading only checks the syntax of each key and that no key is repeated; where a key
//! may appear and which keys are required is checked in `valid`.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, Ident, LitInt, LitStr, Path, Token, Type};

use crate::errors::Errors;

/// `#[event(name = "...", version = N, handlers = Trait)]`, merged over every `#[event]`
/// attribute of one item.
#[derive(Default)]
pub(crate) struct EventAttr<'a> {
    /// The first `#[event]` attribute, to point at.
    pub(crate) attr: Option<&'a Attribute>,
    /// Whether one of them could not be read (its error is recorded): keys may be
    /// missing only because reading stopped early.
    pub(crate) malformed: bool,
    pub(crate) name: Option<LitStr>,
    pub(crate) version: Option<LitInt>,
    pub(crate) handlers: Option<Ident>,
}

/// Reads the `#[event]` attributes among `attrs`.
pub(crate) fn event<'a>(attrs: &'a [Attribute], errors: &mut Errors) -> EventAttr<'a> {
    let mut out = EventAttr::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        out.attr.get_or_insert(attr);
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.name, value, &meta, "event", errors);
            } else if meta.path.is_ident("version") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.version, value, &meta, "event", errors);
            } else if meta.path.is_ident("handlers") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.handlers, value, &meta, "event", errors);
            } else {
                unknown_key(&meta, "event", "`name`, `version` or `handlers`", errors)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            out.malformed = true;
            errors.push(error);
        }
    }
    out
}

/// `#[command(name = "...")]`, merged over every `#[command]` attribute of one item.
#[derive(Default)]
pub(crate) struct CommandAttr {
    pub(crate) name: Option<LitStr>,
}

/// Reads the `#[command]` attributes among `attrs`.
pub(crate) fn command(attrs: &[Attribute], errors: &mut Errors) -> CommandAttr {
    let mut out = CommandAttr::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("command")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.name, value, &meta, "command", errors);
            } else {
                unknown_key(&meta, "command", "`name`", errors)?;
            }
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    out
}

/// The `#[aggregate_id]` markers among `attrs`; each must be the bare word.
pub(crate) fn aggregate_id<'a>(attrs: &'a [Attribute], errors: &mut Errors) -> Vec<&'a Attribute> {
    let markers: Vec<_> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("aggregate_id"))
        .collect();
    for marker in &markers {
        if let Err(error) = marker.meta.require_path_only() {
            errors.push(syn::Error::new(
                error.span(),
                "#[aggregate_id] takes no arguments",
            ));
        }
    }
    markers
}

/// `#[aggregate(...)]`, merged over every `#[aggregate]` attribute of one item.
#[derive(Default)]
pub(crate) struct AggregateAttr<'a> {
    pub(crate) attr: Option<&'a Attribute>,
    /// Whether one of them could not be read (its error is recorded): keys may be
    /// missing only because reading stopped early.
    pub(crate) malformed: bool,
    pub(crate) name: Option<LitStr>,
    pub(crate) command: Option<Type>,
    pub(crate) event: Option<Type>,
    pub(crate) rejection: Option<Type>,
    pub(crate) handle: Option<Ident>,
    pub(crate) apply: Option<Ident>,
    pub(crate) apply_with: Option<Path>,
}

/// Reads the `#[aggregate]` attributes among `attrs`.
pub(crate) fn aggregate<'a>(attrs: &'a [Attribute], errors: &mut Errors) -> AggregateAttr<'a> {
    let mut out = AggregateAttr::default();
    for attr in attrs
        .iter()
        .filter(|attr| attr.path().is_ident("aggregate"))
    {
        out.attr.get_or_insert(attr);
        let result = attr.parse_nested_meta(|meta| {
            const KEY: &str = "aggregate";
            if meta.path.is_ident("name") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.name, value, &meta, KEY, errors);
            } else if meta.path.is_ident("command") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.command, value, &meta, KEY, errors);
            } else if meta.path.is_ident("event") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.event, value, &meta, KEY, errors);
            } else if meta.path.is_ident("rejection") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.rejection, value, &meta, KEY, errors);
            } else if meta.path.is_ident("handle") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.handle, value, &meta, KEY, errors);
            } else if meta.path.is_ident("apply") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.apply, value, &meta, KEY, errors);
            } else if meta.path.is_ident("apply_with") {
                let value = meta.value()?.parse()?;
                set_once(&mut out.apply_with, value, &meta, KEY, errors);
            } else {
                unknown_key(
                    &meta,
                    KEY,
                    "`name`, `command`, `event`, `rejection`, `handle`, `apply` or `apply_with`",
                    errors,
                )?;
            }
            Ok(())
        });
        if let Err(error) = result {
            out.malformed = true;
            errors.push(error);
        }
    }
    out
}

/// The keys of every `#[serde(...)]` attribute among `attrs`, such as `rename` in
/// `#[serde(rename = "x")]`. An attribute serde itself cannot read is skipped: serde
/// reports it.
pub(crate) fn serde_keys(attrs: &[Attribute]) -> Vec<Path> {
    let mut keys = Vec::new();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _unreadable = attr.parse_nested_meta(|meta| {
            keys.push(meta.path.clone());
            skip_value(&meta)
        });
    }
    keys
}

/// The last segment of a path, for messages: `rename` for `rename`.
pub(crate) fn key_name(path: &Path) -> String {
    path.segments
        .last()
        .map(|segment| segment.ident.to_string())
        .unwrap_or_default()
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.spanned(
            &meta.path,
            format_args!("duplicate #[{attr}({})]", key_name(&meta.path)),
        );
    } else {
        *slot = Some(value);
    }
}

/// Records an unknown key and skips its value, so the keys after it are still read.
fn unknown_key(
    meta: &ParseNestedMeta<'_>,
    attr: &str,
    expected: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    errors.spanned(
        &meta.path,
        format_args!(
            "unknown #[{attr}] key `{}`; expected {expected}",
            meta.path.to_token_stream().to_string().replace(' ', "")
        ),
    );
    skip_value(meta)
}

/// Consumes `= value` or `(...)` after a key, whatever they hold.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}
