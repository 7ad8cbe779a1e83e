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
    pub fn from_config(raw: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.splitn(3, ':');
            let (Some(id), Some(tenant), Some(secret)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err("each S2S key is keyid:tenant:base64url-secret".into());
            };
            let tenant = TenantId::parse(tenant).map_err(|e| format!("S2S key {id}: {e}"))?;
            let secret = B64
                .decode(secret.trim_end_matches('='))
                .map_err(|_| format!("S2S key {id}: secret is not base64url"))?;
            keys.push(S2sKey::new(id, tenant, secret).map_err(|e| format!("S2S key {id}: {e}"))?);
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
