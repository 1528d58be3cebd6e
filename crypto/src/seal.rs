//! age envelopes (the format Debian's `age` tool reads and writes).
//!
//! A storage location with `--encrypt-to` keeps every archive as an age file. The shape:
//!
//! - each backup gets its own X25519 key pair ([`KeyPair`]); its archives are encrypted to the
//!   pair's public recipient, so a worker backs up with a public key only;
//! - the pair's identity is kept beside the manifest as a **key file**: an age identity file
//!   sealed to the location's recipients ([`KeyPair::sealed_to`]). Rotating the location's
//!   recipients rewrites these small files, never an archive;
//! - restoring opens the key file with the worker's identities ([`Identities::open_key_file`])
//!   and decrypts the archives with what it holds ([`Identities::decrypt`]).
//!
//! By hand: `age -d -i LOCATION.key key.age > backup.key`, then
//! `age -d -i backup.key ARCHIVE.age | zstd -d | tar -x`.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519;

use crate::CryptoError;

/// Largest key file read (a key file holds one identity: about 100 bytes, sealed to a few
/// recipients).
pub const KEY_FILE_LIMIT: u64 = 64 << 10;

/// Whether `bytes` can be a key file: an age file no larger than [`KEY_FILE_LIMIT`] (a cheap
/// check of what a client or an import hands in; opening it is the real one).
pub fn is_key_file(bytes: &[u8]) -> bool {
    bytes.starts_with(b"age-encryption.org/v1\n") && bytes.len() as u64 <= KEY_FILE_LIMIT
}

/// Parses one age X25519 recipient (`age1…`).
pub fn parse_recipient(text: &str) -> Result<x25519::Recipient, CryptoError> {
    x25519::Recipient::from_str(text.trim()).map_err(|e| {
        CryptoError::BadKey(format!(
            "{:?} is not an age X25519 recipient (age1…; `age-keygen -y KEYFILE` prints one): {e}",
            text.trim()
        ))
    })
}

/// Checks a list of recipients: at least one, each one parsing, none twice.
pub fn check_recipients(list: &[String]) -> Result<(), CryptoError> {
    if list.is_empty() {
        return Err(CryptoError::BadKey(
            "encryption needs at least one recipient".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in list {
        parse_recipient(r)?;
        if !seen.insert(r.trim()) {
            return Err(CryptoError::BadKey(format!("recipient {r} is given twice")));
        }
    }
    Ok(())
}

/// Encrypts `plaintext` to every recipient in `recipients` (small things: key files).
pub fn seal(recipients: &[String], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CryptoError::Envelope(format!("age: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| CryptoError::Envelope(format!("age: {e}")))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|e| CryptoError::Envelope(format!("age: {e}")))?;
    Ok(out)
}

/// A writer that encrypts everything written to it to `recipient` and writes the age file into
/// `out`. [`StreamWriter::finish`](age::stream::StreamWriter::finish) must be called at the end.
pub fn encrypt_to<W: Write>(
    recipient: &str,
    out: W,
) -> Result<age::stream::StreamWriter<W>, CryptoError> {
    let recipient = parse_recipient(recipient)?;
    age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| CryptoError::Envelope(format!("age: {e}")))?
        .wrap_output(out)
        .map_err(|e| CryptoError::Envelope(format!("age: {e}")))
}

/// A key pair made for one backup (or one team's repository in a location).
pub struct KeyPair {
    identity: x25519::Identity,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    pub fn generate() -> Self {
        Self {
            identity: x25519::Identity::generate(),
        }
    }

    /// The public half (`age1…`): what archives are encrypted to.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// This pair's identity, to open what was encrypted to [`recipient`](Self::recipient).
    pub fn identities(&self) -> Identities {
        Identities {
            list: vec![Box::new(self.identity.clone())],
        }
    }

    /// The key file: this pair's identity, as an age identity file, sealed to `recipients`.
    pub fn sealed_to(&self, recipients: &[String]) -> Result<Vec<u8>, CryptoError> {
        let text = format!(
            "# ferry key file: public key {}\n{}\n",
            self.recipient(),
            self.identity.to_string().expose_secret()
        );
        seal(recipients, text.as_bytes())
    }
}

/// Identities that open age files: a worker's (`--identity-file`), an operator's, or the one a
/// key file holds.
#[derive(Default)]
pub struct Identities {
    list: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys)", self.list.len())
    }
}

impl Identities {
    /// Whether there is none at all (a worker started without `--identity-file`).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Reads age identity files (`age-keygen` output: `AGE-SECRET-KEY-1…` lines, comments).
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, CryptoError> {
        let mut list = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let file = std::fs::File::open(path).map_err(|e| {
                CryptoError::BadKey(format!("identity file {}: {e}", path.display()))
            })?;
            list.extend(parse(BufReader::new(file), &path.display().to_string())?);
        }
        Ok(Self { list })
    }

    /// Identities from the text of an identity file.
    pub fn from_text(text: &[u8], what: &str) -> Result<Self, CryptoError> {
        Ok(Self {
            list: parse(text, what)?,
        })
    }

    /// Decrypts a small age file (a key file), `what` naming it in errors.
    pub fn open(&self, sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        self.decrypt(sealed, what)?
            .take(KEY_FILE_LIMIT)
            .read_to_end(&mut out)
            .map_err(|e| CryptoError::Envelope(format!("{what}: {e}")))?;
        Ok(out)
    }

    /// The identity a key file holds (see [`KeyPair::sealed_to`]).
    pub fn open_key_file(&self, sealed: &[u8], what: &str) -> Result<Identities, CryptoError> {
        let text = self.open(sealed, what)?;
        Identities::from_text(&text, what)
    }

    /// A reader of the plaintext of the age file `input`; `what` names it in errors.
    pub fn decrypt<R: Read>(
        &self,
        input: R,
        what: &str,
    ) -> Result<age::stream::StreamReader<R>, CryptoError> {
        if self.list.is_empty() {
            return Err(CryptoError::NoIdentity(format!(
                "{what} is encrypted and no identity was given to open it"
            )));
        }
        let decryptor = age::Decryptor::new(input).map_err(|e| {
            CryptoError::Envelope(format!("{what} is not a readable age file: {e}"))
        })?;
        decryptor
            .decrypt(self.list.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => CryptoError::NoIdentity(format!(
                    "none of the {} identities given opens {what}",
                    self.list.len()
                )),
                other => CryptoError::Envelope(format!("{what}: {other}")),
            })
    }
}

fn parse(
    text: impl std::io::BufRead,
    what: &str,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, CryptoError> {
    let bad = |e: String| CryptoError::BadKey(format!("{what}: not an age identity file ({e})"));
    let list = age::IdentityFile::from_buffer(text)
        .map_err(|e| bad(e.to_string()))?
        .into_identities()
        .map_err(|e| bad(e.to_string()))?;
    if list.is_empty() {
        return Err(bad("it holds no identity".into()));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(ids: &Identities, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        ids.decrypt(sealed, "test")?.read_to_end(&mut out).unwrap();
        Ok(out)
    }

    #[test]
    fn a_backup_key_file_opens_with_a_location_identity_and_decrypts_its_archives() {
        let location = KeyPair::generate();
        let location_ids = Identities::from_text(
            location.identity.to_string().expose_secret().as_bytes(),
            "location key",
        )
        .unwrap();
        let backup = KeyPair::generate();
        let key_file = backup.sealed_to(&[location.recipient()]).unwrap();
        // An archive, streamed.
        let mut archive = Vec::new();
        let mut w = encrypt_to(&backup.recipient(), &mut archive).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        assert!(archive.starts_with(b"age-encryption.org/v1\n"));
        let backup_ids = location_ids.open_key_file(&key_file, "key.age").unwrap();
        assert_eq!(roundtrip(&backup_ids, &archive).unwrap(), data);
        // The location key itself does not open the archive; no key at all says so.
        let e = roundtrip(&location_ids, &archive).unwrap_err();
        assert!(matches!(e, CryptoError::NoIdentity(_)), "{e}");
        let e = roundtrip(&Identities::default(), &archive).unwrap_err();
        assert!(e.to_string().contains("no identity was given"), "{e}");
    }

    #[test]
    fn a_damaged_archive_fails_to_decrypt() {
        let pair = KeyPair::generate();
        let ids = Identities::from_text(pair.identity.to_string().expose_secret().as_bytes(), "k")
            .unwrap();
        let mut sealed = seal(&[pair.recipient()], &[7u8; 100_000]).unwrap();
        let n = sealed.len();
        sealed[n - 10] ^= 1;
        let mut out = Vec::new();
        assert!(
            ids.decrypt(&sealed[..], "x")
                .unwrap()
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn recipients_are_checked() {
        let r = KeyPair::generate().recipient();
        assert!(check_recipients(std::slice::from_ref(&r)).is_ok());
        assert!(check_recipients(&[]).is_err());
        assert!(check_recipients(&[r.clone(), r.clone()]).is_err());
        let e = check_recipients(&["age1nope".into()]).unwrap_err();
        assert!(e.to_string().contains("not an age X25519 recipient"), "{e}");
        assert!(Identities::from_text(b"# nothing\n", "f").is_err());
        assert!(format!("{:?}", KeyPair::generate()).contains("age1"));
        assert!(!format!("{:?}", KeyPair::generate()).contains("AGE-SECRET"));
    }
}
