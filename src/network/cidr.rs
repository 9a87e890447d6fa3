//! IPv4 CIDR blocks, parsed strictly: the network address must have its host
//! bits clear, as EC2 requires.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: u32,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Cidr, String> {
        if prefix > 32 {
            return Err(format!("prefix length /{prefix} is larger than /32"));
        }
        let addr = u32::from(addr);
        let c = Cidr { addr, prefix };
        if addr & !c.mask() != 0 {
            let network = Cidr {
                addr: addr & c.mask(),
                prefix,
            };
            return Err(format!("host bits are set; the network is {network}"));
        }
        Ok(c)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    fn last(&self) -> u32 {
        self.addr | !self.mask()
    }

    /// Whether every address of `other` is in `self`.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && (other.addr & self.mask()) == self.addr
    }

    pub fn contains_addr(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & self.mask()) == self.addr
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.addr <= other.last() && other.addr <= self.last()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Parses `10.0.0.0/16`; the message says what is wrong, without the input.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| "expected address/prefix such as 10.0.0.0/16".to_string())?;
        let octets: Vec<&str> = ip.split('.').collect();
        let well_formed = octets.len() == 4
            && octets
                .iter()
                .all(|o| !o.is_empty() && o.len() <= 3 && o.bytes().all(|b| b.is_ascii_digit()));
        let ip: Ipv4Addr = if well_formed { ip.parse().ok() } else { None }
            .ok_or_else(|| format!("{ip:?} is not an IPv4 address"))?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{prefix:?} is not a prefix length"));
        }
        Cidr::new(ip, prefix.parse().unwrap())
    }
}

/// Parses a CIDR for field `field`, producing a message that quotes the input.
pub fn parse_field(s: &str) -> Result<Cidr, String> {
    s.parse().map_err(|e| format!("invalid CIDR {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_formats() {
        assert_eq!(c("10.0.0.0/16").to_string(), "10.0.0.0/16");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(c("192.168.1.7/32").prefix(), 32);
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(
            "10.0.0.1/16".parse::<Cidr>().unwrap_err(),
            "host bits are set; the network is 10.0.0.0/16"
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err(),
            "prefix length /33 is larger than /32"
        );
        assert_eq!(
            "10.0.0/16".parse::<Cidr>().unwrap_err(),
            "\"10.0.0\" is not an IPv4 address"
        );
        assert_eq!(
            "10.0.0.256/24".parse::<Cidr>().unwrap_err(),
            "\"10.0.0.256\" is not an IPv4 address"
        );
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/-1".parse::<Cidr>().is_err());
        assert_eq!(
            parse_field("banana").unwrap_err(),
            "invalid CIDR \"banana\": expected address/prefix such as 10.0.0.0/16"
        );
    }

    #[test]
    fn containment_and_overlap() {
        assert!(c("10.0.0.0/16").contains(&c("10.0.1.0/24")));
        assert!(!c("10.0.1.0/24").contains(&c("10.0.0.0/16")));
        assert!(!c("10.0.0.0/16").contains(&c("10.1.0.0/24")));
        assert!(c("0.0.0.0/0").contains(&c("10.1.0.0/24")));
        assert!(c("10.0.0.0/16").overlaps(&c("10.0.128.0/17")));
        assert!(c("10.0.128.0/17").overlaps(&c("10.0.0.0/16")));
        assert!(!c("10.0.0.0/16").overlaps(&c("10.1.0.0/16")));
        assert!(c("10.0.0.0/8").contains_addr("10.200.3.4".parse().unwrap()));
    }
}
