//! The subject name of the server's certificate, for delivery log records
//! (`["C=US", "O=Example", "CN=mx.example.com"]`).
//!
//! rustls hands over certificates as DER bytes and does not parse names, and
//! this needs only a walk to one field, so a few bounded DER reads replace
//! a full X.509 parser dependency. Every read is checked: a malformed
//! certificate yields an empty list, never a panic.

/// A DER element: its tag, its content, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers (low five bits all set) do not occur on this path.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: 1..=4 length octets are plenty for a certificate.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const EXPLICIT_VERSION: u8 = 0xa0;

/// The subject's attributes as `SHORTNAME=value`, in certificate order.
pub fn subject_name(der: &[u8]) -> Vec<String> {
    subject(der).map(attributes).unwrap_or_default()
}

/// The content of the subject Name inside the certificate.
fn subject(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == EXPLICIT_VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity: skipped.
    for _ in 0..4 {
        let (_, _, after) = element(rest)?;
        rest = after;
    }
    let (tag, subject, _) = element(rest)?;
    (tag == SEQUENCE).then_some(subject)
}

fn attributes(mut name: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((tag, mut rdn, rest)) = element(name) {
        name = rest;
        if tag != SET {
            continue;
        }
        while let Some((tag, atv, rest)) = element(rdn) {
            rdn = rest;
            if tag != SEQUENCE {
                continue;
            }
            if let Some(attr) = attribute(atv) {
                out.push(attr);
            }
        }
    }
    out
}

fn attribute(atv: &[u8]) -> Option<String> {
    let (tag, oid, rest) = element(atv)?;
    if tag != OID {
        return None;
    }
    let (tag, value, _) = element(rest)?;
    let value = match tag {
        // UTF8String, PrintableString, T61String, IA5String.
        0x0c | 0x13 | 0x14 | 0x16 => String::from_utf8_lossy(value).into_owned(),
        // BMPString: UTF-16 big-endian.
        0x1e => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => return None,
    };
    Some(format!("{}={value}", short_name(oid)))
}

/// The usual abbreviation of an attribute type, else its dotted form.
fn short_name(oid: &[u8]) -> String {
    let known = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        _ => return dotted(oid),
    };
    known.to_string()
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = value.saturating_mul(128) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    let parts: Vec<String> = arcs.iter().map(u64::to_string).collect();
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_attributes_of_a_generated_certificate_are_listed_in_order() {
        let mut params = rcgen::CertificateParams::new(vec!["mx.example".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "SE");
        dn.push(rcgen::DnType::OrganizationName, "Hermod Test");
        dn.push(rcgen::DnType::CommonName, "mx.example");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_name(cert.der()),
            vec!["C=SE", "O=Hermod Test", "CN=mx.example"]
        );
    }

    #[test]
    fn malformed_certificates_give_an_empty_name_without_panicking() {
        let mut params = rcgen::CertificateParams::new(vec!["mx.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mx.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for cut in 0..der.len() {
            // Truncations either still reach the subject or give nothing.
            let _ = subject_name(&der[..cut]);
        }
        assert!(subject_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
        assert!(subject_name(b"").is_empty());
    }

    #[test]
    fn unknown_attribute_types_are_shown_as_dotted_oids() {
        assert_eq!(
            dotted(&[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37]),
            "1.3.6.1.4.1.311"
        );
    }
}
