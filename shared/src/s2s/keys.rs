//! S2S keys: one secret per key id, each bound to a tenant; several per tenant for rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::Mac;

use super::HmacSha256;
use crate::domain::TenantId;

#[derive(Clone)]
pub struct S2sKey {
    pub id: String,
    pub tenant: TenantId,
    secret: Vec<u8>,
}

impl std::fmt::Debug for S2sKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl S2sKey {
    pub fn new(id: impl Into<String>, tenant: TenantId, secret: Vec<u8>) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("S2S secrets need at least 32 bytes".into());
        }
        Ok(Self {
            id: id.into(),
            tenant,
            secret,
        })
    }

    pub(super) fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }
}

/// All S2S keys a service knows. For signing, a tenant's *first* key is its current one.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<S2sKey>,
}

impl Keyring {
    pub fn new(keys: Vec<S2sKey>) -> Self {
        Self { keys }
    }

    /// Parses `S2S_KEYS`: `keyid:tenant:base64url-secret` entries separated by commas, the
    /// current key of each tenant first.
    /// Errors name the entry by position, never by a field: in an entry written in the wrong
    /// order the first field may be the secret.
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<S2sKey> = Vec::new();
        for (n, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let at = format!("S2S key entry {}", n + 1);
            let mut parts = entry.splitn(3, ':');
            let (Some(id), Some(tenant), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "{at}: each S2S key is keyid:tenant:base64url-secret"
                ));
            };
            let tenant = TenantId::parse(tenant).map_err(|e| format!("{at}: {e}"))?;
            let secret = B64
                .decode(secret.trim_end_matches('='))
                .map_err(|_| format!("{at}: the secret is not base64url"))?;
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("{at}: its key id is used by an earlier entry"));
            }
            keys.push(S2sKey::new(id, tenant, secret).map_err(|e| format!("{at}: {e}"))?);
        }
        Ok(Self { keys })
    }

    pub fn current_for(&self, tenant: &TenantId) -> Option<&S2sKey> {
        self.keys.iter().find(|k| &k.tenant == tenant)
    }

    pub fn by_id(&self, id: &str) -> Option<&S2sKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}
