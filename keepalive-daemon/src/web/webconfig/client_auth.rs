//! Client certificates: exporter-toolkit's client_auth_type values (those of Go's
//! `tls.ClientAuthType`) as rustls client-certificate verifiers, and
//! client_allowed_sans checked after verification.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, UnixTime},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::pem::PemObject as _;
use x509_parser::extensions::GeneralName;

use super::{TlsServerConfig, WebConfigError, tls::Pem};

/// Go's `tls.ClientAuthType` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

const VALUES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                      VerifyClientCertIfGiven or RequireAndVerifyClientCert";

impl ClientAuth {
    pub(super) fn parse(value: &str) -> Result<ClientAuth, WebConfigError> {
        Ok(match value {
            "NoClientCert" | "" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // RequireClientCert: exporter-toolkit keeps the old name working.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => {
                return Err(WebConfigError::Setting {
                    key: "client_auth_type",
                    reason: format!("unknown value {value:?}: use {VALUES}"),
                });
            }
        })
    }
}

/// The verifier for `t`'s client_auth_type, client CA and client_allowed_sans; `None`
/// when no client certificate is asked for.
pub(super) fn verifier(
    t: &TlsServerConfig,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, WebConfigError> {
    let ca = Pem::choose(
        &t.client_ca,
        &t.client_ca_file,
        ("client_ca", "client_ca_file"),
    )?;
    let mode = match (t.client_auth_type.as_deref(), &ca) {
        // This daemon's default before exporter-toolkit's keys came (kept for files
        // written for it): a CA without a type means verify, rather than an error.
        (None, Some(_)) => ClientAuth::RequireAndVerifyClientCert,
        (value, _) => ClientAuth::parse(value.unwrap_or("NoClientCert"))?,
    };
    let setting = |key, reason: String| WebConfigError::Setting { key, reason };
    if t.client_allowed_sans.is_some()
        && !matches!(
            mode,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    {
        // As exporter-toolkit: with the other types a client may send no certificate,
        // and there would be no SAN to check.
        return Err(setting(
            "client_allowed_sans",
            format!(
                "needs client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert, \
                 not {mode:?}, under which a client may connect without a certificate"
            ),
        ));
    }
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ClientCertVerifier> = match (mode, ca) {
        (ClientAuth::NoClientCert, None) => return Ok(None),
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(setting(
                "client_auth_type",
                "NoClientCert with a client CA: set client_auth_type (e.g. \
                 RequireAndVerifyClientCert) or remove the CA"
                    .into(),
            ));
        }
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => {
            Arc::new(AnyClientCert {
                mandatory: mode == ClientAuth::RequireAnyClientCert,
                algorithms,
            })
        }
        (_, None) => {
            return Err(setting(
                "client_ca_file",
                format!(
                    "missing: client_auth_type {mode:?} verifies client certificates against \
                     a CA: give client_ca_file or client_ca"
                ),
            ));
        }
        (_, Some(ca)) => {
            let optional = mode == ClientAuth::VerifyClientCertIfGiven;
            webpki_verifier(&ca, optional, provider.clone())?
        }
    };
    Ok(Some(match &t.client_allowed_sans {
        None => verifier,
        Some(allowed) => Arc::new(AllowedSans {
            inner: verifier,
            allowed: allowed.clone(),
        }),
    }))
}

/// Verifies client certificates against the CAs in `ca`; `optional`: clients without
/// a certificate are let through (VerifyClientCertIfGiven).
fn webpki_verifier(
    ca: &Pem,
    optional: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let ca_err = |e: &dyn std::fmt::Display| WebConfigError::Tls {
        what: "client CA",
        file: ca.describe("client_ca"),
        reason: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca.read("client CA")?) {
        roots
            .add(cert.map_err(|e| ca_err(&e))?)
            .map_err(|e| ca_err(&e))?;
    }
    if roots.is_empty() {
        return Err(ca_err(&"no PEM certificate in it"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let verifier = if optional {
        verifier.allow_unauthenticated()
    } else {
        verifier
    };
    verifier.build().map_err(|e| ca_err(&e))
}

/// Go's RequestClientCert and RequireAnyClientCert: a client certificate is asked for
/// (and, for the latter, required) but NOT verified against any CA. rustls has no such
/// mode, so this verifier accepts any certificate, as Go does; the handshake signature
/// is still checked, so the client does hold the key of the certificate it sent.
/// exporter-toolkit's documentation calls these types insecure: they are here so that
/// such files load, with client_allowed_sans as their only check.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: clients then send whatever certificate they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// client_allowed_sans: `inner` verifies first; then the client certificate must
/// carry one of `allowed` among its DNS, IP, e-mail and URI SANs (exact match, as
/// exporter-toolkit compares them).
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = sans(end_entity)?;
        if sans.iter().any(|san| self.allowed.contains(san)) {
            return Ok(verified);
        }
        log::info!(
            "client certificate refused: none of its SANs {sans:?} is in client_allowed_sans"
        );
        Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's DNS, e-mail, IP and URI SANs, written as Go writes them (an
/// IPv4-mapped IPv6 address as IPv4).
fn sans(der: &[u8]) -> Result<Vec<String>, Error> {
    let bad = || Error::InvalidCertificate(CertificateError::BadEncoding);
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| bad())?;
    let Some(ext) = cert.subject_alternative_name().map_err(|_| bad())? else {
        return Ok(Vec::new());
    };
    Ok(ext
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some(s.to_string())
            }
            GeneralName::IPAddress(bytes) => ip(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect())
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_are_written_as_go_writes_them() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        params.subject_alt_names.extend([
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::1".parse().unwrap()),
            SanType::IpAddress("::ffff:192.0.2.8".parse().unwrap()),
            SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
            SanType::URI("spiffe://example.org/prometheus".try_into().unwrap()),
        ]);
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(
            sans(cert.der()).unwrap(),
            [
                "a.example",
                "192.0.2.7",
                "2001:db8::1",
                "192.0.2.8",
                "ops@example.org",
                "spiffe://example.org/prometheus"
            ]
        );
    }
}
