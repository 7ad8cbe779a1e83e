//! Generated keys for one test, with the environment strings the services read.

use shared::domain::TenantId;
use shared::receipt::ReceiptKey;
use shared::s2s::{Keyring, S2sKey};
use shared::token::{encode_public_key, TokenSigner};
use shared::vote_keys::VoteKeys;

/// Keys for one test: a token signer per tenant, the receipt key, S2S, token slot and audit
/// keys, with the environment strings the services read.
pub struct TestKeys {
    pub signers: Vec<TokenSigner>,
    pub receipt_key_b64: String,
    /// `VOTE_KEYS` for ingest and the worker.
    pub vote_keys_config: String,
    pub s2s: Keyring,
    pub s2s_config: String,
    /// events-svc's `TOKEN_SLOT_KEYS`: one slot secret per tenant.
    pub slot_keys_config: String,
    /// `AUDIT_KEY` for ingest and events-svc (and the audit and queue-mode CLIs).
    pub audit_key_b64: String,
}

impl TestKeys {
    pub fn new(tenants: &[&str]) -> Self {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signers: Vec<TokenSigner> = tenants
            .iter()
            .map(|t| TokenSigner::generate(format!("{t}-k1"), TenantId::parse(t).expect("tenant")))
            .collect();
        let mut s2s_entries = Vec::new();
        let mut s2s_keys = Vec::new();
        for t in tenants {
            let secret: [u8; 32] = rand::random();
            s2s_entries.push(format!("{t}-s2s:{t}:{}", b64.encode(secret)));
            s2s_keys.push(
                S2sKey::new(
                    format!("{t}-s2s"),
                    TenantId::parse(t).expect("tenant"),
                    secret.to_vec(),
                )
                .expect("key"),
            );
        }
        let receipt: [u8; 32] = rand::random();
        let slot_keys_config = tenants
            .iter()
            .map(|t| format!("{t}-slots:{t}:{}", b64.encode(rand::random::<[u8; 32]>())))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            signers,
            receipt_key_b64: b64.encode(receipt),
            vote_keys_config: VoteKeys::generate_config("test-v1"),
            s2s: Keyring::new(s2s_keys),
            s2s_config: s2s_entries.join(","),
            slot_keys_config,
            audit_key_b64: shared::audit::AuditKey::generate_base64(),
        }
    }

    pub fn audit_key(&self) -> shared::audit::AuditKey {
        shared::audit::AuditKey::from_base64(&self.audit_key_b64).expect("audit key")
    }

    pub fn public_keys_config(&self) -> String {
        self.signers
            .iter()
            .map(|s| {
                format!(
                    "{}:{}:{}",
                    s.kid(),
                    s.tenant(),
                    encode_public_key(&s.verifying_key())
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// events-svc's `VOTING_TOKEN_SIGNING_KEYS`: every tenant's signing key.
    pub fn signing_keys_config(&self) -> String {
        self.signers
            .iter()
            .map(|s| format!("{}:{}:{}", s.kid(), s.tenant(), s.seed()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn vote_keys(&self) -> VoteKeys {
        VoteKeys::from_config(&self.vote_keys_config).expect("vote keys")
    }

    pub fn receipt_key(&self) -> ReceiptKey {
        ReceiptKey::from_base64(&self.receipt_key_b64).expect("receipt key")
    }

    pub fn signer(&self, tenant: &str) -> &TokenSigner {
        self.signers
            .iter()
            .find(|s| s.tenant().as_str() == tenant)
            .expect("signer for tenant")
    }
}
