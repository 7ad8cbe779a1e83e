//! The development keys `loadtest keys` prints (run.sh and loadtest.sh source them) configure
//! events-svc and ingest: a variable they require and the keys file lacks would stop the local
//! stack.

use shared::config::Env;

#[test]
fn the_dev_keys_configure_events_svc() {
    let printed = loadtest::keys::dev_keys("demo-party").expect("dev keys");
    let mut vars: Vec<(String, String)> = printed
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    // What run.sh sets besides the keys file.
    vars.push((
        "DATABASE_URL".into(),
        "postgres://events_dev:events_dev@127.0.0.1:5432/ekklesia".into(),
    ));
    let settings = events_svc::Settings::from(Env::from_map(vars));
    let settings = settings.unwrap_or_else(|e| panic!("{e}"));
    let tenant = shared::domain::TenantId::parse("demo-party").unwrap();
    assert!(settings.token_signers.contains_key(&tenant));
    assert!(settings.token_slot_keys.current_for(&tenant).is_some());
}

#[test]
fn the_dev_keys_configure_ingest() {
    let printed = loadtest::keys::dev_keys("demo-party").expect("dev keys");
    let mut vars: Vec<(String, String)> = printed
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    vars.push((
        "DATABASE_URL".into(),
        "postgres://ingest_dev:ingest_dev@127.0.0.1:5432/ekklesia".into(),
    ));
    ingest::configuration::Settings::from(Env::from_map(vars)).unwrap_or_else(|e| panic!("{e}"));
}
