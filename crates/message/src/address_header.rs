//! KumoMTA's AddressHeader object: `msg:from_header()`, `msg:to_header()`
//! and `msg:get_address_header(name)` parse a header as a list of mailboxes
//! and groups. The single-address fields (`user`, `domain`, `email`, `name`)
//! raise an error unless the header holds exactly one plain address;
//! `list` gives every address, groups flattened.

use mail_parser::{Address, MessageParser};
use mlua::{MetaMethod, UserData, UserDataFields, UserDataMethods};

/// One mailbox of an address header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: Option<String>,
}

impl Mailbox {
    fn split(&self) -> Option<(&str, &str)> {
        self.address.as_deref().and_then(|a| a.rsplit_once('@'))
    }
}

/// A parsed address header: its mailboxes, and whether it was a group
/// (which the single-address accessors refuse, as KumoMTA's do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressHeader {
    pub list: Vec<Mailbox>,
    grouped: bool,
}

impl AddressHeader {
    /// Parse an address header's raw value; `None` when it holds no address.
    pub fn parse(raw: &str) -> Option<AddressHeader> {
        // mail-parser decides how to parse a field by its name, so the value
        // is parsed as a To field whatever header it came from.
        let text = format!("To: {}\r\n\r\n", raw.trim());
        let parsed = MessageParser::default().parse_headers(text.as_bytes())?;
        let (list, grouped) = match parsed.to()? {
            Address::List(list) => (list.iter().map(mailbox).collect::<Vec<_>>(), false),
            Address::Group(groups) => (
                groups
                    .iter()
                    .flat_map(|g| g.addresses.iter().map(mailbox))
                    .collect(),
                true,
            ),
        };
        (!list.is_empty()).then_some(AddressHeader { list, grouped })
    }

    fn single(&self) -> mlua::Result<&Mailbox> {
        match self.list.as_slice() {
            [one] if !self.grouped => Ok(one),
            _ => Err(mlua::Error::runtime(format!(
                "the address header holds {} addresses{}, not one simple address; use its `list`",
                self.list.len(),
                if self.grouped { " in groups" } else { "" }
            ))),
        }
    }
}

fn mailbox(a: &mail_parser::Addr<'_>) -> Mailbox {
    Mailbox {
        name: a.name.as_ref().map(|n| n.to_string()),
        address: a.address.as_ref().map(|n| n.to_string()),
    }
}

impl UserData for Mailbox {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("user", |_, this| {
            Ok(this.split().map(|(u, _)| u.to_string()))
        });
        fields.add_field_method_get("domain", |_, this| {
            Ok(this.split().map(|(_, d)| d.to_string()))
        });
        fields.add_field_method_get("email", |_, this| Ok(this.address.clone()));
        fields.add_field_method_get("name", |_, this| Ok(this.name.clone()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            serde_json::to_string(this).map_err(mlua::Error::external)
        });
    }
}

impl UserData for AddressHeader {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("user", |_, this| {
            Ok(this.single()?.split().map(|(u, _)| u.to_string()))
        });
        fields.add_field_method_get("domain", |_, this| {
            Ok(this.single()?.split().map(|(_, d)| d.to_string()))
        });
        fields.add_field_method_get("email", |_, this| Ok(this.single()?.address.clone()));
        fields.add_field_method_get("name", |_, this| Ok(this.single()?.name.clone()));
        fields.add_field_method_get("list", |_, this| Ok(this.list.clone()));
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            serde_json::to_string(&this.list).map_err(mlua::Error::external)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_name_and_address_parse_into_one_mailbox() {
        let h = AddressHeader::parse("\"John Smith\" <first.last@example.com>").unwrap();
        let one = h.single().unwrap();
        assert_eq!(one.name.as_deref(), Some("John Smith"));
        assert_eq!(one.split(), Some(("first.last", "example.com")));
    }

    #[test]
    fn lists_and_groups_refuse_the_single_address_accessors() {
        let h = AddressHeader::parse("a@x.example, b@y.example").unwrap();
        assert_eq!(h.list.len(), 2);
        assert!(h.single().is_err());
        let g = AddressHeader::parse("team: a@x.example;").unwrap();
        assert_eq!(g.list.len(), 1);
        assert!(g.single().is_err(), "a group is not a simple address");
        assert!(AddressHeader::parse("").is_none());
    }
}
