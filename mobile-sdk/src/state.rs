//! The enrolled device's state (device id, server URL, pinned server key, key alias) and the
//! [`StateStore`] interface that persists it: implemented by the app (SharedPreferences,
//! UserDefaults, a file) or by the ready-made [`FileStateStore`] / [`MemoryStateStore`].
//!
//! The state is one JSON document, written whole. It holds no secret (the private key stays in
//! the key store) but its integrity matters: it contains the pinned server key. Keep it in
//! app-private storage.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use assent_protocol::{EcPublicJwk, PushProvider};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, StorageError};

/// Persistence for the SDK's device state, one opaque JSON string.
///
/// `save` must replace the whole document atomically (write then rename, or one
/// `SharedPreferences.commit()`): a torn write could lose the pinned key. Methods may be called
/// from background threads.
#[uniffi::export(rust, foreign)]
pub trait StateStore: Send + Sync {
    /// The saved document, or `None` when nothing was saved (not enrolled).
    fn load(&self) -> Result<Option<String>, StorageError>;
    /// Replaces the saved document.
    fn save(&self, state: String) -> Result<(), StorageError>;
    /// Deletes the saved document. Clearing an empty store is not an error.
    fn clear(&self) -> Result<(), StorageError>;
}

/// Current version of the state document.
pub(crate) const STATE_VERSION: u32 = 1;

/// The device state document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceState {
    /// Document version, [`STATE_VERSION`].
    pub version: u32,
    /// Base URL of the server, validated (https, or http to loopback).
    pub server_url: String,
    /// This device's id (`dev_...`), the `kid` of its proofs and responses.
    pub device_id: String,
    /// The user the device belongs to (challenges must have it as `sub`).
    pub user_id: String,
    /// The user's display name.
    pub user_display_name: String,
    /// Alias of the device key in the key store.
    pub key_alias: String,
    /// The device public key, to check the key store's signatures before sending them.
    pub device_key: EcPublicJwk,
    /// The server signing key pinned at enrollment; its `kid` is its RFC 7638 thumbprint.
    pub pinned_server_key: EcPublicJwk,
    /// Push registration last sent to the server.
    pub push_provider: PushProvider,
    /// Push token last sent to the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_token: Option<String>,
    /// Whether the key store reported the device key hardware-backed at enrollment.
    pub hardware_backed: bool,
}

impl DeviceState {
    /// The pinned key's thumbprint.
    pub fn pinned_kid(&self) -> String {
        self.pinned_server_key.thumbprint()
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::CorruptState(e.to_string()))
    }

    pub fn from_json(json: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_str(json).map_err(|e| Error::CorruptState(e.to_string()))?;
        if version.version != STATE_VERSION {
            return Err(Error::CorruptState(format!(
                "state version {} is not supported (expected {STATE_VERSION})",
                version.version
            )));
        }
        serde_json::from_str(json).map_err(|e| Error::CorruptState(e.to_string()))
    }
}

/// A [`StateStore`] writing the document to one file, atomically (temporary file in the same
/// directory, then rename) and, on Unix, readable only by its owner.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    /// A store at `path` (the file need not exist yet; its directory must).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStateStore { path: path.into() }
    }

    /// The file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn storage_error(path: &Path, action: &str, e: &io::Error) -> StorageError {
    StorageError::Failed { detail: format!("{action} {}: {e}", path.display()) }
}

/// Writes `contents` to `path` atomically: a sibling temporary file, synced, then renamed over
/// it. Unix permissions are 0600 since the file may hold keys (the reference app's does).
pub fn write_file_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let file_name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<String>, StorageError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_error(&self.path, "reading", &e)),
        }
    }

    fn save(&self, state: String) -> Result<(), StorageError> {
        write_file_atomically(&self.path, state.as_bytes()).map_err(|e| storage_error(&self.path, "writing", &e))
    }

    fn clear(&self) -> Result<(), StorageError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(storage_error(&self.path, "deleting", &e)),
        }
    }
}

/// A [`StateStore`] in memory: state is lost with the process. For tests.
#[derive(Default)]
pub struct MemoryStateStore {
    state: Mutex<Option<String>>,
}

impl fmt::Debug for MemoryStateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStateStore").finish_non_exhaustive()
    }
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StateStore for MemoryStateStore {
    fn load(&self) -> Result<Option<String>, StorageError> {
        Ok(self.slot().clone())
    }

    fn save(&self, state: String) -> Result<(), StorageError> {
        *self.slot() = Some(state);
        Ok(())
    }

    fn clear(&self) -> Result<(), StorageError> {
        *self.slot() = None;
        Ok(())
    }
}

/// A [`FileStateStore`] at `path`, for desktop tools, tests and Python.
#[uniffi::export]
pub fn file_state_store(path: String) -> Arc<dyn StateStore> {
    Arc::new(FileStateStore::new(path))
}

/// A [`MemoryStateStore`] (state lost with the process), for tests.
#[uniffi::export]
pub fn memory_state_store() -> Arc<dyn StateStore> {
    Arc::new(MemoryStateStore::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use assent_protocol::jws;

    fn sample() -> DeviceState {
        let device = jws::generate_signing_key().unwrap();
        let server = jws::generate_signing_key().unwrap();
        let pinned = EcPublicJwk::from_verifying_key(server.verifying_key());
        DeviceState {
            version: STATE_VERSION,
            server_url: "https://assent.example.com".into(),
            device_id: "dev_1".into(),
            user_id: "alice".into(),
            user_display_name: "Alice".into(),
            key_alias: "assent-device-x".into(),
            device_key: EcPublicJwk::from_verifying_key(device.verifying_key()),
            pinned_server_key: pinned.clone().with_kid(pinned.thumbprint()),
            push_provider: PushProvider::None,
            push_token: None,
            hardware_backed: false,
        }
    }

    #[test]
    fn state_round_trips_and_refuses_other_versions() {
        let state = sample();
        let json = state.to_json().unwrap();
        assert_eq!(DeviceState::from_json(&json).unwrap(), state);
        assert_eq!(state.pinned_kid(), state.pinned_server_key.kid().unwrap());
        let future = json.replace("\"version\":1", "\"version\":2");
        assert!(matches!(DeviceState::from_json(&future), Err(Error::CorruptState(_))));
        assert!(matches!(DeviceState::from_json("{}"), Err(Error::CorruptState(_))));
    }

    #[test]
    fn file_store_saves_atomically_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path().join("state.json"));
        assert_eq!(store.load().unwrap(), None);
        store.save("{\"a\":1}".into()).unwrap();
        store.save("{\"a\":2}".into()).unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some("{\"a\":2}"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!dir.path().join("state.json.tmp").exists());
        store.clear().unwrap();
        store.clear().unwrap();
        assert_eq!(store.load().unwrap(), None);
    }
}
