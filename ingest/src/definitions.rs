//! Election definitions, cached so a queued vote needs no database round trip.
//!
//! A definition enters the cache on first use (one query, then shared) or when events-svc
//! pushes it to this instance; a background task re-reads every cached definition every
//! `DEFINITION_REFRESH_MS`, so a close pushed to another instance is seen here within that
//! interval. A vote accepted in that gap is rejected by the worker (`election_closed`) because
//! it was accepted after `closed_at`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shared::db::ElectionRow;
use shared::domain::{ElectionDefinition, ElectionKind, ElectionStatus, TenantId};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Default)]
pub struct Definitions {
    cache: Arc<RwLock<HashMap<Uuid, Arc<ElectionDefinition>>>>,
    /// One loading lock per election being loaded: a burst of first votes for a new election
    /// makes one query, and a slow load of one election holds up no other.
    loading: Arc<std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>>,
}

async fn load(
    pool: &PgPool,
    tenant: &TenantId,
    ids: &[Uuid],
) -> Result<Vec<ElectionDefinition>, sqlx::Error> {
    let mut tx = shared::db::begin_for_tenant(pool, tenant).await?;
    let rows = sqlx::query_as!(
        ElectionRow,
        r#"SELECT org_id, id, kind AS "kind: ElectionKind", options, max_choices,
                  status AS "status: ElectionStatus", opens_at, closes_at, closed_at, sealed_at
             FROM elections.elections WHERE id = ANY($1)"#,
        ids
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .filter_map(ElectionRow::usable_definition)
        .collect())
}

impl Definitions {
    pub fn cached(&self, id: Uuid) -> Option<Arc<ElectionDefinition>> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn put(&self, definition: ElectionDefinition) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(definition.id(), Arc::new(definition));
    }

    /// The definition of `id` in `tenant`, from the cache or, once, from the database.
    /// `Ok(None)`: no such election for this tenant.
    /// A definition read from the database, unless the cache already holds a later status: a
    /// refresh that read before a pushed open (or close) must not set the election back until
    /// the next refresh (a status only moves forward).
    fn put_unless_behind(&self, definition: ElectionDefinition) {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let rank = |s: ElectionStatus| match s {
            ElectionStatus::Draft => 0,
            ElectionStatus::Open => 1,
            ElectionStatus::Closed => 2,
        };
        if let Some(cached) = cache.get(&definition.id()) {
            if rank(cached.status()) > rank(definition.status()) {
                return;
            }
        }
        cache.insert(definition.id(), Arc::new(definition));
    }

    pub async fn get(
        &self,
        pool: &PgPool,
        tenant: &TenantId,
        id: Uuid,
    ) -> Result<Option<Arc<ElectionDefinition>>, sqlx::Error> {
        if let Some(d) = self.cached(id) {
            return Ok((d.tenant() == tenant).then_some(d));
        }
        let lock = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let loaded = async {
            let _guard = lock.lock().await;
            if let Some(d) = self.cached(id) {
                return Ok((d.tenant() == tenant).then_some(d));
            }
            let found = load(pool, tenant, &[id]).await?.into_iter().next();
            Ok(found.map(|d| {
                self.put(d);
                self.cached(id).expect("just inserted")
            }))
        }
        .await;
        // The last one out forgets the lock (the map holds one entry per election in flight).
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            loading.remove(&id);
        }
        loaded
    }

    /// Re-reads every cached definition, tenant by tenant.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut by_tenant: BTreeMap<TenantId, Vec<Uuid>> = BTreeMap::new();
        for d in self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            by_tenant
                .entry(d.tenant().clone())
                .or_default()
                .push(d.id());
        }
        for (tenant, ids) in by_tenant {
            for d in load(pool, &tenant, &ids).await? {
                self.put_unless_behind(d);
            }
        }
        Ok(())
    }

    pub fn spawn_refresher(&self, pool: PgPool, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        shared::db::spawn_periodic(every, "refreshing election definitions", move || {
            let (this, pool) = (this.clone(), pool.clone());
            async move { this.refresh(&pool).await }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{ElectionFields, ElectionOption};

    fn definition(id: Uuid, status: ElectionStatus) -> ElectionDefinition {
        ElectionDefinition::new(ElectionFields {
            tenant: TenantId::parse("party-a").expect("tenant"),
            id,
            kind: ElectionKind::Single,
            options: vec![
                ElectionOption {
                    id: "yes".into(),
                    label: "Yes".into(),
                },
                ElectionOption {
                    id: "no".into(),
                    label: "No".into(),
                },
            ],
            max_choices: 1,
            status,
            opens_at: None,
            closes_at: None,
        })
        .expect("a valid election")
    }

    #[test]
    fn a_refresh_that_read_before_a_pushed_open_does_not_set_the_election_back_to_draft() {
        let definitions = Definitions::default();
        let id = Uuid::new_v4();
        definitions.put(definition(id, ElectionStatus::Open));
        definitions.put_unless_behind(definition(id, ElectionStatus::Draft));
        assert_eq!(
            definitions.cached(id).map(|d| d.status()),
            Some(ElectionStatus::Open)
        );
        definitions.put_unless_behind(definition(id, ElectionStatus::Closed));
        assert_eq!(
            definitions.cached(id).map(|d| d.status()),
            Some(ElectionStatus::Closed)
        );
    }
}
