//! Per-listener policy keys: `allow` and `deny` address ranges.

use fulcrum_l4::access::{Access, Cidr};
use toml::Spanned;

use super::file::FileListener;
use super::validate::{invalid, Result};

/// Most ranges in one list: a longer list belongs in a firewall, not a linear scan.
const MAX_RANGES: usize = 4096;

/// A listener's `allow` and `deny` lists.
pub(super) fn access(l: &FileListener) -> Result<Access> {
    Ok(Access {
        allow: ranges(l.allow.as_ref(), "allow")?,
        deny: ranges(l.deny.as_ref(), "deny")?,
    })
}

fn ranges(list: Option<&Spanned<Vec<Spanned<String>>>>, key: &str) -> Result<Vec<Cidr>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.get_ref().len() > MAX_RANGES {
        return Err(invalid(
            list,
            format!("`{key}` lists more than {MAX_RANGES} ranges; merge them into wider ones"),
        ));
    }
    list.get_ref()
        .iter()
        .map(|c| {
            c.get_ref()
                .trim()
                .parse::<Cidr>()
                .map_err(|e| invalid(c, format!("`{key}`: {e}")))
        })
        .collect()
}
