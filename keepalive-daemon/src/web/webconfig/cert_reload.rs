//! Certificate rotation without restart: a rustls `ResolvesServerCert` that serves the
//! certificate and key of cert_file/key_file and re-reads them when either file
//! changes on disk (device, inode, size or modification time; a renamed-in file or a
//! Kubernetes secret's symlink swap counts). Files are looked at on a handshake at
//! most once per `CHECK_EVERY`, so a burst of connections costs one `stat` pair.
//!
//! A new pair that does not load (half written, or the certificate replaced before
//! its key) keeps the old one in service and logs a warning; it is tried again as
//! soon as either file changes once more. Hand-written: rustls has no file-watching
//! resolver, and a stat on the handshake needs no watcher thread or inotify limits.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

use super::{WebConfigError, tls::Pem};

/// How often at most the files are looked at.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// Both files' stamps; `None` for inline PEM, which never changes.
type Stamps = (Option<FileStamp>, Option<FileStamp>);

#[derive(Debug)]
struct State {
    current: Arc<CertifiedKey>,
    /// The stamps of the files last loaded or tried, so a bad pair is warned about once.
    seen: Stamps,
    checked: Instant,
}

#[derive(Debug)]
pub(super) struct ReloadingCert {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
}

impl ReloadingCert {
    /// Loads the pair now: an error here (unreadable file, no certificate, a key that
    /// does not match) stops the daemon at startup, naming the file.
    pub(super) fn new(
        cert: Pem,
        key: Pem,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, WebConfigError> {
        let seen = stamps(&cert, &key).unwrap_or((None, None));
        let current = Arc::new(load(&cert, &key, &provider)?);
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// Re-reads the pair if a file changed since it was last seen.
    fn refresh(&self, state: &mut State) {
        let now = match stamps(&self.cert, &self.key) {
            Ok(now) => now,
            Err(e) => {
                // Between a delete and a rename-in, say: keep serving, look again later.
                log::warn!("{e}; still serving the certificate loaded before");
                return;
            }
        };
        if now == state.seen {
            return;
        }
        state.seen = now;
        match load(&self.cert, &self.key, &self.provider) {
            Ok(new) => {
                log::info!(
                    "TLS certificate {} changed on disk: serving the new one",
                    self.cert.describe("cert")
                );
                state.current = Arc::new(new);
            }
            Err(e) => log::warn!(
                "TLS certificate or key changed on disk but cannot be used ({e}); still \
                 serving the certificate loaded before: fix the files, they are re-read \
                 on their next change"
            ),
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic elsewhere while holding the lock leaves a consistent state (the
        // fields are replaced whole), so a poisoned lock is used as is.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            // Two stats, and reading two small files when they changed: cheap enough
            // for the handshake path, and the lock keeps it to one caller at a time.
            self.refresh(&mut state);
        }
        Some(state.current.clone())
    }
}

fn stamps(cert: &Pem, key: &Pem) -> Result<Stamps, WebConfigError> {
    let stamp = |pem: &Pem, what| match pem {
        Pem::Inline(_) => Ok(None),
        Pem::File(path) => FileStamp::of(path)
            .map(Some)
            .map_err(|e| WebConfigError::Tls {
                what,
                file: path.display().to_string(),
                reason: e.to_string(),
            }),
    };
    Ok((stamp(cert, "certificate")?, stamp(key, "key")?))
}

/// The certificate chain and key, checked to belong together.
fn load(cert: &Pem, key: &Pem, provider: &CryptoProvider) -> Result<CertifiedKey, WebConfigError> {
    let tls_err = |what, pem: &Pem, inline: &str, reason: String| WebConfigError::Tls {
        what,
        file: pem.describe(inline),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&cert.read("certificate")?)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_err("certificate", cert, "cert", e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(
            "certificate",
            cert,
            "cert",
            "no PEM certificate in it".into(),
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(&key.read("key")?)
        .map_err(|e| tls_err("key", key, "key", e.to_string()))?;
    CertifiedKey::from_der(certs, der, provider).map_err(|e| {
        tls_err(
            "certificate/key pair",
            cert,
            "cert",
            format!("{e} (is key_file the key of this certificate?)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn end_entity(r: &ReloadingCert) -> Vec<u8> {
        let state = r.state.lock().unwrap();
        state.current.cert[0].to_vec()
    }

    /// Time-independent: `refresh` is called directly instead of waiting CHECK_EVERY.
    #[test]
    fn a_changed_pair_is_served_and_a_bad_one_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("ka-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (pem1, key1) = pair("first");
        std::fs::write(&c, &pem1).unwrap();
        std::fs::write(&k, &key1).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let r = ReloadingCert::new(Pem::File(c.clone()), Pem::File(k.clone()), provider).unwrap();
        let first = end_entity(&r);

        // The certificate replaced, the key not yet: the old pair stays.
        let (pem2, key2) = pair("second");
        std::fs::write(&c, &pem2).unwrap();
        r.refresh(&mut r.state.lock().unwrap());
        assert_eq!(
            end_entity(&r),
            first,
            "a mismatched pair must not be served"
        );

        // Now the key too (renamed in: a new inode): the new pair is served.
        std::fs::write(dir.join("tls.key.new"), &key2).unwrap();
        std::fs::rename(dir.join("tls.key.new"), &k).unwrap();
        r.refresh(&mut r.state.lock().unwrap());
        let second = end_entity(&r);
        assert_ne!(second, first, "the new pair must be served");
        let expected = CertificateDer::from_pem_slice(pem2.as_bytes()).unwrap();
        assert_eq!(second, expected.to_vec());

        // Garbage in the certificate file: the second pair stays.
        std::fs::write(&c, "not a certificate").unwrap();
        r.refresh(&mut r.state.lock().unwrap());
        assert_eq!(end_entity(&r), second);
        // A file deleted: the second pair stays too.
        std::fs::remove_file(&c).unwrap();
        r.refresh(&mut r.state.lock().unwrap());
        assert_eq!(end_entity(&r), second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_startup() {
        let (pem1, _) = pair("one");
        let (_, key2) = pair("two");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let err = ReloadingCert::new(Pem::Inline(pem1), Pem::Inline(key2), provider)
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate/key pair (inline cert)"), "{err}");
    }
}
