//! Generates the impls from the validated plans. Every path is absolute, through
//! `::annals_core` and its hidden `__private` re-exports, so the user's imports and
//! shadowed prelude names do not matter.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{DeriveInput, Generics, LitStr, parse_quote};

use crate::ast::Input;
use crate::valid::{self, Apply, EventInfo, EventPlan, Handlers};

pub(crate) fn domain_event(node: &DeriveInput) -> syn::Result<TokenStream> {
    let input = Input::from_syn(node, "DomainEvent")?;
    let plan = valid::event(&input)?;
    let ident = input.ident;
    let generics = event_generics(&input);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    let body = match &plan {
        EventPlan::Struct(info) => struct_event_body(info),
        EventPlan::Enum { variants, .. } => enum_event_body(&input, variants),
    };
    let handlers = match &plan {
        EventPlan::Enum {
            variants,
            handlers: Some(handlers),
        } => handlers_trait(&input, variants, handlers),
        _ => TokenStream::new(),
    };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::annals_core::DomainEvent for #ident #ty_generics #where_clause {
            #body
        }

        #handlers
    })
}

/// The input's generics, plus the serde bounds `to_document` and `from_document` need
/// when the type has parameters.
fn event_generics(input: &Input<'_>) -> Generics {
    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        let ident = input.ident;
        let (_, ty_generics, _) = input.generics.split_for_impl();
        generics.make_where_clause().predicates.push(parse_quote! {
            #ident #ty_generics: ::annals_core::__private::serde::Serialize
                + ::annals_core::__private::serde::de::DeserializeOwned
        });
    }
    generics
}

fn struct_event_body(info: &EventInfo) -> TokenStream {
    let EventInfo { name, version } = info;
    quote! {
        const EVENT_TYPES: &'static [::annals_core::EventTypeInfo] = &[
            ::annals_core::EventTypeInfo { name: #name, version: #version },
        ];

        fn event_type(&self) -> &'static str {
            #name
        }

        fn schema_version(&self) -> u32 {
            #version
        }

        fn to_document(
            &self,
        ) -> ::annals_core::__private::Result<
            ::annals_core::__private::serde_json::Value,
            ::annals_core::__private::serde_json::Error,
        > {
            ::annals_core::__private::serde_json::to_value(self)
        }

        fn from_document(
            event_type: &str,
            document: ::annals_core::__private::serde_json::Value,
        ) -> ::annals_core::__private::Option<
            ::annals_core::__private::Result<Self, ::annals_core::__private::serde_json::Error>,
        > {
            if event_type == #name {
                ::annals_core::__private::Option::Some(
                    ::annals_core::__private::serde_json::from_value(document),
                )
            } else {
                ::annals_core::__private::Option::None
            }
        }
    }
}

fn enum_event_body(
    input: &Input<'_>,
    variants: &[(&crate::ast::Variant<'_>, EventInfo)],
) -> TokenStream {
    let infos = variants.iter().map(|(_, EventInfo { name, version })| {
        quote!(::annals_core::EventTypeInfo { name: #name, version: #version })
    });
    let idents: Vec<_> = variants.iter().map(|(variant, _)| variant.ident).collect();
    let names: Vec<_> = variants.iter().map(|(_, info)| &info.name).collect();
    let versions = variants.iter().map(|(_, info)| info.version);
    // The key serde's externally tagged representation uses for each variant.
    let tags = idents
        .iter()
        .map(|ident| LitStr::new(&ident.unraw().to_string(), ident.span()));
    let not_tagged = LitStr::new(
        &format!(
            "`{}` did not serialize as an externally tagged enum, which #[derive(DomainEvent)] \
             needs to separate the payload from the variant name",
            input.ident
        ),
        proc_macro2::Span::call_site(),
    );
    quote! {
        const EVENT_TYPES: &'static [::annals_core::EventTypeInfo] = &[#(#infos),*];

        fn event_type(&self) -> &'static str {
            match self {
                #(Self::#idents { .. } => #names,)*
            }
        }

        fn schema_version(&self) -> u32 {
            match self {
                #(Self::#idents { .. } => #versions,)*
            }
        }

        fn to_document(
            &self,
        ) -> ::annals_core::__private::Result<
            ::annals_core::__private::serde_json::Value,
            ::annals_core::__private::serde_json::Error,
        > {
            // Serde writes `{"Variant": payload}`, or `"Variant"` for a unit variant.
            match ::annals_core::__private::serde_json::to_value(self)? {
                ::annals_core::__private::serde_json::Value::Object(tagged) => {
                    let mut entries = tagged.into_iter();
                    match (entries.next(), entries.next()) {
                        (::annals_core::__private::Option::Some((_, payload)), ::annals_core::__private::Option::None) => {
                            ::annals_core::__private::Result::Ok(payload)
                        }
                        _ => ::annals_core::__private::Result::Err(
                            <::annals_core::__private::serde_json::Error as ::annals_core::__private::serde::ser::Error>::custom(#not_tagged),
                        ),
                    }
                }
                ::annals_core::__private::serde_json::Value::String(_) => {
                    ::annals_core::__private::Result::Ok(::annals_core::__private::serde_json::Value::Null)
                }
                _ => ::annals_core::__private::Result::Err(
                    <::annals_core::__private::serde_json::Error as ::annals_core::__private::serde::ser::Error>::custom(#not_tagged),
                ),
            }
        }

        fn from_document(
            event_type: &str,
            document: ::annals_core::__private::serde_json::Value,
        ) -> ::annals_core::__private::Option<
            ::annals_core::__private::Result<Self, ::annals_core::__private::serde_json::Error>,
        > {
            let tag = match event_type {
                #(#names => #tags,)*
                _ => return ::annals_core::__private::Option::None,
            };
            let mut tagged = ::annals_core::__private::serde_json::Map::new();
            tagged.insert(::annals_core::__private::ToString::to_string(tag), document);
            ::annals_core::__private::Option::Some(::annals_core::__private::serde_json::from_value(
                ::annals_core::__private::serde_json::Value::Object(tagged),
            ))
        }
    }
}

fn handlers_trait(
    input: &Input<'_>,
    variants: &[(&crate::ast::Variant<'_>, EventInfo)],
    handlers: &Handlers,
) -> TokenStream {
    let vis = input.vis;
    let enum_ident = input.ident;
    let trait_ident = &handlers.ident;
    let trait_doc = format!(
        "Applies each event of [`{enum_ident}`] through one method per event type.\n\n\
         Generated by `#[derive(DomainEvent)]` from `#[event(handlers = {trait_ident})]`. \
         Every method is required, so an event variant added without its method is a \
         compile error. [`apply_event`](Self::apply_event) calls the method of an event's \
         variant; `#[aggregate(apply_with = {trait_ident})]` makes it the aggregate's \
         `apply`."
    );
    let mut methods = Vec::new();
    let mut arms = Vec::new();
    for ((variant, info), method) in variants.iter().zip(&handlers.methods) {
        let doc = format!(
            "Applies a `{}` event (schema version {}), [`{enum_ident}::{}`].",
            info.name.value(),
            info.version,
            variant.ident,
        );
        let bindings: Vec<_> = variant
            .fields
            .fields
            .iter()
            .map(|field| &field.binding)
            .collect();
        // `{ owner, 1: _1 }`: shorthand for named fields, which rustc would lint otherwise.
        let patterns = variant
            .fields
            .fields
            .iter()
            .map(|field| match &field.member {
                syn::Member::Named(_) => field.binding.to_token_stream(),
                syn::Member::Unnamed(index) => {
                    let binding = &field.binding;
                    quote!(#index: #binding)
                }
            });
        let types = variant.fields.fields.iter().map(|field| field.ty);
        // Spanned by the variant, so "missing `deposited`" points at `Deposited`.
        methods.push(quote_spanned! {variant.ident.span()=>
            #[doc = #doc]
            fn #method(&mut self, #(#bindings: &#types),*);
        });
        let variant_ident = variant.ident;
        arms.push(quote! {
            #enum_ident::#variant_ident { #(#patterns),* } => Self::#method(self, #(#bindings),*),
        });
    }
    quote! {
        #[doc = #trait_doc]
        #[allow(
            clippy::too_many_arguments,
            clippy::ptr_arg,
            reason = "one parameter per field of the event, typed as the field"
        )]
        #vis trait #trait_ident {
            #(#methods)*

            /// Applies `event` by calling the method of its variant.
            fn apply_event(&mut self, event: &#enum_ident) {
                match event {
                    #(#arms)*
                }
            }
        }
    }
}

pub(crate) fn command(node: &DeriveInput) -> syn::Result<TokenStream> {
    let input = Input::from_syn(node, "Command")?;
    let plan = valid::command(&input)?;
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    let (aggregate_id, command_type) = match plan.targets.as_slice() {
        [target] if target.variant.is_none() => {
            let member = &target.id.member;
            let name = &target.name;
            (
                quote! {
                    ::annals_core::AggregateId::new(
                        ::annals_core::__private::ToString::to_string(&self.#member),
                    )
                },
                quote!(#name),
            )
        }
        targets => {
            let idents: Vec<_> = targets.iter().map(|target| target.variant).collect();
            let members = targets.iter().map(|target| &target.id.member);
            let names = targets.iter().map(|target| &target.name);
            (
                quote! {
                    match self {
                        #(Self::#idents { #members: id, .. } => ::annals_core::AggregateId::new(
                            ::annals_core::__private::ToString::to_string(id),
                        ),)*
                    }
                },
                quote! {
                    match self {
                        #(Self::#idents { .. } => #names,)*
                    }
                },
            )
        }
    };
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::annals_core::Command for #ident #ty_generics #where_clause {
            fn aggregate_id(&self) -> ::annals_core::AggregateId {
                #aggregate_id
            }

            fn command_type(&self) -> &'static str {
                #command_type
            }
        }
    })
}

pub(crate) fn aggregate(node: &DeriveInput) -> syn::Result<TokenStream> {
    let input = Input::from_syn(node, "Aggregate")?;
    let plan = valid::aggregate(&input)?;
    let ident = input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let valid::AggregatePlan {
        name,
        command,
        event,
        rejection,
        handle,
        apply,
    } = &plan;

    // Without an inherent method of that name, `<Self>::handle` would resolve to
    // `Aggregate::handle` itself and recurse forever (rustc's `unconditional_recursion`
    // lint stays silent in macro output). For the names of the trait's own methods, a
    // trait implemented for every type with a method of the same name makes that case
    // ambiguous, hence a compile error naming the trait, while an inherent method still
    // takes precedence over both traits. Other names need no guard: rustc reports "no
    // function or associated item named `decide`".
    let apply_call = match apply {
        Apply::Method(method) => quote_spanned! {method.span()=>
            <Self>::#method(self, event)
        },
        Apply::With(handlers) => quote! {
            <Self as #handlers>::apply_event(self, event)
        },
    };
    let mut guarded: Vec<&syn::Ident> = vec![handle];
    if let Apply::Method(method) = apply {
        guarded.push(method);
    }
    guarded.retain(|method| *method == "handle" || *method == "apply");
    guarded.dedup();
    let guards = guarded.iter().map(|method| {
        let guard =
            quote::format_ident!("{}_needs_an_inherent_fn_{}", ident.unraw(), method.unraw());
        quote! {
            #[allow(
                dead_code,
                non_camel_case_types,
                reason = "named to explain the error it causes when the inherent method is missing"
            )]
            trait #guard {
                fn #method(&self) {}
            }

            impl<T: ?::core::marker::Sized> #guard for T {}
        }
    });
    let handle_call = quote_spanned! {handle.span()=>
        <Self>::#handle(self, command, ctx)
    };
    Ok(quote! {
        const _: () = {
            #(#guards)*

            #[automatically_derived]
            impl #impl_generics ::annals_core::Aggregate for #ident #ty_generics #where_clause {
                const TYPE: &'static str = #name;
                type Command = #command;
                type Event = #event;
                type Rejection = #rejection;

                #[inline]
                fn handle(
                    &self,
                    command: &Self::Command,
                    ctx: &::annals_core::CommandContext,
                ) -> ::annals_core::__private::Result<
                    ::annals_core::__private::Vec<Self::Event>,
                    Self::Rejection,
                > {
                    #handle_call
                }

                #[inline]
                fn apply(&mut self, event: &Self::Event) {
                    #apply_call
                }
            }
        };
    })
}
