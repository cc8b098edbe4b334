//! The token file (feature `token-file`): JSON, written whole and atomically with mode 0600,
//! re-read when its modification time or length changes, so `wattle token revoke` (or `wattle
//! gateway token revoke`) takes effect on the service's next request.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{TokenError, TokenFile, TokenIndex, TokenRecord, TokenRefusal};
use crate::limits::TOKEN_RECORDS_MAX;

/// A service's token file: issue, revoke, list (the CLI, billing's operator API), and check
/// (every request).
#[derive(Debug)]
pub struct TokenStore<R> {
    path: PathBuf,
    cache: Mutex<Cache<R>>,
}

#[derive(Debug)]
struct Cache<R> {
    stamp: Option<(SystemTime, u64)>,
    index: TokenIndex<R>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl<R: Clone + Serialize + DeserializeOwned> TokenStore<R> {
    /// Opens the token file at `path` (created empty, mode 0600, if missing).
    pub fn open(path: &Path) -> Result<TokenStore<R>, TokenError> {
        let store = TokenStore {
            path: path.to_path_buf(),
            cache: Mutex::new(Cache { stamp: None, index: TokenIndex::default() }),
        };
        if !path.exists() {
            store.write(&TokenFile::default())?;
        }
        store.refresh()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<TokenFile<R>, TokenError> {
        let error = |reason: String| TokenError::Read { path: self.path.display().to_string(), reason };
        let bytes = std::fs::read(&self.path).map_err(|e| error(e.to_string()))?;
        let file: TokenFile<R> = serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?;
        if file.tokens.len() > TOKEN_RECORDS_MAX {
            return Err(error(format!("{} tokens, more than {TOKEN_RECORDS_MAX}", file.tokens.len())));
        }
        Ok(file)
    }

    /// Writes the whole file atomically (a temporary file renamed over it), mode 0600.
    fn write(&self, file: &TokenFile<R>) -> Result<(), TokenError> {
        let error = |reason: String| TokenError::Write { path: self.path.display().to_string(), reason };
        let json = serde_json::to_vec_pretty(file).map_err(|e| error(e.to_string()))?;
        let temporary = self.path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(|e| error(e.to_string()))?;
            out.write_all(&json).and_then(|()| out.sync_all()).map_err(|e| error(e.to_string()))?;
        }
        std::fs::rename(&temporary, &self.path).map_err(|e| error(e.to_string()))
    }

    /// Re-reads the file if it changed since the last read.
    fn refresh(&self) -> Result<(), TokenError> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| TokenError::Read { path: self.path.display().to_string(), reason: e.to_string() })?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        let mut cache = self.cache.lock().expect("token cache lock is never poisoned");
        if cache.stamp == Some(stamp) {
            return Ok(());
        }
        cache.index = TokenIndex::from(self.read()?);
        cache.stamp = Some(stamp);
        Ok(())
    }

    /// The index as the file now reads; a file that cannot be read keeps the tokens read before
    /// (logged), so a botched edit neither admits nor locks out anyone new.
    fn with_index<T>(&self, check: impl FnOnce(&TokenIndex<R>) -> T) -> T {
        if let Err(error) = self.refresh() {
            tracing::error!(%error, "the token file could not be read; keeping the tokens read before");
        }
        check(&self.cache.lock().expect("token cache lock is never poisoned").index)
    }

    /// Issues a token for `role`: returns the token (shown once, never stored) and its record.
    pub fn issue(&self, role: R, label: &str) -> Result<(String, TokenRecord<R>), TokenError> {
        let mut file = self.read()?;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let issued = file.issue(role, label, id, secret, now_rfc3339())?;
        self.write(&file)?;
        self.refresh()?;
        Ok(issued)
    }

    /// Revokes the token `id` (revoking a revoked token keeps its first revocation time).
    pub fn revoke(&self, id: &str) -> Result<TokenRecord<R>, TokenError> {
        let mut file = self.read()?;
        let record = file.revoke(id, now_rfc3339())?;
        self.write(&file)?;
        self.refresh()?;
        Ok(record)
    }

    /// Every token's record, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord<R>>, TokenError> {
        Ok(self.read()?.tokens)
    }

    /// The record of a presented token, checked against its stored hash and revocation.
    pub fn lookup(&self, token: &str) -> Result<TokenRecord<R>, TokenRefusal> {
        self.with_index(|index| index.check(token).cloned())
    }

    /// Whether the token `id`, admitted earlier, is still known and not revoked (billing's live
    /// streams re-check their caller with this on every event).
    pub fn still_valid(&self, id: &str) -> Result<(), TokenRefusal> {
        self.with_index(|index| index.still_valid(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
    #[serde(rename_all = "snake_case", tag = "role")]
    enum Role {
        Operator,
    }

    #[test]
    fn a_revocation_through_another_store_takes_effect_and_the_file_holds_no_token() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let store = TokenStore::<Role>::open(&path).expect("open");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "created 0600");
        let (token, record) = store.issue(Role::Operator, "ops").expect("issue");
        let (other, _) = store.issue(Role::Operator, "ops 2").expect("issue");
        let file = std::fs::read_to_string(&path).expect("read");
        assert!(!file.contains(&token) && !file.contains(&other), "no token reaches the file:\n{file}");
        assert!(file.contains(&record.sha256));
        assert_eq!(store.lookup(&token).expect("admitted"), record);
        // Revoked through a second store on the same file (as the CLI does).
        TokenStore::<Role>::open(&path).expect("open again").revoke(&record.id).expect("revoke");
        assert_eq!(store.lookup(&token).map_err(|refusal| refusal.code()), Err("revoked_token"));
        assert_eq!(store.still_valid(&record.id).map_err(|refusal| refusal.code()), Err("revoked_token"));
        assert!(store.lookup(&other).is_ok(), "the other token stands");
        assert_eq!(store.list().expect("list").len(), 2);
        // A file that cannot be parsed keeps the tokens read before.
        std::fs::write(&path, "{ not json").expect("spoil");
        assert!(store.lookup(&other).is_ok());
        assert!(TokenStore::<Role>::open(&path).is_err(), "a new store refuses a spoiled file");
    }
}
