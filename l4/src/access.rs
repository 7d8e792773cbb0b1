//! Allow and deny lists of address ranges (CIDR), checked on the real client
//! (after a PROXY header) before any backend is touched. A client in `deny` is
//! refused; with a non-empty `allow`, so is a client outside it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One address range: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`;
/// a bare address is the range of itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address as 128 bits (IPv4 as its IPv4-mapped IPv6 form), masked.
    bits: u128,
    /// Prefix length in the 128-bit form.
    len: u8,
    v4: bool,
}

impl Cidr {
    fn mask(len: u8) -> u128 {
        match len {
            0 => 0,
            n => u128::MAX << (128 - u32::from(n)),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        (wide(ip) & Cidr::mask(self.len)) == self.bits
    }
}

/// IPv4 as ::ffff:a.b.c.d, so that an IPv4 client on a dual-stack socket
/// (seen as IPv4-mapped IPv6) matches an IPv4 range and the reverse.
fn wide(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!(
                "`{text}` is not an address range: write 10.0.0.0/8, 2001:db8::/32 or one address"
            )
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        let (len, v4) = match ip {
            IpAddr::V4(_) => (len + 96, true),
            IpAddr::V6(_) => (len, false),
        };
        let bits = wide(ip) & Cidr::mask(len);
        if bits != wide(ip) {
            let shown = Cidr { bits, len, v4 };
            return Err(format!(
                "`{text}` has host bits set past its prefix: write {shown}"
            ));
        }
        Ok(Cidr { bits, len, v4 })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.bits);
        match (self.v4, v6.to_ipv4_mapped()) {
            (true, Some(v4)) => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{v6}/{}", self.len),
        }
    }
}

/// A listener's allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl Access {
    /// Whether there is anything to check (the common case: no lists at all).
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `client` may connect: not in `deny`, and in `allow` when it lists any.
    pub fn permits(&self, client: IpAddr) -> bool {
        if self.is_open() {
            return true;
        }
        !self.deny.iter().any(|c| c.contains(client))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(client)))
    }
}

#[cfg(test)]
mod tests {
    use super::{Access, Cidr};

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|c| c.parse().unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    #[test]
    fn ranges_match_ipv4_ipv6_and_mapped_addresses() {
        let access = Access {
            allow: cidrs(&["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]),
            deny: cidrs(&["10.1.0.0/16"]),
        };
        for (ip, ok) in [
            ("10.2.3.4", true),
            ("10.1.2.3", false),
            ("11.0.0.1", false),
            ("::ffff:10.2.3.4", true),
            ("::ffff:10.1.0.1", false),
            ("2001:db8:1::1", true),
            ("2001:db9::1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
        ] {
            let ip = ip.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(access.permits(ip), ok, "{ip}");
        }
        assert!(Access::default().permits("203.0.113.1".parse().unwrap_or_else(|e| panic!("{e}"))));
    }

    #[test]
    fn bad_ranges_say_what_to_write() {
        let e = "10.0.0.1/8".parse::<Cidr>().err().unwrap_or_default();
        assert!(e.contains("write 10.0.0.0/8"), "{e}");
        let e = "10.0.0.0/33".parse::<Cidr>().err().unwrap_or_default();
        assert!(e.contains("0 to 32"), "{e}");
        assert!("example.com/8".parse::<Cidr>().is_err());
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().map(|c| c.to_string()),
            Ok("2001:db8::/32".to_owned())
        );
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().map(|c| c.to_string()),
            Ok("0.0.0.0/0".to_owned())
        );
    }
}
