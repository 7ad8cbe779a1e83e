//! Development keys for the local stack, printed as environment assignments.

use std::time::Duration;

use base64::Engine;
use shared::domain::TenantId;
use shared::token::{encode_public_key, TokenSigner};

/// Fresh keys for `tenant`: voting-token keys (public and signing), S2S, receipt, vote and
/// session keys, events-svc's token slot key and the audit log's key. Secrets: write them to a file only the owner
/// can read (run.sh does, `umask 077`).
pub fn dev_keys(tenant: &str) -> anyhow::Result<String> {
    let tenant = TenantId::parse(tenant)?;
    let signer = TokenSigner::generate(format!("{tenant}-dev-1"), tenant.clone());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let s2s: [u8; 32] = rand::random();
    let receipt: [u8; 32] = rand::random();
    let slots: [u8; 32] = rand::random();
    let kid = signer.kid().to_owned();
    let session = shared::session::SessionSigner::generate(
        "members-dev-1",
        String::new(),
        Duration::from_secs(1),
    );
    Ok(format!(
        "VOTING_TOKEN_PUBLIC_KEYS={kid}:{tenant}:{}\n\
         VOTING_TOKEN_SIGNING_KEYS={kid}:{tenant}:{}\n\
         S2S_KEYS={tenant}-s2s-1:{tenant}:{}\n\
         RECEIPT_KEY={}\n\
         VOTE_KEYS={}\n\
         SESSION_SIGNING_KEYS={}\n\
         DEMO_TENANT={tenant}\n\
         TOKEN_SLOT_KEYS={tenant}-slots-1:{tenant}:{}\n\
         AUDIT_KEY={}\n",
        encode_public_key(&signer.verifying_key()),
        signer.seed(),
        b64.encode(s2s),
        b64.encode(receipt),
        shared::vote_keys::VoteKeys::generate_config("dev-1"),
        session.config_entry(),
        b64.encode(slots),
        shared::audit::AuditKey::generate_base64(),
    ))
}
