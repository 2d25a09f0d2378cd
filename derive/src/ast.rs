//! The shape of a derive input: a struct or an enum, its variants and fields, with the
//! names the generated code binds them to.

use quote::format_ident;
use syn::{Attribute, Data, DeriveInput, Generics, Ident, Member, Type, Visibility};

/// A struct or an enum that a derive was applied to. Unions are rejected while parsing.
pub(crate) struct Input<'a> {
    pub(crate) attrs: &'a [Attribute],
    pub(crate) vis: &'a Visibility,
    pub(crate) ident: &'a Ident,
    pub(crate) generics: &'a Generics,
    pub(crate) body: Body<'a>,
}

/// What the type holds.
pub(crate) enum Body<'a> {
    Struct(Fields<'a>),
    Enum(Vec<Variant<'a>>),
}

/// One variant of an enum.
pub(crate) struct Variant<'a> {
    pub(crate) attrs: &'a [Attribute],
    pub(crate) ident: &'a Ident,
    pub(crate) fields: Fields<'a>,
}

/// The fields of a struct or variant.
pub(crate) struct Fields<'a> {
    pub(crate) style: Style,
    pub(crate) fields: Vec<Field<'a>>,
}

/// Whether fields are named, positional, or absent.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Named,
    Tuple,
    Unit,
}

/// One field.
pub(crate) struct Field<'a> {
    pub(crate) attrs: &'a [Attribute],
    /// How the field is accessed: `self.owner` or `self.0`.
    pub(crate) member: Member,
    /// The local name a pattern binds the field to: its own name, or `_0`, `_1`… for
    /// positional fields.
    pub(crate) binding: Ident,
    pub(crate) ty: &'a Type,
}

impl<'a> Input<'a> {
    /// Parses a derive input; `derive` names the derive in the error for a union.
    pub(crate) fn from_syn(node: &'a DeriveInput, derive: &str) -> syn::Result<Self> {
        let body = match &node.data {
            Data::Struct(data) => Body::Struct(Fields::from_syn(&data.fields)),
            Data::Enum(data) => Body::Enum(data.variants.iter().map(Variant::from_syn).collect()),
            Data::Union(data) => {
                return Err(syn::Error::new_spanned(
                    data.union_token,
                    format!("#[derive({derive})] does not support unions"),
                ));
            }
        };
        Ok(Input {
            attrs: &node.attrs,
            vis: &node.vis,
            ident: &node.ident,
            generics: &node.generics,
            body,
        })
    }

    /// Every field of the type, of every variant.
    pub(crate) fn all_fields(&self) -> Box<dyn Iterator<Item = &Field<'a>> + '_> {
        match &self.body {
            Body::Struct(fields) => Box::new(fields.fields.iter()),
            Body::Enum(variants) => Box::new(variants.iter().flat_map(|v| v.fields.fields.iter())),
        }
    }
}

impl<'a> Variant<'a> {
    fn from_syn(node: &'a syn::Variant) -> Self {
        Variant {
            attrs: &node.attrs,
            ident: &node.ident,
            fields: Fields::from_syn(&node.fields),
        }
    }
}

impl<'a> Fields<'a> {
    fn from_syn(node: &'a syn::Fields) -> Self {
        let style = match node {
            syn::Fields::Named(_) => Style::Named,
            syn::Fields::Unnamed(_) => Style::Tuple,
            syn::Fields::Unit => Style::Unit,
        };
        let fields = node
            .iter()
            .enumerate()
            .map(|(index, field)| Field::from_syn(index, field))
            .collect();
        Fields { style, fields }
    }
}

impl<'a> Field<'a> {
    fn from_syn(index: usize, node: &'a syn::Field) -> Self {
        let (member, binding) = match &node.ident {
            Some(ident) => (Member::Named(ident.clone()), ident.clone()),
            None => (Member::from(index), format_ident!("_{}", index)),
        };
        Field {
            attrs: &node.attrs,
            member,
            binding,
            ty: &node.ty,
        }
    }
}
