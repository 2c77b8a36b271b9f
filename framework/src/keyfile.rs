//! Secret key files: created once with mode 0600, refused when readable by
//! others, never logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Error, Result};

/// Read the 32-byte secret (hex) at `path`, creating it from the OS random
/// source on first use. Returns the secret and whether it was just created.
pub fn load_or_create(path: &Path) -> Result<([u8; 32], bool)> {
    if path.exists() {
        let text = read_private(path)?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{} does not hold a 32-byte hex secret",
                    path.display()
                ))
            })?;
        return Ok((bytes, false));
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| Error::Invalid(format!("OS random source: {e}")))?;
    write_secret(path, &hex::encode(secret))?;
    Ok((secret, true))
}

/// Read a secret file, refused when group or others may read it.
pub fn read_private(path: &Path) -> Result<String> {
    String::from_utf8(read_private_bytes(path)?)
        .map_err(|_| Error::Invalid(format!("{} is not UTF-8 text", path.display())))
}

/// [`read_private`] for a secret that may be binary (an LND macaroon).
pub fn read_private_bytes(path: &Path) -> Result<Vec<u8>> {
    let mode = fs::metadata(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Invalid(format!(
            "{} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Write a secret file with mode 0600, replacing any old one.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
